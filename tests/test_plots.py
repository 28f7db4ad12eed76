"""The training-curves figure, which every run draws with a fixed layout (no tight_layout)."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import plots


def _history(epochs, loss=2.3, lr=0.02, robust=False):
    return [{"epoch": e, "train_loss": loss / e, "val_loss": loss / e + 0.3, "train_acc": 0.1 + e / 100,
             "val_acc": 0.1 + e / 120, "lr": lr * (1 + e % 7),
             **({"val_pgd_acc": 0.05 + e / 400, "robust_collapse": e == epochs} if robust else {})}
            for e in range(1, epochs + 1)]


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """plot_training_curves' figure, saved as usual and kept for inspection."""
    figures = []
    save = plots._save

    def keep(fig, path, *layout):
        save(fig, path, *layout)
        figures.append(fig)

    monkeypatch.setattr(plots, "_save", keep)

    def draw(history):
        plots.plot_training_curves(history, str(tmp_path / "curves.png"),
                                   "ResNet18 on SYNTHETIC patterns (not real data)")
        return figures[-1]
    return draw


@pytest.mark.parametrize("history", [
    _history(1, lr=0.000208),  # one epoch, a learning rate written to six places
    _history(40, lr=1.5e-6, robust=True),  # an offset label ("1e-6") over the lr axis, a collapse
    _history(4, loss=12345.0),  # a loss in the thousands
], ids=["one_epoch", "forty_epochs_tiny_lr", "huge_loss"])
def test_training_curves_keep_every_label_inside_and_apart(drawn, history):
    fig = drawn(history)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page, axes = fig.bbox, fig.axes
    for ax in axes:
        # whole epochs only: one tick at 1 for a one-epoch run
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        drawn_box = ax.get_tightbbox(renderer)  # the panel with its ticks, labels and title
        assert (page.x0 <= drawn_box.x0 and drawn_box.x1 <= page.x1
                and page.y0 <= drawn_box.y0 and drawn_box.y1 <= page.y1), ax.get_title()
        assert not fig._suptitle.get_window_extent(renderer).overlaps(ax.title.get_window_extent(renderer))
        offset = ax.yaxis.get_offset_text()  # "1e-6" over the axis: clear of the title
        if offset.get_text():
            assert not offset.get_window_extent(renderer).overlaps(ax.title.get_window_extent(renderer))
    for left, right in zip(axes, axes[1:]):  # each panel's labels clear its neighbour's plot
        assert left.get_tightbbox(renderer).x1 < right.bbox.x0
        assert right.get_tightbbox(renderer).x0 > left.bbox.x1
