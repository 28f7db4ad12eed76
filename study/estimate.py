"""`--plan`: every run of a profile with its estimated time on this machine, from a measured
training step, before anything trains."""

import time

import run_contract
from run_contract import Outcome


def seconds_per_image(stems, device="auto", batch_size=128, steps=3):
    """{stem: seconds per training image} of the ResNet18 on this device, from `steps` timed
    SGD steps on random 32x32 batches after one warm-up step, at the precision train.py's
    `--amp auto` picks here; and that precision."""
    import torch
    import torch.nn.functional as F

    import models
    import train
    import utils

    dev = utils.choose_device(device)
    amp, _ = train.resolve_amp("auto", dev)
    rates = {}
    for stem in stems:
        model = models.resnet18(stem=stem).to(dev, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                    fused=dev.type in train.FUSED_DEVICES)  # as train.py's
        x = torch.rand(batch_size, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch_size,), device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates[stem] = (time.perf_counter() - start) / (steps * batch_size)
    return rates, amp


def estimate(run, rates):
    """A run's estimated seconds here: its cost in training-image units at the measured rate."""
    return run.cost * rates[run.stem]


def calibration(runs, rates, took):
    """(recorded seconds / estimated seconds of the runs done, how many): the factor that turns
    --plan's estimates here into what runs take here, for a budget counted in run time (the
    rate measured now scales every estimate alike, so a budget of estimates times this factor
    does not move with it); (1.0, 0) where none is done. `took` is {name: seconds}."""
    done = [r for r in runs if r.name in took and r.status != Outcome.NOT_RUN]
    planned = sum(estimate(r, rates) for r in done)
    return (sum(took[r.name] for r in done) / planned, len(done)) if planned > 0 else (1.0, 0)


def _duration(seconds):
    return f"{seconds / 60:.1f} min" if seconds < 6000 else f"{seconds / 3600:.1f} h"


def print_plan(runs, rates, amp, device, took=None):
    """One line per run (its estimated minutes, what it took where `took` {name: seconds}
    has it: the runs done for the same command, group and command) and the total."""
    total, took = 0.0, took or {}
    print(f"{'run':44s} {'group':12s} {'estimate':>9s} {'took':>9s}  command")
    for run in runs:
        if run.status == Outcome.NOT_RUN:
            print(f"{run.name:44s} {run.group:12s} {'-':>9s} {'-':>9s}  not run: {run.reason}")
            continue
        seconds = estimate(run, rates)
        total += seconds
        done = _duration(took[run.name]) if run.name in took else "-"
        print(f"{run.name:44s} {run.group:12s} {_duration(seconds):>9s} {done:>9s}  {run.command}")
    measured = ", ".join(f"{stem} stem {1 / rate:,.0f} images/s" for stem, rate in rates.items())
    print(f"\nestimated total: {_duration(total)} on this machine ({device}, "
          f"{'bf16 autocast' if amp == 'bf16' else 'fp32'}; measured {measured}, one process). "
          "Training and attack steps only: validation, data loading and process start add to "
          "it; --jobs N divides it across N devices.")
    factor, done = calibration(runs, rates, took)
    if done:
        spent = sum(took[r.name] for r in runs if r.name in took and r.status != Outcome.NOT_RUN)
        print(f"runs done for these commands: {done} of {len(runs)}, {_duration(spent)} "
              f"recorded against {_duration(spent / factor)} estimated ({factor:.2f}x; their "
              "machine and --jobs as they ran, this machine's rate now)")
    return total


# The CPU the quick profile's look 1 is sized for, and its --plan rate measured there (bf16
# autocast; the quick profile's note in study/profiles.py): estimates here convert by the ratio.
REFERENCE_CPU, REFERENCE_RATE = "the 2-core AVX-512/bf16 AMD EPYC", 1400.0


def print_looks(added, rates, look, fixed):
    """The look schedule: what each look adds (runs, estimated time here and on REFERENCE_CPU),
    the running total, and the fixed one-look design (`fixed`: its runs) for comparison."""
    def seconds(runs):
        return sum(estimate(r, rates) for r in runs if r.status != Outcome.NOT_RUN)

    # the ImageNet stem's rate is what the reference rate was measured on
    scale = (1 / rates["imagenet"]) / REFERENCE_RATE if "imagenet" in rates else None
    there = (lambda t: f" / ~{_duration(t * scale)}") if scale else (lambda t: "")
    total = 0.0
    print("\nlooks (each adds seeds, larger image samples and the models it adds; the report "
          "judges every look taken), time here" + (f" / on {REFERENCE_CPU} ({REFERENCE_RATE:,.0f} "
                                                    "images/s)" if scale else "") + ":")
    for k, runs in enumerate(added, 1):
        t = seconds(runs)
        total += t
        print(f"  look {k}{' (this plan)' if k == look else ''}: {len(runs)} runs added, "
              f"{_duration(t)}{there(t)}; {_duration(total)}{there(total)} in all by its end")
    t = seconds(fixed)
    print(f"  the fixed design (the profile without looks, as the committed report ran it): "
          f"{_duration(t)}{there(t)}")
    return total


def cut_to_budget(runs, rates, minutes, factor=1.0):
    """Leave out ("not run", reason "budget: ...") the runs that would take the study past
    `minutes` of summed run time: the recorded time of the runs already done counts first,
    then each remaining run's estimate (times `factor`, `calibration`'s) in matrix order; a
    run that reads one left out is left out by the launcher ("needs ..."). Returns (minutes
    spent or planned, the runs left out)."""
    from study.execution import as_on_disk

    copies, results = as_on_disk(runs)
    spent = sum(r.get("wall_time_s", 0) for r in results.values())
    cut = []
    for run, there in zip(runs, copies):
        if run.status == Outcome.NOT_RUN or there.status in run_contract.FINISHED:
            continue
        seconds = estimate(run, rates) * factor
        if spent + seconds > 60 * minutes:
            run.status = Outcome.NOT_RUN
            run.reason = (f"{run_contract.BUDGET}: --budget {minutes:g} min would be passed (estimated "
                          f"{seconds / 60:.1f} min more after {spent / 60:.1f})")
            cut.append(run.name)
        else:
            spent += seconds
    return spent / 60, cut
