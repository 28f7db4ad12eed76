"""The study in looks (issue 41): the matrix at each look of a profile's schedule, and the runs a
later look adds only for the claims still open.

A profile's `looks` gives the seeds and the images at each look: look k trains seeds 0..s_k-1
of every seeded group (ablations, the seeded CIFAR-10 models) and scales every evaluation's
image samples by images_k / images_1 (capped at the whole test split), so each look's sample
extends the last one's (the evaluations score a prefix of one seeded order) and the report
judges every claim at each look taken (reporting/looks.py, sequential.py). From look 2 on,
`pruned` extends only what the claims still open read (a decided, negligible or futile claim
adds nothing; a non-binding stop costs no error).
"""

import argparse
import math
import os
import re

import run_contract
import utils

from study.plan import build_matrix

TEST_SPLIT = 10000  # the largest test split an evaluation scores (CIFAR-10's, MNIST's)


def count(profile):
    """How many looks the profile's schedule has (1 without one)."""
    return len(profile.get("looks", {}).get("seeds", ())) or 1


def profile_at(profile, look):
    """The profile's budgets at `look` (1-based): its seeds, and its evaluation samples scaled."""
    schedule = profile.get("looks")
    if not schedule:
        return profile
    if not 1 <= look <= count(profile):
        raise SystemExit(f"error: --look {look}: the profile has looks 1..{count(profile)}")
    seeds = list(range(schedule["seeds"][look - 1]))
    model_seeds = list(range(schedule.get("model_seeds", schedule["seeds"])[look - 1]))
    return {**profile, "seeds": seeds, "model_seeds": model_seeds if "model_seeds" in profile else None,
            "eval": _eval_at(profile, look), "look": look,
            "look_samples": [samples(profile, k) for k in range(1, count(profile) + 1)]}


def _eval_at(profile, look):
    """The evaluation budget at `look`: every image sample scaled by images_k / images_1."""
    schedule = profile["looks"]
    factor = schedule["images"][look - 1] / schedule["images"][0]
    e = dict(profile["eval"])
    e["max_batches"] = math.ceil(e["max_batches"] * factor)
    for key in ("autoattack_samples", "corruption_samples"):
        if e.get(key):
            n = round(e[key] * factor)
            e[key] = 0 if n >= TEST_SPLIT else n  # 0: the whole split
    # AutoAttack is most of an evaluation's cost, and a corrupted set is built once per size:
    # their own sizes where the schedule gives them
    for key, sizes in (("autoattack_samples", "autoattack"), ("corruption_samples", "corruptions")):
        if sizes in schedule:
            e[key] = schedule[sizes][look - 1]
    return e


def samples(profile, look):
    """{sample: images scored at `look`} for the samples that grow with the looks (None: the
    whole split): the attacked batches, AutoAttack's sample, the corruptions' sample. The
    report cuts each evaluation's per-image outcomes to these to see an earlier look."""
    e = _eval_at(profile, look)
    return {"attacks": e["max_batches"] * e["batch_size"], "autoattack": e.get("autoattack_samples") or None,
            "corruptions": e.get("corruption_samples") or None}


def _matrix(args, profile, look):
    at = profile_at(profile, look)
    look_args = argparse.Namespace(**{**vars(args), "seeds": at["seeds"]})
    return build_matrix(look_args, {k: v for k, v in at.items() if v is not None})


def matrix(args, profile, look):
    """The runs of `look`: the matrix of its seeds and image samples, each run's fields naming
    the look it joined the study at (`look`), by which the report sees the earlier looks."""
    runs = _matrix(args, profile, look)
    if profile.get("looks"):
        first = {}
        for k in range(look, 0, -1):
            first.update({r.name: k for r in (runs if k == look else _matrix(args, profile, k))})
        for run in runs:
            run.fields["look"] = first[run.name]
    return runs


def added(args, profile, look):
    """The runs `look` adds to the one before (new, or a new command: a larger sample)."""
    runs = matrix(args, profile, look)
    if look == 1:
        return runs
    before = {(r.name, r.command) for r in matrix(args, profile, look - 1)}
    return [r for r in runs if (r.name, r.command) not in before]


def _stem(name):
    """A run's name without its seed: the runs a new seed of it extends."""
    return re.sub(r"_s\d+$", "", name)


def _closure(by_name, names):
    """`names` with every run they read, as the look declares them."""
    keep, stack = set(names), list(names)
    while stack:
        for need in by_name[stack.pop()].needs_all:
            if need not in keep:
                keep.add(need)
                stack.append(need)
    return keep


