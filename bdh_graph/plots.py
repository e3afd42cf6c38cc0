"""Figures of the graph analyses (bdh_graph.stats) and of activity over tokens: matplotlib, Agg, PNG files.

matplotlib is imported when a figure is drawn, not with this module. Each function writes one PNG to `path`
and returns `path`.
"""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_degree_distribution(path, samples: dict, title="degree distribution"):
    """Log-log CCDF P(K >= k) of each degree sample in {label: degrees}; writes a PNG to `path`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, deg in samples.items():
        k = np.sort(np.asarray(deg)[np.asarray(deg) > 0])
        if len(k) == 0:
            continue
        ccdf = 1.0 - np.arange(len(k)) / len(k)
        ax.loglog(k, ccdf, ".", ms=3, label=label)
    ax.set_xlabel("degree k"), ax.set_ylabel("P(K >= k)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7), ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_modularity(path, rows: list, title="Louvain modularity vs beta", paper=None):
    """Modularity (and baselines) against beta from `modularity_vs_beta` rows; writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    betas = [r["beta"] for r in rows]
    keys = ["modularity"] + sorted(
        {
            k
            for r in rows
            for k in r
            if k not in ("beta", "edges", "modularity", "communities") and not k.endswith("_edges")
        }
    )
    for k in keys:
        ys = [r.get(k) for r in rows]
        ax.plot(
            betas,
            [np.nan if y is None else y for y in ys],
            "o-" if k == "modularity" else "s--",
            ms=3,
            label="model" if k == "modularity" else k,
        )
    ax.set_xlabel("threshold beta"), ax.set_ylabel("modularity (best of 5 Louvain)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7), ax.grid(True, alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def _token_ticks(ax, labels, width_in):
    """Token labels on the x axis of an axes `width_in` inches wide, none overlapping: upright when they fit
    (a 7-point character is about 0.07 in), else turned 90 degrees and thinned to one per 0.14 in."""
    T = len(labels)
    longest = max((len(str(s)) for s in labels), default=1)
    upright = T * (0.07 * longest + 0.08) <= width_in
    step = 1 if upright else max(1, -(-T // max(1, int(width_in / 0.14))))
    ticks = list(range(0, T, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(labels[t]) for t in ticks], fontsize=7, rotation=0 if upright else 90)


def plot_raster(path, active, labels=None, title="activity raster", ylabel="neuron", clabel="activity |value|"):
    """Raster of a (T, n) activity array (non-zero = active, colour = its size, with a colour bar);
    `labels` names the T columns (tokens)."""
    plt = _plt()
    act = np.asarray(active)
    T, n = act.shape
    width = min(12, 3 + 0.3 * T)
    fig, ax = plt.subplots(figsize=(width, 3.8))
    t, i = np.nonzero(act)
    sc = ax.scatter(t, i, s=6, c=np.abs(act[t, i]), cmap="viridis", marker="s")
    ax.set_xlim(-0.5, T - 0.5), ax.set_ylim(-0.5, n - 0.5)
    if labels is not None:
        _token_ticks(ax, labels, width - 1.5)
    fig.colorbar(sc, ax=ax, label=clabel, pad=0.01)
    ax.set_xlabel("token"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_series(path, series: dict, labels=None, title="", xlabel="token", ylabel="value"):
    """Line plot of {label: (T,) values}, the legend outside the axes (right); writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    for k, v in series.items():
        ax.plot(np.arange(len(v)), v, ".-", ms=3, label=str(k))
    if labels is not None:
        _token_ticks(ax, labels, 5.2)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_bars(path, groups: dict, categories, title="", ylabel=""):
    """Grouped bars: {series label: values per category}; writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    k = max(1, len(groups))
    w = 0.8 / k
    for j, (lab, vals) in enumerate(groups.items()):
        ax.bar(np.arange(len(categories)) + (j - (k - 1) / 2) * w, vals, w, label=lab)
    ax.set_xticks(range(len(categories))), ax.set_xticklabels(categories)
    ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10), ax.legend(fontsize=7), ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path
