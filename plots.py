"""One function per figure. Each draws from numbers it is given and saves a PNG.

Figures are built with matplotlib's object API (no pyplot, no global backend state).
"""

from matplotlib.figure import Figure

# One colour per attack, the same in every figure.
COLORS = {"clean": "#222222", "fgsm": "#1f77b4", "pgd": "#d62728", "noise": "#2ca02c",
          "train": "#1f77b4", "val": "#ff7f0e"}


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_training_curves(history, path, title):
    """Loss, accuracy and learning rate per epoch (train vs validation)."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(13, 3.8))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], "o-", color=COLORS[split],
                     label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_acc"] for h in history], "o-",
                    color=COLORS[split], label=split)
    ax_lr.plot(epochs, [h["lr"] for h in history], "o-", color="#555555")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_lr.set(title="Learning rate (end of epoch)", xlabel="epoch", ylabel="learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    fig.suptitle(title)
    _save(fig, path)
