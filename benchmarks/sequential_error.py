"""The sequential design's error rates and power, by simulating whole studies through the real
decision code (sequential.decide over significance's tests).

    python benchmarks/sequential_error.py --studies 20000

Each simulated study has the shape of the report's families and the quick profile's look
schedule: seed-paired claims (paired differences with unit spread, at the
schedule's ablation seeds) and per-image claims (McNemar with 20% of images discordant, at its
image samples), each with its smallest effect of interest. Every look adds samples only to
the hypotheses still open (not decided, not negligible, not futile), as the pipeline's looks
do, and, as a look under a budget does, only to the share `--extend` of them with the best
chance of a verdict at that look (the rest stop for good). It prints, per family and
scenario: the family-wise rate of false rejections (null: every effect 0) and of false
"negligible" verdicts (every effect at its margin, the worst case for equivalence), each with
its Monte Carlo standard error, and the power, looks and sample spent under planted effects.
tests/test_sequential.py runs a small version of the same simulation.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sequential  # noqa: E402
import significance  # noqa: E402
# the quick profile's look schedule (study/profiles.py; tests/test_sequential.py holds them equal)
SEEDS, IMAGES = (3, 8), (1024, 10000)
DISCORDANT = 0.2
# (kind, plan, margin): seed claims in units of the seed-difference spread, image claims in
# accuracy; the margins are the report's (1 point of accuracy against a ~1.5-point spread)
FAMILIES = {
    "seeds x5 (ablations)": [("seeds", SEEDS, 0.7)] * 5,
    "mixed x6 (robustness, corruptions)": [("seeds", SEEDS, 0.7)] * 3 + [("images", IMAGES, 0.01)] * 3,
}


def _data(rng, kind, n, effect):
    """A hypothesis' data at its cap: paired differences, or (reference, other) outcomes."""
    if kind == "seeds":
        return rng.normal(effect, 1.0, n)
    u = rng.random(n)
    gained = u < (DISCORDANT + effect) / 2
    lost = ~gained & (u < DISCORDANT)
    return ~lost, ~gained  # reference correct unless lost to the other; other unless gained


def _test(kind, data, n):
    if kind == "seeds":
        return significance.paired(np.zeros(n), data[:n])
    return significance.mcnemar(~data[0][:n], ~data[1][:n])


def _chance(h, m, alpha):
    """A hypothesis' chance of a verdict at its next look (what a budgeted look ranks by)."""
    at = len(h.looks) + 1
    return max(sequential.conditional_power(h, h.level, at), sequential.negligible_chance(h, alpha, m, at))


def run_study(rng, spec, effects, alpha=sequential.ALPHA, extend=1.0):
    """One simulated study: looks until every hypothesis has stopped; from the second look on,
    only the share `extend` of the open hypotheses with the best chance of a verdict gets more
    samples, and the others stop for good. Returns its hypotheses."""
    hyps = [sequential.Hypothesis(f"{kind} {i}", +1, plan, margin=margin)
            for i, (kind, plan, margin) in enumerate(spec)]
    data = [_data(rng, kind, plan[-1], effect) for (kind, plan, _), effect in zip(spec, effects)]
    left_out = set()
    for look in range(max(len(plan) for _, plan, _ in spec)):
        going = [i for i, (h, (_, plan, _)) in enumerate(zip(hyps, spec))
                 if not h.stop and len(h.looks) < len(plan) and i not in left_out]
        if look and extend < 1:
            ranked = sorted(going, key=lambda i: -_chance(hyps[i], len(spec), alpha))
            left_out.update(ranked[math.ceil(extend * len(ranked)):])
            going = [i for i in going if i not in left_out]
        for i in going:
            kind, plan, _ = spec[i]
            hyps[i].looks.append(_test(kind, data[i], plan[len(hyps[i].looks)]))
        sequential.decide(hyps, alpha)
    return hyps


def error_rates(spec, studies, seed=0, extend=1.0):
    """(false-rejection FWER, its SE, false-negligible FWER, its SE) over `studies` each."""
    rng = np.random.default_rng(seed)
    null = [any(h.rejected_at for h in run_study(rng, spec, [0.0] * len(spec), extend=extend))
            for _ in range(studies)]
    edge = [any(h.negligible_at for h in run_study(rng, spec, [m * s for (_, _, m), s in
                                                               zip(spec, rng.choice([-1, 1], len(spec)))],
                                                   extend=extend))
            for _ in range(studies)]
    rate = lambda xs: (float(np.mean(xs)), float(np.sqrt(np.mean(xs) * (1 - np.mean(xs)) / len(xs))))  # noqa: E731
    return (*rate(null), *rate(edge))


def power(spec, effects, studies, seed=1, extend=1.0):
    """Per hypothesis: the share rejected as claimed, negligible, and the mean sample spent."""
    rng = np.random.default_rng(seed)
    runs = [run_study(rng, spec, effects, extend=extend) for _ in range(studies)]
    out = []
    for i, (_, plan, _) in enumerate(spec):
        hs = [r[i] for r in runs]
        out.append({"effect": effects[i], "power": np.mean([h.direction > 0 for h in hs]),
                    "negligible": np.mean([bool(h.negligible_at) for h in hs]),
                    "sample": np.mean([plan[len(h.looks) - 1] for h in hs]), "cap": plan[-1]})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=20000, help="simulated studies per scenario")
    p.add_argument("--extend", type=float, default=0.5,
                   help="share of the open hypotheses a later look extends (best chance first)")
    args = p.parse_args(argv)
    start = time.time()
    print(f"schedule: seeds {SEEDS}, images {IMAGES}; later looks extend {args.extend:.0%} of the "
          "open hypotheses", flush=True)
    for name, spec in FAMILIES.items():
        fwer, se, neg, neg_se = error_rates(spec, args.studies, extend=args.extend)
        print(f"{name}: false rejections {fwer:.4f} (MC SE {se:.4f}); false negligible at the "
              f"margin {neg:.4f} (MC SE {neg_se:.4f}); {args.studies:,} studies each", flush=True)
        planted = [1.0 if kind == "seeds" else 0.03 for kind, _, _ in spec]
        planted[0] = 2.0 if spec[0][0] == "seeds" else 0.05
        for row, (kind, _, _) in zip(power(spec, planted, args.studies // 4), spec):
            print(f"  planted {row['effect']:+.2f} ({kind}): power {row['power']:.3f}, negligible "
                  f"{row['negligible']:.3f}, mean sample {row['sample']:,.0f} of {row['cap']:,}")
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
