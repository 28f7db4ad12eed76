"""The claims of the study and their verdicts, computed from the sections' numbers."""

from dataclasses import dataclass

import numpy as np

from reporting.ablations import _difference_cell, _mean_std, ablation_rows
from reporting.common import (ALPHA, accuracy, below, cell, directional, measure, pm, pooled,
                              seed_difference, short, table)
from reporting.robustness import _model, robustness_rows
from reporting.transfer import colour_domains, grey_domains, handwriting_targets, transfer_numbers


@dataclass
class Verdict:
    claim: str
    verdict: str  # supported | contradicted | inconclusive | not run
    evidence: str
    link: str


def _seed_evidence(rows, variant, budget, key="accuracy", what="test accuracy"):
    base, row = rows.get("baseline"), rows.get(variant)
    if not base or not row:
        return None, f"not run: no {variant} runs"
    d = seed_difference(base[key], row[key])
    if d is None:
        return None, (f"not run: {variant} has no finished seed"
                      + (f" ({row['notes']})" if row.get("notes") else ""))
    lost = "".join(f"; {v} diverged in {len(r['diverged'])} of "
                   f"{len(r['runs'])} seeds" for v, r in (("baseline", base), (variant, row)) if r["diverged"])
    return d, (f"{what} baseline {_mean_std(base[key])}% vs {variant} {_mean_std(row[key])}% "
               f"(mean ± std over {len(base[key])} and {len(row[key])} seeds{budget}; "
               f"difference {_difference_cell(d)}){lost}")


def _gap_evidence(rows, variant):
    """The train-test accuracy gap beside a regularization claim (train accuracy on the batches
    as trained, augmentation and dropout on: it flatters both, so it is context, not the verdict)."""
    base, row = rows.get("baseline"), rows.get(variant)
    if not (base and row and base["train_acc"] and row["train_acc"]
            and len(base["train_acc"]) == len(base["accuracy"]) and len(row["train_acc"]) == len(row["accuracy"])):
        return ""
    gap = lambda r: 100 * (np.mean(r["train_acc"]) - np.mean(r["accuracy"]))  # noqa: E731
    return (f"; train-test gap {gap(base):.1f} points for the baseline vs {gap(row):.1f} for "
            f"{variant} (train accuracy on the batches as trained)")


def _budget(study):
    """' after 4 epochs on 10000 images' for the ablations' evidence: their verdicts hold at
    that budget, not at the long schedules the claims were made for."""
    b = study.profile.get("ablation", {})
    if "epochs" not in b:
        return ""
    return f", {b['epochs']} epochs on {b.get('train_subset') or 'all'} images"


def claims(study, rows=None, transfer=None, robust_rows=None):
    """Every claim of the study with its verdict computed from this run's numbers (the
    sections' numbers, when the report passes them, else computed here)."""
    rows = ablation_rows(study) if rows is None else rows
    budget = _budget(study)
    out = []

    # BatchNorm eases optimization: without it, the baseline's learning rate trains worse or diverges
    claim = "BatchNorm eases optimization: without it the same learning rate trains worse (or diverges)"
    same = rows.get("no_bn_same_lr")
    if same and same["diverged"] and not same["accuracy"] and rows.get("baseline", {}).get("accuracy"):
        out.append(Verdict(claim, "supported",
                           f"without BatchNorm the baseline's learning rate diverged in all "
                           f"{len(same['diverged'])} seeds ({short(same['diverged'][0].reason)}); "
                           f"the baseline reached {_mean_std(rows['baseline']['accuracy'])}%",
                           "#ablations"))
    else:
        d, text = _seed_evidence(rows, "no_bn_same_lr", budget)
        own, own_text = _seed_evidence(rows, "no_bn", budget)
        if own is not None:
            text += f"; without BatchNorm at its own lower learning rate: {_mean_std(rows['no_bn']['accuracy'])}%"
        out.append(Verdict(claim, directional(d, -1), text, "#ablations"))

    d, text = _seed_evidence(rows, "label_smoothing", budget, "ece", "ECE")
    out.append(Verdict("Label smoothing improves calibration (lower ECE)", directional(d, -1),
                       text, "#ablations"))
    d, text = _seed_evidence(rows, "adam", budget)
    out.append(Verdict("SGD with momentum generalizes better than Adam (higher test accuracy)",
                       directional(d, -1), text, "#ablations"))
    d, text = _seed_evidence(rows, "no_augment", budget)
    out.append(Verdict("Data augmentation regularizes: turning it off lowers test accuracy",
                       directional(d, -1), text + _gap_evidence(rows, "no_augment"), "#ablations"))
    d, text = _seed_evidence(rows, "dropout", budget)
    out.append(Verdict("Dropout before the classifier regularizes: it raises test accuracy",
                       directional(d, +1), text + _gap_evidence(rows, "dropout"), "#ablations"))

    out += transfer_claims(transfer or transfer_numbers(study))
    out += robustness_claims(study, robust_rows if robust_rows is not None else robustness_rows(study))
    return out