def blocks(full, reads, before, seeds_only=False):
    """The runs of a look that extend what a claim read (`reads`, at the look before, whose
    runs are `before`): every new seed of one, and each of them at its larger sample unless
    the claim's tests are all across seeds (`seeds_only`: there a larger sample per seed buys
    little and a seed all of it), with what they read."""
    stems = {_stem(n) for n in reads}
    by_name = {r.name: r for r in full}
    return frozenset(_closure(by_name, [
        r.name for r in full if (r.name in reads and not seeds_only)
        or (_stem(r.name) in stems and (r.name not in before or not seeds_only))]))


def joining(full, before):
    """The models a look adds (no earlier look had a seed of them): one block per evaluation
    of one, with the model and what it reads (a Circle Loss model: the sweep that picks its
    weight)."""
    known = {_stem(n) for n in before}
    new = [r for r in full if _stem(r.name) not in known]
    by_name = {r.name: r for r in full}
    found = [frozenset(_closure(by_name, [r.name])) for r in new if r.script == "eval"]
    covered = set().union(*found, set())
    return found + [frozenset(_closure(by_name, [r.name])) for r in new if r.name not in covered]


def pruned(args, profile, look, open_claims, choose=None):
    """The runs of `look` when each look extends only what the claims still open read:
    `open_claims(k, runs)` judges look k on its runs (as they ran) and returns the claims
    still open (reporting.claims.Open: the claim, the runs it read, its chance of a verdict at
    the next look, whether its tests are all across seeds). Each open claim's block extends
    what it read (`blocks`); each model the schedule adds joins in a block of its own
    (`joining`). `choose(k, planning, full, before)` returns the blocks look k runs, calling
    `planning()` for (claims, their blocks, the joining blocks) when it plans the look
    (default `every` block; in a pipeline run, `chooser`'s); every other run keeps the command
    it ran with, and is up to date."""
    runs = matrix(args, profile, 1)
    for k in range(2, look + 1):
        full, before = {r.name: r for r in matrix(args, profile, k)}, {r.name: r for r in runs}

        def planning(k=k, runs=runs, full=full, before=before):
            claims = open_claims(k - 1, runs)
            return (claims, {c.claim: blocks(full.values(), c.reads, before, c.seeds_only) for c in claims},
                    joining(full.values(), before))
        keep = set().union(*(choose or every)(k, planning, full, before), set())
        runs = [r if r.name in keep else before[r.name] for r in full.values()
                if r.name in keep or r.name in before]
    return runs


def every(k, planning, full, before):
    """Every open claim's block and every joining model: a look without a budget or a plan."""
    _, extend, joins = planning()
    return [*extend.values(), *joins]


def select(claims, extend, joins, seconds, left):
    """Which blocks a look under a budget runs, greedily: the open claims by their chance of a
    verdict at this look per second of the runs they add (`seconds`: {run the look adds or
    re-runs: its estimated seconds, or None without estimates}; shared runs counted once),
    while the seconds `left` cover them; then the claims with nothing tested yet, then the
    models the look adds, in the schedule's order. A claim left out stops: no later look
    extends it (a non-binding stop, so the error rate holds). Returns (the blocks chosen, one
    row per claim and per joining block: what it was, its chance, the runs it adds, their
    minutes (None without estimates), and whether it ran)."""
    picked, chosen, rows = set(), [], []
    known = all(s is not None for s in seconds.values())

    def cost(block):
        return sum(seconds.get(n) or 0.0 for n in block - picked)

    def take(block, row):
        fits = cost(block) <= left - sum(seconds.get(n) or 0.0 for n in picked)
        rows.append({**row, "runs": sorted(block & seconds.keys()),
                     "minutes": round(cost(block) / 60, 1) if known else None, "extended": fits})
        if fits:
            picked.update(block)
            chosen.append(block)

    scored = [c for c in claims if math.isfinite(c.chance)]
    while scored:
        best = max(scored, key=lambda c: c.chance / max(cost(extend[c.claim]), 1.0))
        scored.remove(best)
        take(extend[best.claim], {"claim": best.claim, "chance": round(best.chance, 3)})
    for c in claims:
        if not math.isfinite(c.chance):
            take(extend[c.claim], {"claim": c.claim, "chance": None})
    for block in joins:
        take(block, {"joining": sorted(block), "chance": None})
    return chosen, rows


def plan_path(checkpoints, look):
    return os.path.join(checkpoints, run_contract.LOOK_PLANS, f"look_{look}.json")


def last_planned(folder):
    """The last look whose plan `folder` (a checkpoints folder, or a report's records) holds;
    1 where none is."""
    plans = os.path.join(folder, run_contract.LOOK_PLANS)
    found = [int(m.group(1)) for name in (os.listdir(plans) if os.path.isdir(plans) else ())
             if (m := re.fullmatch(r"look_(\d+)\.json", name))]
    return max(found, default=1)


