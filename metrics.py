"""Numbers of the evaluation: calibration, selective prediction, top-k, per-class scores,
and the attack sanity checks. Computes only; plots.py draws.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def calibration_bins(confidence, correct, n_bins=10):
    """Equal-width confidence bins on (0, 1]: per-bin count, mean confidence, accuracy."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds confidences in (edges[b], edges[b+1]]; a confidence of exactly 0 goes to bin 0
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, acc_sum / count, np.nan)
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probs, labels, n_bins=10):
    """ECE (Guo et al. 2017): sum over bins of |accuracy - confidence| weighted by bin mass."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = calibration_bins(confidence, correct, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((bins["count"][filled] * gaps).sum() / len(labels))


def fit_temperature(logits, labels, max_iter=200):
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss
    opt.step(closure)
    return float(log_t.exp().item())


def softmax(logits, temperature=1.0):
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def risk_coverage(confidence, correct):
    """Selective prediction, most confident first: for k = 1..n, coverage k/n and the error
    rate (risk) and accuracy of the k most confident predictions."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    errors = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    k = np.arange(1, len(order) + 1)
    risk = np.cumsum(errors) / k
    return {"coverage": k / len(order), "risk": risk, "accuracy": 1.0 - risk}


def aurc(confidence, correct):
    """Area under the risk-coverage curve as the study defines it: the mean over k of the
    error rate of the k most confident predictions (not the 'excess' E-AURC)."""
    return float(risk_coverage(confidence, correct)["risk"].mean())


def selective_accuracy(confidence, correct, coverage):
    """Accuracy on the ceil(coverage * n) most confident predictions."""
    curve = risk_coverage(confidence, correct)
    k = max(1, math.ceil(coverage * len(curve["risk"]) - 1e-9))
    return float(curve["accuracy"][k - 1])


def topk_accuracy(logits, labels, ks):
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels)
    out = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        hits = (logits.topk(k_eff, dim=1).indices == labels[:, None]).any(dim=1)
        out[int(k)] = float(hits.float().mean())
    return out


def per_class_report(labels, preds, num_classes):
    """Confusion matrix (counts and row-normalized) and per-class / macro P, R, F1."""
    classes = list(range(num_classes))
    cm = confusion_matrix(labels, preds, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=classes, zero_division=0)
    macro = precision_recall_fscore_support(labels, preds, labels=classes, average="macro",
                                            zero_division=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    return {
        "confusion_matrix": cm, "confusion_matrix_normalized": normalized,
        # per-class accuracy is the share of each true class predicted correctly (= recall)
        "per_class_accuracy": np.diag(normalized), "precision": precision, "recall": recall,
        "f1": f1, "support": support, "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]), "macro_f1": float(macro[2]),
    }


def accuracy_slack(accuracy, n):
    """Two binomial standard errors plus one sample: what 'more than noise' means here."""
    return 2.0 * math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / max(n, 1)) + 1.0 / max(n, 1)


def attack_sanity_checks(clean, fgsm, pgd, noise, n, eps, max_perturbation, x_range,
                         sweep=None, iter_sweep=None, large_eps=32 / 255, large_eps_max_acc=0.1):
    """Signs of a broken attack or of gradient masking (in the spirit of AutoAttack's checks).

    `clean`, `fgsm`, `pgd`, `noise` are accuracies on the same n images at `eps`;
    `max_perturbation` the largest |x_adv - x| seen per attack; `x_range` (min, max) of all
    x_adv; `sweep` {'epsilons', 'pgd'}; `iter_sweep` {'iters', 'pgd', 'n'}.
    Returns (checks: name -> bool, details: name -> text).
    """
    checks, details = {}, {}
    slack = accuracy_slack(pgd, n)

    worst = max(max_perturbation.values())
    checks["perturbation_within_eps"] = bool(worst <= eps + 1e-6)
    details["perturbation_within_eps"] = (
        f"max |x_adv - x| = {worst * 255:.3f}/255 (eps {eps * 255:.3f}/255): "
        + ", ".join(f"{k} {v * 255:.3f}/255" for k, v in max_perturbation.items()))
    checks["adversarial_in_pixel_range"] = bool(x_range[0] >= 0.0 and x_range[1] <= 1.0)
    details["adversarial_in_pixel_range"] = f"x_adv in [{x_range[0]:.4f}, {x_range[1]:.4f}]"

    checks["pgd_le_fgsm_le_clean"] = bool(pgd <= fgsm + slack and fgsm <= clean + slack)
    details["pgd_le_fgsm_le_clean"] = (f"PGD {pgd:.4f} <= FGSM {fgsm:.4f} <= clean {clean:.4f} "
                                       f"(slack {slack:.4f}, n={n})")
    checks["fgsm_le_noise"] = bool(fgsm <= noise + slack)
    details["fgsm_le_noise"] = f"FGSM {fgsm:.4f} <= random noise {noise:.4f} (slack {slack:.4f})"

    if sweep is not None and max(sweep["epsilons"]) >= large_eps:
        i = int(np.argmax(sweep["epsilons"]))
        acc = sweep["pgd"][i]
        checks["pgd_large_eps_near_zero"] = bool(acc <= large_eps_max_acc)
        details["pgd_large_eps_near_zero"] = (
            f"PGD accuracy {acc:.4f} at eps {sweep['epsilons'][i] * 255:.0f}/255 "
            f"(expected <= {large_eps_max_acc})")
    if iter_sweep is not None and len(iter_sweep["pgd"]) > 1:
        accs = iter_sweep["pgd"]
        rises = [accs[i + 1] - min(accs[: i + 1]) for i in range(len(accs) - 1)]
        allowed = accuracy_slack(min(accs), iter_sweep["n"])
        checks["more_pgd_iters_not_weaker"] = bool(max(rises) <= allowed)
        details["more_pgd_iters_not_weaker"] = (
            f"largest rise of PGD accuracy with more iterations {max(rises):+.4f} "
            f"(allowed {allowed:.4f}): " + ", ".join(
                f"{k}:{a:.3f}" for k, a in zip(iter_sweep["iters"], accs)))
    return checks, details
