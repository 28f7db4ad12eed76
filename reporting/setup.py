"""The Setup box: what shapes every number of the report (model stem, data, precision,
attacks, each model's training compute) and the regime its verdicts hold in, read from the
records the runs wrote."""

from collections import Counter

import attacks
import models
from run_contract import Outcome

from reporting.ablations import ablation_rows
from reporting.common import table
from reporting.robustness import robustness_rows

STEM_WORDS = {"imagenet": "ImageNet stem (7x7 stride-2 conv and 3x3 stride-2 max-pool)",
              "cifar": "CIFAR stem (3x3 stride-1 conv, no max-pool), as the published CIFAR-10 ResNet-18s"}


def _px(value):
    return f"{value * 255:.2f}".rstrip("0").rstrip(".") + "/255"


def training_attack(args):
    """'PGD-2, step 10/255, on every batch' from a training run's arguments ('none')."""
    if not args.get("adv_train"):
        return "none"
    name = args.get("attack", "pgd")
    steps = training_steps(args)
    label = attacks.ATTACKS[name].title(args.get("iters")) if name in attacks.ATTACKS else name
    alpha = args.get("alpha")
    prob = args.get("adv_prob", 1.0)
    return (f"{label} at eps {_px(args.get('eps', 0))}" + (f", step {_px(alpha)}" if alpha else "")
            + f", {steps} gradient step{'s' if steps != 1 else ''}, on "
            + ("every batch" if prob >= 1 else f"{100 * prob:.0f}% of batches"))


def training_steps(args):
    """Attack gradient steps per adversarial example in training."""
    return attacks.ATTACKS[args.get("attack", "pgd")].gradient_steps(args.get("iters", 1))


def image_passes(result):
    """Forward-backward passes over training images: epochs x images x (1 + the attack's
    steps on the share of batches it replaces). None where the record lacks the size."""
    n, args = result.get("n_train"), result.get("args", {})
    if not n:
        return None
    extra = training_steps(args) * args.get("adv_prob", 1.0) if args.get("adv_train") else 0
    return result["epochs"] * n * (1 + extra)


def _count(n):
    if not n:
        return "-"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,.0f}"


def _sizes(evaluated, size):
    """The distinct sample sizes `size(result)` the evaluations used, smallest first."""
    return sorted({n for r in evaluated if (n := size(r["result"])) is not None})


def _either(sizes):
    return " or ".join(f"{n:,}" for n in sizes) or "?"  # "1,024 or 10,000"


def setup_section(study):
    md = ["## Setup", ""]
    rows = robustness_rows(study)
    evaluated = [r for r in rows if r["result"]]
    trained = [(r, study.result(r)) for r in study.select(script="train") if study.result(r)]
    if not trained:
        return md + [f"{Outcome.NOT_RUN}: no training run finished", ""]
    stems = sorted({(res.get("args", {}).get("stem") or "imagenet") for _, res in trained})
    side = {s: models.feature_map_sizes(s, 32)["layer4"] for s in stems}
    lines = ["- **Model**: the hand-written ResNet18 with the "
             + " / ".join(f"{STEM_WORDS[s]}: a 32x32 input reaches layer4 at {side[s]}x{side[s]}"
                          for s in stems) + "."]
    data = sorted({res.get("data_description") for _, res in trained if res.get("data_description")})
    lines.append("- **Data**: " + "; ".join(data) + " (every test split as its file holds it).")
    precision = Counter(res.get("precision") or "unrecorded" for _, res in trained)
    words = {"bf16": "bf16 autocast", "off": "fp32"}
    lines.append("- **Precision** (training): " + ", ".join(
        f"{words.get(p, p)} in {n} run{'s' if n > 1 else ''}" for p, n in sorted(precision.items()))
        + "; evaluation in fp32.")
    if evaluated:
        e = evaluated[0]["result"]
        p, aa = e["params"], e.get("autoattack", {})
        attacked = _sizes(evaluated, lambda r: r["n_samples"]["attacks"])
        autoattacked = _sizes(evaluated, lambda r: r.get("autoattack", {}).get("n"))
        lines.append(
            f"- **Attacks** (evaluation, L-inf eps {_px(p['eps'])}): FGSM (one step of eps); "
            f"PGD-{p['iters']}, step {_px(p['alpha'])}, random start, {p.get('restarts', 1)} "
            f"restart(s), on {_either(attacked)} seeded test images; AutoAttack ({aa.get('version', '?')}: "
            f"{', '.join(aa.get('attacks', [])) or '?'}, {aa.get('steps', '?')} steps) on the first "
            f"{_either(autoattacked)} of them"
            + (" (each evaluation at the sizes of the look that added it)"
               if len(attacked) > 1 or len(autoattacked) > 1 else "") + ".")
    lines.append(design_line(study))
    md += lines + [""]
    body = []
    for r in evaluated:
        res = r["trained"] and study.result(r["train"])
        if not res:
            continue
        passes = image_passes(res)
        body.append([f"`{r['model']}`", training_attack(res.get("args", {})), res["epochs"],
                     f"{res['n_train']:,}" if res.get("n_train") else "-",
                     _count(passes), f"{res['wall_time_s']:.0f}"])
    if body:
        md += ["Training compute of each evaluated model (image-passes: forward-backward passes "
               "over training images, counting the attack's gradient steps; wall time includes "
               "validation):", "",
               table(["model", "training attack", "epochs", "training images", "image-passes",
                      "wall time (s)"], body), ""]
    md += [regime(study), ""]
    return md