def transfer_claims(t):
    out = []
    claim = ("Transfer is harder from a greyscale digit domain to a colour/texture one (MNIST-M, "
             "SVHN) than the reverse")
    parts, signs = [], []
    for varied in colour_domains():
        for plain in grey_domains():
            easy, hard = t.direct.get((varied, plain)), t.direct.get((plain, varied))
            if easy and hard:
                signs.append(1 if below(hard, easy) else -1 if below(easy, hard) else 0)
                parts.append(f"{plain} -> {varied} {pm(*hard)}% vs {varied} -> {plain} {pm(*easy)}%")
    out.append(Verdict(claim, pooled(signs), "; ".join(parts) or "not run: needs both directions of a pair",
                       "#cross-domain-transfer"))

    claim = ("Frozen-feature fine-tuning on a small labelled target set recovers most (over half) "
             "of the accuracy lost to the domain shift")
    if t.closed:
        median = float(np.median(list(t.closed.values())))
        verdict = "supported" if median > 0.5 else "contradicted"
        vs = [(t.tuned[k], t.scratch_small.get(k[1])) for k in t.closed if t.scratch_small.get(k[1])]
        worse = sum(below(v, ref) for v, ref in vs)
        evidence = (f"median gap closed {100 * median:.0f}% over {len(t.closed)} pairs (range "
                    f"{100 * min(t.closed.values()):.0f}% to {100 * max(t.closed.values()):.0f}%); "
                    f"clearly worse than training from scratch on the same {t.n_target:,} images "
                    f"in {worse} of {len(vs)} pairs")
    else:
        verdict, evidence = "not run", "not run: no pair with a gap and a fine-tuned model"
    out.append(Verdict(claim, verdict, evidence, "#cross-domain-transfer"))

    claim = "A colour/texture shift (MNIST -> MNIST-M) costs more than a handwriting shift (MNIST -> USPS, digits)"
    colour = t.direct.get(("mnist", "mnistm"))
    hand = [(d, t.direct.get(("mnist", d))) for d in handwriting_targets() if t.direct.get(("mnist", d))]
    if colour and hand:
        evidence = f"MNIST -> MNIST-M {pm(*colour)}% vs " + ", ".join(f"MNIST -> {d} {pm(*v)}%" for d, v in hand)
        verdict = ("supported" if all(below(colour, v) for _, v in hand)
                   else "contradicted" if any(below(v, colour) for _, v in hand) else "inconclusive")
    else:
        verdict, evidence = "not run", "not run: needs MNIST -> MNIST-M and MNIST -> USPS or digits"
    out.append(Verdict(claim, verdict, evidence, "#cross-domain-transfer"))
    return out


