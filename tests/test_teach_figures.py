"""The report figures a student reads: token labels that never overlap, a colour bar on the raster, the sigma
legend outside the lines (checked on the rendered figure, not on the code)."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bdh_graph import plots as GP  # noqa: E402


@pytest.mark.parametrize("T", [10, 40, 200])
def test_token_labels_never_overlap(T):
    """However many tokens, the drawn x tick labels do not overlap (thinned and turned when they would)."""
    labels = [f"{chr(97 + i % 8)}={i % 8}" for i in range(T)]
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    ax.plot(range(T), np.zeros(T))
    GP._token_ticks(ax, labels, 5.0)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
    assert len(boxes) >= min(T, 10)
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)


def test_raster_has_a_colour_bar_and_sigma_legend_is_outside(tmp_path, monkeypatch):
    """plot_raster adds a colour bar (a second axes, labelled); plot_series puts the legend right of the axes."""
    made = []
    real = plt.subplots

    def spy(*a, **k):
        fig, ax = real(*a, **k)
        made.append((fig, ax))
        return fig, ax

    monkeypatch.setattr(plt, "subplots", spy)
    monkeypatch.setattr(plt, "close", lambda fig: None)
    rng = np.random.default_rng(0)
    GP.plot_raster(
        str(tmp_path / "r.png"),
        rng.random((30, 20)) * (rng.random((30, 20)) < 0.3),
        [str(i) for i in range(30)],
        clabel="y (activity)",
    )
    fig, ax = made[-1]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "y (activity)"
    GP.plot_series(
        str(tmp_path / "s.png"),
        {f"L1 neuron {i} -> att[h0,{i}]": rng.random(30) for i in range(6)},
        [str(i) for i in range(30)],
    )
    fig, ax = made[-1]
    fig.canvas.draw()
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= frame.x1  # entirely to the right of the plotting area