def design_line(study):
    """The verdicts' design and its error guarantee, and the looks the study has taken."""
    looks = study.profile.get("looks")
    taken = (f"look {study.profile.get('look', 1)} of {len(looks['seeds'])} taken (seeds "
             + " / ".join(map(str, looks["seeds"])) + ", attacked images "
             + " / ".join(f"{n:,}" for n in looks["images"]) + " per look)") if looks else "one look"
    return ("- **Design** (`sequential.py`): every claim's tests judged at each look by "
            "group-sequential boundaries (Lan-DeMets O'Brien-Fleming spending) with Holm's level "
            "recycling within each family (Maurer & Bretz 2013; at one look, Holm exactly): "
            "family-wise error rate at most 0.05 per family, checked by simulating 20,000 studies "
            "(docs/pipeline.md); negligible only inside each claim's declared smallest effect "
            f"(two one-sided tests at 0.05 / the family's size). This study: {taken}.")


def regime(study):
    """The budget each family of claims is tested at, and why it can show there: from the
    profile, with the ablation baseline's measured fit (clean train accuracy against test)."""
    p = study.profile
    lines = []
    if "ablation" in p:
        b = p["ablation"]
        fit = _baseline_fit(study)
        lines.append(f"- ablations (regularization, calibration, optimization): "
                     f"{b.get('epochs', '?')} epochs on {_images(b.get('train_subset'))} training "
                     "images, trained to fit them, so a regularizer has something to act on"
                     + (f": the baseline fits {fit}" if fit else "") + ".")
    if "cifar10" in p:
        b = p["cifar10"]
        seeds = p.get("model_seeds", [])
        seeded = ", ".join(f"`{m}`" for m in p.get("seeded_models", ()))
        lines.append(f"- robustness: every CIFAR-10 model {b.get('epochs', '?')} epochs on "
                     f"{_images(b.get('train_subset'))} training images (equal epochs)"
                     + (f"; {len(seeds)} seeds of {seeded}, so their claims are tested across seeds"
                        if seeded and len(seeds) > 1 else "; one seed per model")
                     + ("; FGSM-RS and PGD-AT also at the standard model's compute"
                        if p.get("equal_compute") else "") + ".")
    if "digit" in p and "digits" in p:
        lines.append(f"- transfer: digit domains from scratch {_epochs(p['digit'].get('epochs'))} "
                     f"(the large ones) or {_epochs(p['digits'].get('epochs'))} (the small ones), so "
                     "their in-domain ceilings come from unequal budgets; transfer heads on "
                     f"{p.get('finetune', {}).get('train_subset', '?')} target images.")
    return "\n".join([f"**Regime** of the `{study.profile_name}` profile, per family of claims "
                      "(the verdicts hold at these budgets, short of the schedules the claims "
                      "were made at; a claim inconclusive here may show at a longer one):", "",
                      *(lines or ["- see Parameters"])])


def _epochs(n):
    return f"{n if n is not None else '?'} epoch{'' if n == 1 else 's'}"


def _images(subset):
    return f"{subset:,}" if subset else "all"


def _baseline_fit(study):
    """'87.0% of its training images (clean, no augmentation) against 52.9% of the test set,
    a 34.1-point gap (mean of 3 seeds)', or None where no baseline seed recorded it: the
    ablation table's own train-clean and gap columns."""
    base = ablation_rows(study).get("baseline")
    if not base or not base["gap"]:
        return None
    n = len(base["gap"])
    train, gap = sum(base["train_clean"]) / n, sum(base["gap"]) / n
    return (f"{100 * train:.1f}% of its training images (clean, no augmentation) against "
            f"{100 * (train - gap):.1f}% of the test set, a {100 * gap:.1f}-point gap (mean of "
            f"{n} seed{'s' * (n > 1)})")
