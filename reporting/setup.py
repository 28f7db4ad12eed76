"""The Setup box: what shapes every number of the report (model stem, data, precision,
attacks, each model's training compute) and the regime its verdicts hold in, read from the
records the runs wrote."""

from collections import Counter

import attacks
import models
from run_contract import Outcome

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
        lines.append(
            f"- **Attacks** (evaluation, L-inf eps {_px(p['eps'])}): FGSM (one step of eps); "
            f"PGD-{p['iters']}, step {_px(p['alpha'])}, random start, {p.get('restarts', 1)} "
            f"restart(s), on {e['n_samples']['attacks']:,} seeded test images; AutoAttack "
            f"({aa.get('version', '?')}: {', '.join(aa.get('attacks', [])) or '?'}, "
            f"{aa.get('steps', '?')} steps) on the first {aa.get('n', '?')} of them.")
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


def regime(study):
    """One sentence on the budgets the verdicts hold at, from the profile."""
    p = study.profile
    parts = []
    if "ablation" in p:
        b = p["ablation"]
        parts.append(f"ablations {b.get('epochs', '?')} epochs on {b.get('train_subset') or 'all'} images")
    if "cifar10" in p:
        parts.append(f"CIFAR-10 models {p['cifar10'].get('epochs', '?')} epochs")
    if "digit" in p and "digits" in p:
        parts.append(f"digit domains from scratch {p['digit'].get('epochs', '?')} epochs (the large "
                     f"ones) or {p['digits'].get('epochs', '?')} (the small ones), so their in-domain "
                     "ceilings come from unequal budgets")
    if "finetune" in p:
        parts.append(f"transfer heads on {p['finetune'].get('train_subset', '?')} target images")
    budget = "; ".join(parts) or "see Parameters"
    return (f"**Regime**: the `{study.profile_name}` profile's budgets ({budget}). The verdicts "
            "hold at these budgets, short of the schedules the claims were made at; a claim "
            "inconclusive here may show at a longer one.")
