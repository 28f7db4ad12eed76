"""How far above its bound each "it learns" case lands, over seeds and precisions.

    DATA_ROOT=../shared/data python benchmarks/learning_margins.py --seeds 0,1,2,3,4

Runs every case of tests/learning_cases.py with each seed in fp32 (--amp off) and bf16
(--amp bf16), one after another in this process, and prints the test accuracy of each with
the min / median / max and the bound, naming the CPU. A test bound is sound where the
minimum clears it by a margin: a CPU of another kind shifts the arithmetic as a seed does.
It exits with status 1, naming them, when any run does not clear its bound.

It is also where the long real-data learning check runs (the suite stays near 5 minutes):

    DATA_ROOT=../shared/data python benchmarks/learning_margins.py --cases mnist_6000_1_epoch --seeds 0 --precisions off

trains on 6,000 real MNIST images for one epoch and checks the 10,000-image test split
clears 95% (45-80 s by CPU kind).
"""

import argparse
import os
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import learning_cases  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402


def measure(name, seeds, precisions, folders):
    rows = {}
    for amp in precisions:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as out:
                argv = learning_cases.argv(name, seed, **folders) + ["--amp", amp, "--out-dir", out]
                rows[amp, seed] = train.main(argv)["test_accuracy"]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--precisions", default="off,bf16", help="--amp values to run")
    p.add_argument("--cases", nargs="*", default=list(learning_cases.CASES), help="which cases")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory() as svhn:
        from test_datasets import write_svhn_fixture
        write_svhn_fixture(svhn)
        folders = {"svhn": svhn, "data": os.environ.get("DATA_ROOT", "data")}
        results = {}
        for name in args.cases:
            if "{data}" in learning_cases.CASES[name].argv and not os.environ.get("DATA_ROOT"):
                print(f"{name}: skipped (set DATA_ROOT)")
                continue
            results[name] = measure(name, seeds, precisions, folders)
    cpu = utils.cpu_info()
    print(f"\nCPU: {cpu['model']} ({', '.join(cpu['flags'])}); torch threads "
          f"{torch.get_num_threads()}")
    below = []  # runs that do not clear their bound, as the tests assert it (accuracy > bound)
    for name, rows in results.items():
        accs = list(rows.values())
        bound = learning_cases.CASES[name].bound
        per = "; ".join(f"{amp}: " + " ".join(f"{100 * rows[amp, s]:.1f}" for s in seeds)
                        for amp in precisions)
        print(f"{name}: bound {100 * bound:.0f}%, min {100 * min(accs):.1f} / median "
              f"{100 * statistics.median(accs):.1f} / max {100 * max(accs):.1f}  ({per})")
        below += [f"{name} ({amp}, seed {seed}): {100 * acc:.1f}% <= {100 * bound:.0f}%"
                  for (amp, seed), acc in rows.items() if not acc > bound]
    if args.json:
        utils.save_json({"cpu": cpu, "seeds": seeds, "results": {
            n: {f"{amp}/seed{s}": v for (amp, s), v in r.items()} for n, r in results.items()}},
            args.json)
    if below:
        raise SystemExit("below the bound: " + "; ".join(below))
    return results


if __name__ == "__main__":
    main()
