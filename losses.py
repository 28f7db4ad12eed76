"""Losses of the study: label-smoothed cross-entropy and Circle Loss."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against a smoothed target: 1 - eps on the true class and
    eps / (K - 1) on each of the other K - 1 classes (eps = 0 is plain cross-entropy)."""

    def __init__(self, smoothing=0.0):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits, target):
        log_probs = F.log_softmax(logits, dim=-1)
        if self.smoothing == 0.0:
            return F.nll_loss(log_probs, target)
        k = logits.size(-1)
        off = self.smoothing / (k - 1)
        weights = torch.full_like(log_probs, off)
        weights.scatter_(1, target[:, None], 1.0 - self.smoothing)
        return -(weights * log_probs).sum(dim=-1).mean()


class CircleLoss(nn.Module):
    """Circle Loss (Sun et al., CVPR 2020), Eq. (1) with the pair-wise margins of Eq. (6).

    Each sample of the batch is an anchor; its positives are the other samples of its
    class and its negatives the samples of other classes, scored by cosine similarity of
    the L2-normalized embeddings. Per anchor:
        L = softplus(logsumexp_n(gamma * a_n * (s_n - m)) + logsumexp_p(-gamma * a_p * (s_p - 1 + m)))
    with a_p = [1 + m - s_p]_+ and a_n = [s_n + m]_+ (not back-propagated, as in the paper),
    averaged over the anchors that have at least one positive and one negative.
    """

    def __init__(self, m=0.25, gamma=256.0):
        super().__init__()
        self.m = m
        self.gamma = gamma

    def forward(self, embeddings, labels):
        z = F.normalize(embeddings, dim=1)
        sim = z @ z.t()
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye
        neg_mask = ~same

        alpha_p = (1 + self.m - sim.detach()).clamp_min(0)
        alpha_n = (sim.detach() + self.m).clamp_min(0)
        logit_p = -self.gamma * alpha_p * (sim - (1 - self.m))
        logit_n = self.gamma * alpha_n * (sim - self.m)
        neg_inf = torch.finfo(sim.dtype).min
        lse_p = torch.logsumexp(logit_p.masked_fill(~pos_mask, neg_inf), dim=1)
        lse_n = torch.logsumexp(logit_n.masked_fill(~neg_mask, neg_inf), dim=1)

        valid = pos_mask.any(1) & neg_mask.any(1)
        if not valid.any():
            return embeddings.sum() * 0.0  # keeps the graph; no pair to learn from
        return F.softplus(lse_p + lse_n)[valid].mean()