def recorded(checkpoints, look):
    """How look `look` was planned ({"look", "budget_minutes", "spent_minutes": what the looks
    before took, "estimated_minutes": their --plan estimate here then, "calibration": the
    first over the second, which the plan's costs were scaled by, "rows"}), or None."""
    path = plan_path(checkpoints, look)
    return utils.load_json(path) if os.path.exists(path) else None


def _spent(previous, before, took, estimate):
    """(seconds the looks so far took, their estimate here or None): the runs as they ran at
    the last look (`before`), or, after a planned look (`previous`), what its plan counted
    before it plus the runs it ran, whose records replaced those of the runs they re-ran."""
    names = (set().union(*(r["runs"] for r in previous["rows"] if r["extended"]), set()) & before.keys()
             if previous else before.keys())
    ran = took([before[n] for n in names]) if took else {}
    done, guess = sum(ran.values()), estimate and sum(estimate(before[n]) for n in ran)
    if previous:
        done += 60 * previous["spent_minutes"]
        guess = guess and previous.get("estimated_minutes") and guess + 60 * previous["estimated_minutes"]
    return done, guess


def chooser(checkpoints, budget=None, estimate=None, took=None, unfinished=None, persist=False,
            budget_why="--budget", factor=1.0):
    """The `choose` of `pruned` for a pipeline run. A look planned before runs the runs its
    plan recorded (a resumed look neither re-plans on a spent budget nor re-judges the look
    before it, whose records its own runs have since replaced). Otherwise the look before must
    have finished (`unfinished(runs)`: the names of those still to run; planning on part of it
    is refused), and under a budget (`budget` minutes; `estimate(run)` its seconds,
    `took(runs)` {name: seconds} of those that ran; `factor` what runs took against their
    estimate, which the costs are scaled by) `select` picks the blocks; without one
    every block runs. The plan is recorded under `checkpoints` when `persist` (a run of the
    look; never --list or --plan), with what the looks so far took against their estimate
    here and where the budget came from (`budget_why`), and claims a look left out stay out of
    every later one."""
    def choose(k, planning, full, before):
        plan = recorded(checkpoints, k)
        if plan is not None:
            return [frozenset(row["runs"]) for row in plan["rows"] if row["extended"]]
        waiting = unfinished(list(before.values())) if unfinished else []
        if waiting:
            message = (f"look {k} is planned from look {k - 1}'s verdicts, and {len(waiting)} of look "
                       f"{k - 1}'s runs have not finished ({', '.join(waiting[:3])}"
                       f"{', ...' if len(waiting) > 3 else ''})")
            if persist:
                raise SystemExit(f"error: {message}: run look {k - 1} to its end first (--look {k - 1})")
            print(f"NOTE: {message}: this plan of look {k} is provisional", flush=True)
        claims, extend, joins = planning()
        stopped = {row["claim"] for j in range(2, k) for row in (recorded(checkpoints, j) or {}).get("rows", ())
                   if "claim" in row and not row["extended"]}
        claims = [c for c in claims if c.claim not in stopped]
        changed = {n: r for n, r in full.items() if n not in before or r.command != before[n].command}
        seconds = {n: estimate(r) * factor if estimate else None for n, r in changed.items()}
        done, estimated = _spent(recorded(checkpoints, k - 1), before, took, estimate)
        left = 60 * budget - done if budget else math.inf
        chosen, rows = select(claims, extend, joins, seconds, left)
        if persist:
            utils.save_json({"look": k, "budget_minutes": budget, "budget_why": budget and budget_why,
                             "spent_minutes": round(done / 60, 1),
                             "estimated_minutes": estimated and round(estimated / 60, 1),
                             "calibration": round(factor, 3), "rows": rows},
                            plan_path(checkpoints, k))
        _say(k, rows, budget, done, plan_path(checkpoints, k) if persist else None)
        return chosen
    return choose


def _say(k, rows, budget, done, path):
    """The look's plan, one line per claim and joining block; where it was recorded (`path`),
    or that it was not (--plan, --list)."""
    extended = [r for r in rows if "claim" in r and r["extended"]]
    print(f"look {k} planned from look {k - 1}'s verdicts: {len(extended)} of "
          f"{sum('claim' in r for r in rows)} open claims extended, "
          f"{sum(r['extended'] for r in rows if 'joining' in r)} of {sum('joining' in r for r in rows)} "
          "joining models" + (f", within --budget {budget:g} min ({done / 60:.0f} spent)" if budget else "")
          + (f" ({path})" if path else " (not recorded: only a run of the look records its plan)"),
          flush=True)
    for row in rows:
        chance = "-" if row["chance"] is None else f"{row['chance']:.2f}"
        minutes = "-" if row["minutes"] is None else f"{row['minutes']:.1f} min"
        what = row.get("claim") or "joining: " + ", ".join(row["joining"])
        print(f"  {'extended' if row['extended'] else 'left out':8s}  chance {chance:>4s}  {minutes:>9s}  "
              f"{what}", flush=True)