def robustness_claims(study, rows):
    out = []
    ok = [r for r in rows if r["result"] and measure(r["result"], "pgd_accuracy")
          and measure(r["result"], "fgsm_accuracy")]
    claim = "PGD is a stronger attack than FGSM (lower accuracy on the same images)"
    if ok:
        stronger = [r for r in ok if below(measure(r["result"], "pgd_accuracy"), measure(r["result"], "fgsm_accuracy"))]
        weaker = [r for r in ok if below(measure(r["result"], "fgsm_accuracy"), measure(r["result"], "pgd_accuracy"))]
        verdict = pooled([1] * len(stronger) + [-1] * len(weaker) + [0] * (len(ok) - len(stronger) - len(weaker)))
        evidence = "; ".join(f"`{r['model']}` FGSM {cell(r['result'], 'fgsm_accuracy')}% vs PGD "
                             f"{cell(r['result'], 'pgd_accuracy')}%" for r in ok)
        evidence += f" (PGD clearly lower for {len(stronger)} of {len(ok)} models)"
    else:
        verdict, evidence = "not run", "not run: no model evaluated under both attacks"
    out.append(Verdict(claim, verdict, evidence, "#robustness"))

    claim = ("Adversarial training trades clean accuracy for robustness (PGD-AT vs standard, "
             "same budget, AutoAttack)")
    std = _model(rows, adversarial=False, circle=False)
    pgd = _model(rows, adversarial=True, circle=False, attack="pgd")
    if std and pgd and measure(std["result"], "autoattack_accuracy") and measure(pgd["result"], "autoattack_accuracy"):
        a_std, a_pgd = measure(std["result"], "autoattack_accuracy"), measure(pgd["result"], "autoattack_accuracy")
        c_std, c_pgd = accuracy(std["result"]), accuracy(pgd["result"])
        robust, cost = below(a_std, a_pgd), below(c_pgd, c_std)
        verdict = ("supported" if robust and cost else "contradicted" if robust and below(c_std, c_pgd)
                   else "inconclusive")
        evidence = (f"clean {pm(*c_std)}% -> {pm(*c_pgd)}%, AutoAttack {pm(*a_std)}% -> {pm(*a_pgd)}% "
                    f"(`{std['model']}` -> `{pgd['model']}`)")
    else:
        verdict, evidence = "not run", "not run: needs the standard and PGD-trained models under AutoAttack"
    out.append(Verdict(claim, verdict, evidence, "#robustness"))

    claim = "Circle Loss makes representations more robust (AutoAttack accuracy, with vs without it, same budget)"
    parts, signs = [], []
    for adversarial in (False, True):
        base = _model(rows, adversarial=adversarial, circle=False, **({"attack": "pgd"} if adversarial else {}))
        circ = _model(rows, adversarial=adversarial, circle=True)
        a = measure(base["result"], "autoattack_accuracy") if base else None
        b = measure(circ["result"], "autoattack_accuracy") if circ else None
        if a and b:
            signs.append(1 if below(a, b) else -1 if below(b, a) else 0)
            parts.append(f"`{base['model']}` {pm(*a)}% vs `{circ['model']}` {pm(*b)}%")
    out.append(Verdict(claim, pooled(signs), "; ".join(parts) or "not run: needs Circle Loss models under AutoAttack",
                       "#circle-loss"))
    return out


def claims_section(verdicts):
    md = ["## Claims and verdicts", "",
          "Each claim the study makes, judged from this run's numbers by `report.claims` (not "
          "written by hand): **supported** or **contradicted** when the difference exceeds the "
          "uncertainty (non-overlapping 95% Wilson intervals for single models, Welch's t-test "
          f"at p < {ALPHA} across seeds), **inconclusive** when it does not at this budget, "
          "**not run** when a run it needs is missing. A verdict holds at this profile's "
          "budgets (see Parameters), not necessarily at the long schedules the claims were "
          "made for.", ""]
    md.append(table(["claim", "verdict", "evidence", "details"],
                    [[v.claim, f"**{v.verdict}**", v.evidence, f"[table]({v.link})"] for v in verdicts]))
    return md + [""]


# ----------------------------------------------------------------------------- the rest
