"""White-box L-inf attacks in pixel space (inputs in [0, 1], eps in pixel units, e.g. 8/255).

Each attack is a function of (model, x, y, ...) that returns x_adv in [0, 1] with
||x_adv - x||_inf <= eps. It runs the model in eval mode and restores every module's
previous mode, and takes gradients with respect to the input only, so parameter
`.grad` fields are never touched. Random starts and noise draw from the `generator`
given (torch's global generator when None), so a caller decides where randomness comes from.

`ATTACKS` names every attack with one signature, `attack(model, x, y, eps, alpha, iters,
restarts, generator)`, with its label, colour and whether eval.py runs it; train.py,
eval.py, the figures and the report know attacks only through it.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

FGSM_RS_ALPHA = 1.25  # x eps: the step of "Fast is better than free" (Wong et al. 2020)


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


def _uniform(like, low, high, generator):
    """Uniform noise shaped like `like`, drawn on the generator's device, then moved."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(like.shape, generator=generator, device=device, dtype=like.dtype)
    return (u * (high - low) + low).to(like.device)


def _random_start(x, eps, generator):
    return _project(x + _uniform(x, -eps, eps, generator), x, eps)


def fgsm_attack(model, x, y, eps):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps
    from x itself (the study's FGSM; deterministic)."""
    if eps == 0:
        return x.detach().clone()
    with eval_mode(model):
        grad = _input_grad(model, x, y)
    return _project(x.detach() + eps * grad.sign(), x.detach(), eps)


def fgsm_rs_attack(model, x, y, eps, alpha=None, generator=None):
    """FGSM with a random start (Wong et al. 2020, "Fast is better than free"): a uniform
    start in the eps-ball, then one signed step of `alpha` (default 1.25 eps), projected."""
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = FGSM_RS_ALPHA * eps if alpha is None else alpha
    x_adv = _random_start(x, eps, generator)
    with eval_mode(model):
        grad = _input_grad(model, x_adv, y)
    return _project(x_adv + alpha * grad.sign(), x, eps)


def pgd_attack(model, x, y, eps, alpha, iters, random_start=True, restarts=1, generator=None):
    """Projected Gradient Descent (Madry et al. 2018): `iters` signed steps of size `alpha`,
    each projected back onto the eps-ball around x and onto [0, 1].

    With `restarts` R > 1, R random starts are run and each example keeps its worst one:
    a misclassifying perturbation over one that is not, and among equals the one with the
    higher loss (so more restarts are never weaker than the first alone)."""
    x = x.detach()
    if eps == 0 or iters == 0:
        return x.clone()
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    best = best_wrong = best_loss = None
    with eval_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, eps, generator) if random_start else x.clone()
            for _ in range(iters):
                grad = _input_grad(model, x_adv, y)
                x_adv = _project(x_adv + alpha * grad.sign(), x, eps)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = model(x_adv)
            wrong = logits.argmax(1) != y
            loss = F.cross_entropy(logits.float(), y, reduction="none")
            if best is None:
                best, best_wrong, best_loss = x_adv, wrong, loss
                continue
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
            best = torch.where(better[:, None, None, None], x_adv, best)
            best_wrong, best_loss = best_wrong | wrong, torch.where(better, loss, best_loss)
    return best


def random_noise(x, eps, generator=None):
    """Baseline: a random +-eps sign perturbation per pixel (no gradient)."""
    x = x.detach()
    sign = (_uniform(x, 0.0, 1.0, generator) < 0.5).to(x.dtype).mul_(2).sub_(1)
    return (x + eps * sign).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- the registry
# One signature for every attack, and what the rest of the study needs to know about it:
# train.py trains against any entry, eval.py runs the `evaluated` ones at --eps, and the
# figures and tables label and colour them from here. A new attack is one entry.

def _fgsm(model, x, y, eps, alpha, iters, restarts, generator):
    return fgsm_attack(model, x, y, eps)  # one step of eps, no randomness


def _fgsm_rs(model, x, y, eps, alpha, iters, restarts, generator):
    return fgsm_rs_attack(model, x, y, eps, alpha, generator)


def _pgd(model, x, y, eps, alpha, iters, restarts, generator):
    return pgd_attack(model, x, y, eps, alpha, iters, True, restarts, generator)


def _noise(model, x, y, eps, alpha, iters, restarts, generator):
    return random_noise(x, eps, generator)


@dataclass(frozen=True)
class Attack:
    run: Callable  # (model, x, y, eps, alpha, iters, restarts, generator) -> x_adv
    label: str  # in figures and table headers
    color: str  # the same in every figure
    evaluated: bool  # eval.py runs it at --eps, and the robustness table has its column
    iterative: bool = False  # takes --iters steps of --alpha (its label then names the steps)
    baseline: bool = False  # a reference that reads no gradient: shown after the attacks

    def title(self, iters=None):
        return f"{self.label}-{iters}" if self.iterative and iters else self.label

    def gradient_steps(self, iters):
        """Input-gradient steps per example: what it adds to a training step's cost."""
        return 0 if self.baseline else int(iters) if self.iterative else 1


ATTACKS = {
    "fgsm": Attack(_fgsm, "FGSM", "#1f77b4", evaluated=True),
    "fgsm_rs": Attack(_fgsm_rs, "FGSM-RS", "#17becf", evaluated=False),
    "pgd": Attack(_pgd, "PGD", "#d62728", evaluated=True, iterative=True),
    "noise": Attack(_noise, "random noise", "#2ca02c", evaluated=True, baseline=True),
}
# the strong reference beside them (eval.py, through torchattacks) and the unattacked images
AUTOATTACK = Attack(None, "AutoAttack", "#9467bd", evaluated=False)
CLEAN_COLOR = "#222222"


def evaluated():
    """The attacks eval.py runs at --eps: the gradient attacks, then the baselines."""
    names = [name for name, attack in ATTACKS.items() if attack.evaluated]
    return tuple(sorted(names, key=lambda name: ATTACKS[name].baseline))


PGD_STEP_RULE = "2.5 eps / iters"  # Madry et al.: the steps together can cross the ball


def pgd_step(eps, iters):
    """The PGD step when none is given: 2.5 eps / iters (2/255 for PGD-10 at 8/255)."""
    return 2.5 * eps / max(iters, 1)


def run_attack(name, model, x, y, eps, alpha=None, iters=10, restarts=1, generator=None):
    """The attack `name` of `ATTACKS` (alpha None: the PGD step rule)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    if alpha is None and ATTACKS[name].iterative:
        alpha = pgd_step(eps, iters)
    return ATTACKS[name].run(model, x, y, eps, alpha, iters, restarts, generator)
