"""Draw docs/figures/distributed.png: how the circuit compile's graph is cut over P = 3 ranks, and what crosses.

    python docs/figures/make_distributed.py

The blocks are the ones `bdh_graph.comm.block` gives (n = 16 neurons here so that they can be drawn: uneven
blocks 6, 6, 4); the
exchange drawn is the one the simulator performs (docs/distributed.md).
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bdh_graph.comm import block  # noqa: E402

N, P, HUBS = 16, 3, 6
COLORS = ["#4C72B0", "#DD8452", "#55A868"]


def main(out=None):
    out = out or os.path.join(os.path.dirname(__file__), "distributed.png")
    fig, ax = plt.subplots(figsize=(11, 5.6))
    ax.set_xlim(-0.5, 12.3)
    ax.set_ylim(-1.1, 6.2)
    ax.axis("off")
    w = 3.6
    for r in range(P):
        x0 = r * (w + 0.6)
        lo, hi = block(N, P, r)
        ax.add_patch(Rectangle((x0 - 0.15, -0.2), w + 0.3, 5.3, fill=False, ls="--", lw=1, ec="grey"))
        ax.text(x0 + w / 2, 4.85, f"rank {r}", ha="center", fontsize=12, weight="bold")
        # the neuron block: only its own neurons, in RoPE pairs
        k = hi - lo
        for j in range(k):
            i = lo + j
            cx = x0 + (j + 0.5) * w / max(k, 1)
            ax.add_patch(plt.Circle((cx, 0.6), 0.16, color=COLORS[r]))
            ax.text(cx, 0.15, str(i), ha="center", fontsize=7)
            if i % 2 == 0:
                ax.plot([cx, cx + w / max(k, 1)], [0.95, 0.95], color=COLORS[r], lw=2)
        ax.text(x0 + w / 2, -0.55, f"neurons {lo}..{hi - 1} (split, pairs kept)", ha="center", fontsize=9)
        # the replicated hubs: every rank holds all of them
        for h in range(HUBS):
            cx = x0 + (h + 0.5) * w / HUBS
            ax.add_patch(plt.Circle((cx, 3.4), 0.16, color="#8172B3"))
        ax.text(x0 + w / 2, 3.85, "hubs (2d, replicated)", ha="center", fontsize=9)
        # groups and their owners
        ax.add_patch(
            FancyArrowPatch(
                (x0 + 0.6, 1.0), (x0 + 0.6, 3.15), arrowstyle="-|>", mutation_scale=12, color=COLORS[r], lw=1.5
            )
        )
        ax.text(x0 + 0.72, 2.05, "E', sigma_l\n(source owns:\npartial sums)", fontsize=7.5, color=COLORS[r])
        ax.add_patch(
            FancyArrowPatch(
                (x0 + w - 0.6, 3.15), (x0 + w - 0.6, 1.0), arrowstyle="-|>", mutation_scale=12, color="#8172B3", lw=1.5
            )
        )
        ax.text(x0 + w - 1.75, 2.05, "De, Di, Gy\n(target owns:\nno traffic)", fontsize=7.5, color="#8172B3")
    # the Allreduce across ranks
    ax.add_patch(
        FancyArrowPatch(
            (0.2, 2.75),
            (3 * (w + 0.6) - 0.8, 2.75),
            arrowstyle="<|-|>",
            mutation_scale=14,
            color="black",
            lw=1.2,
            connectionstyle="arc3,rad=0",
        )
    )
    ax.text(
        6.0,
        2.9,
        "Allreduce: hub inputs = sum over ranks",
        ha="center",
        fontsize=9,
        bbox=dict(fc="white", ec="none", pad=1),
    )
    ax.text(
        6.0,
        5.55,
        "per communication sub-round: one Allreduce of the partial sums into the replicated hubs "
        "(O(d) numbers);\nneuron -> neuron groups (dense compile): one Allgatherv of the active (index, value) "
        "pairs; silent neurons send nothing",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
