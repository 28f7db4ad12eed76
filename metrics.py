"""Numbers of the evaluation: calibration, selective prediction, top-k, per-class scores,
and the attack sanity checks. Computes only; plots.py draws.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


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
    # imported here: sklearn.metrics costs ~1.7 s of every process's start (train.py, each
    # worker of the pipeline), and only evaluation needs it
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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


def wilson_ci(correct, n, confidence=0.95):
    """[low, high] Wilson score interval of a proportion of `correct` hits in `n` trials."""
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence,
                                                       method="wilson")
    return [float(ci.low), float(ci.high)]


def clearly_above(accuracy, n, bound):
    """Whether an accuracy measured on n samples is above `bound` beyond sampling noise: the
    lower end of its 95% Wilson interval is above it. The one test behind every sanity
    check, so a check fails on evidence, not on a sample's luck."""
    return wilson_ci(round(accuracy * n), n)[0] > bound


def attack_sanity_checks(clean, fgsm, pgd, noise, n, eps, max_perturbation, x_range,
                         sweep=None, iter_sweep=None, autoattack=None, large_eps=32 / 255,
                         large_eps_max_acc=0.1, max_pgd_overestimate=0.05):
    """Signs of a broken attack or of gradient masking (in the spirit of AutoAttack's checks).

    `clean`, `fgsm`, `pgd`, `noise` are accuracies on the same n images at `eps`;
    `max_perturbation` the largest |x_adv - x| seen per attack; `x_range` (min, max) of all
    x_adv; `sweep` {'epsilons', 'pgd', 'n'}; `iter_sweep` {'iters', 'pgd', 'n'};
    `autoattack` {'accuracy', 'pgd_accuracy', 'n'} (PGD on AutoAttack's own sample).
    An ordering check fails only when the accuracy that should be lower is clearly above
    the other (clearly_above); the bounds on the eps-ball and pixel range are exact.
    Returns (checks: name -> bool, details: name -> text); a check that does not apply
    (its sweep was not run) is absent.
    """
    checks, details = {}, {}

    def order(name, pairs, n_low):
        """Check that each (low, low name, high, high name) pair is ordered."""
        checks[name] = not any(clearly_above(low, n_low, high) for low, _, high, _ in pairs)
        details[name] = "; ".join(f"{ln} {low:.4f} <= {hn} {high:.4f}" for low, ln, high, hn
                                  in pairs) + f" (n={n_low}, 95% Wilson)"

    worst = max(max_perturbation.values())
    checks["perturbation_within_eps"] = bool(worst <= eps + 1e-6)
    details["perturbation_within_eps"] = (
        f"max |x_adv - x| = {worst * 255:.3f}/255 (eps {eps * 255:.3f}/255): "
        + ", ".join(f"{k} {v * 255:.3f}/255" for k, v in max_perturbation.items()))
    checks["adversarial_in_pixel_range"] = bool(x_range[0] >= 0.0 and x_range[1] <= 1.0)
    details["adversarial_in_pixel_range"] = f"x_adv in [{x_range[0]:.4f}, {x_range[1]:.4f}]"

    order("pgd_le_fgsm_le_clean", [(pgd, "PGD", fgsm, "FGSM"), (fgsm, "FGSM", clean, "clean")], n)
    order("fgsm_le_noise", [(fgsm, "FGSM", noise, "random noise")], n)

    if sweep is not None and max(sweep["epsilons"]) >= large_eps:
        i = int(np.argmax(sweep["epsilons"]))
        acc = sweep["pgd"][i]
        order("pgd_large_eps_near_zero",
              [(acc, f"PGD at eps {sweep['epsilons'][i] * 255:.0f}/255", large_eps_max_acc,
                "the bound")], sweep["n"])
    if iter_sweep is not None and len(iter_sweep["pgd"]) > 1:
        accs = iter_sweep["pgd"]
        # each count's accuracy against the best (lowest) of the fewer-iteration runs
        rises = [(accs[i + 1], min(accs[: i + 1])) for i in range(len(accs) - 1)]
        worst_rise = max(rises, key=lambda r: r[0] - r[1])
        checks["more_pgd_iters_not_weaker"] = not any(
            clearly_above(a, iter_sweep["n"], b) for a, b in rises)
        details["more_pgd_iters_not_weaker"] = (
            f"largest rise of PGD accuracy with more iterations {worst_rise[0] - worst_rise[1]:+.4f} "
            f"(n={iter_sweep['n']}, 95% Wilson): " + ", ".join(
                f"{k}:{a:.3f}" for k, a in zip(iter_sweep["iters"], accs)))
    if autoattack is not None:
        aa, pgd_same, n_aa = autoattack["accuracy"], autoattack["pgd_accuracy"], autoattack["n"]
        order("autoattack_le_pgd", [(aa, "AutoAttack", pgd_same, "PGD")], n_aa)
        gap = pgd_same - aa  # the share of images PGD leaves and AutoAttack breaks
        checks["pgd_overestimate"] = not clearly_above(max(gap, 0.0), n_aa, max_pgd_overestimate)
        details["pgd_overestimate"] = (
            f"PGD {pgd_same:.4f} - AutoAttack {aa:.4f} = {gap:+.4f} on the same {n_aa} images "
            f"(a gap clearly over {max_pgd_overestimate:.2f}, 95% Wilson, is a sign of gradient "
            "masking; either way AutoAttack's number is the one to trust)")
    return checks, details
