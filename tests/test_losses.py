import math

import pytest
import torch
import torch.nn.functional as F

from losses import CircleLoss, LabelSmoothingCrossEntropy


def test_label_smoothing_matches_the_direct_formula():
    logits, target = torch.randn(16, 10), torch.randint(0, 10, (16,))
    eps, k = 0.1, 10
    log_p = F.log_softmax(logits, 1)
    expected = 0.0
    for i in range(16):
        for c in range(k):
            q = 1 - eps if c == target[i] else eps / (k - 1)
            expected -= q * log_p[i, c].item()
    expected /= 16
    assert LabelSmoothingCrossEntropy(eps)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_matches_torch_after_reparametrisation():
    # torch spreads eps' uniformly over all K classes: eps' = eps * K / (K - 1) is the same target
    logits, target = torch.randn(32, 10), torch.randint(0, 10, (32,))
    ours = LabelSmoothingCrossEntropy(0.2)(logits, target)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, label_smoothing=0.2 * 10 / 9))
    torch.testing.assert_close(LabelSmoothingCrossEntropy(0.0)(logits, target),
                               F.cross_entropy(logits, target))


def test_label_smoothing_rejects_invalid_eps():
    with pytest.raises(ValueError):
        LabelSmoothingCrossEntropy(1.0)


def circle_loss_reference(emb, labels, m, gamma):
    """Sun et al. 2020 Eq. (1) with Eq. (6) margins, one anchor at a time in plain Python."""
    z = F.normalize(emb.double(), dim=1)
    losses = []
    for i in range(len(labels)):
        sp = [float(z[i] @ z[j]) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        sn = [float(z[i] @ z[j]) for j in range(len(labels)) if labels[j] != labels[i]]
        if not sp or not sn:
            continue
        neg = sum(math.exp(gamma * max(s + m, 0) * (s - m)) for s in sn)
        pos = sum(math.exp(-gamma * max(1 + m - s, 0) * (s - (1 - m))) for s in sp)
        losses.append(math.log1p(neg * pos))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("gamma", [1.0, 16.0, 32.0])
def test_circle_loss_matches_a_per_anchor_reference(gamma):
    emb, labels = torch.randn(12, 6), torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 5])
    got = CircleLoss(m=0.25, gamma=gamma)(emb, labels).item()
    assert got == pytest.approx(circle_loss_reference(emb, labels, 0.25, gamma), rel=1e-4)


def test_circle_loss_is_stable_at_the_default_scale_and_learns():
    emb = torch.randn(32, 16, requires_grad=True)
    labels = torch.arange(32) % 4
    loss_fn = CircleLoss()  # gamma = 256: large logits, log-sum-exp keeps it finite
    opt = torch.optim.SGD([emb], lr=0.05)
    first = loss_fn(emb, labels)
    assert torch.isfinite(first)
    for _ in range(50):
        opt.zero_grad()
        loss = loss_fn(emb, labels)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()
    z = F.normalize(emb.detach(), dim=1)
    same = labels[:, None] == labels[None, :]
    sim = z @ z.t()
    assert sim[same & ~torch.eye(32, dtype=torch.bool)].mean() > sim[~same].mean() + 0.5


def test_circle_loss_without_pairs_is_zero_with_a_graph():
    emb = torch.randn(4, 8, requires_grad=True)
    loss = CircleLoss()(emb, torch.tensor([0, 1, 2, 3]))  # no positives anywhere
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))
