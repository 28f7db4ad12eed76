"""White-box L-inf attacks in pixel space (inputs in [0, 1], eps in pixel units, e.g. 8/255).

Each attack is a function of (model, x, y, ...) that returns x_adv in [0, 1] with
||x_adv - x||_inf <= eps. It runs the model in eval mode and restores every module's
previous mode, and takes gradients with respect to the input only, so parameter
`.grad` fields are never touched.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F


@contextmanager
def eval_mode(model):
    """Put `model` in eval mode, then restore each module's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _input_grad(model, x, y):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def fgsm_attack(model, x, y, eps):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps."""
    if eps == 0:
        return x.detach().clone()
    with eval_mode(model):
        grad = _input_grad(model, x, y)
    return _project(x.detach() + eps * grad.sign(), x.detach(), eps)


def pgd_attack(model, x, y, eps, alpha, iters, random_start=True):
    """Projected Gradient Descent (Madry et al. 2018): `iters` signed steps of size `alpha`,
    each projected back onto the eps-ball around x and onto [0, 1]."""
    x = x.detach()
    if eps == 0 or iters == 0:
        return x.clone()
    x_adv = x.clone()
    if random_start:
        x_adv = _project(x_adv + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    with eval_mode(model):
        for _ in range(iters):
            grad = _input_grad(model, x_adv, y)
            x_adv = _project(x_adv + alpha * grad.sign(), x, eps)
    return x_adv


def random_noise(x, eps):
    """Baseline: a random +-eps sign perturbation per pixel (no gradient)."""
    x = x.detach()
    sign = torch.randint_like(x, 0, 2).mul_(2).sub_(1)
    return (x + eps * sign).clamp_(0.0, 1.0)


ATTACKS = {"fgsm": fgsm_attack, "pgd": pgd_attack}
