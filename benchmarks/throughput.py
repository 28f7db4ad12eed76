"""Throughput of the hot loops, side by side in one process, as ratios to a raw reference.

    python benchmarks/throughput.py --data-root ../shared/data --json benchmarks/results/throughput.json

Measured (images/second, median of --repeats timed runs after a warm-up):
- raw reference: torchvision's resnet18, forward + backward + SGD step on one in-memory batch;
- our ResNet18 in the same raw step, and train.py's loop (train_one_epoch) on real CIFAR-10
  batches, data loading, augmentation, metrics and progress bar included, in fp32 and with
  bf16 autocast (--amp bf16; channels-last always);
- one PGD step of attacks.pgd_attack vs one raw forward+backward, and vs torchattacks' PGD;
- evaluation: clean forward and PGD-k, per image;
- the hardware's reach: the floating-point operations of one training step (counted by
  torch.utils.flop_counter) against the GFLOP/s of a large matrix product in the same
  precision (fp32, bf16), so each loop's speed reads as a fraction of what this machine
  can do at all.
Every measurement is warmed up until two calls agree, and the output names the CPU and
its flags. A busy machine (load average before the start, repeats that disagree, load at
the end above our threads) is reported as a WARNING (--strict: exit status 3).
Paired measurements are interleaved (A, B, A, B, ...) so drift in the machine's speed hits
both sides alike. The machines are noisy: compare ratios from one run, never absolute
numbers across runs.
"""

import argparse
import itertools
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from attacks import pgd_attack  # noqa: E402
from losses import LabelSmoothingCrossEntropy  # noqa: E402
from models import resnet18  # noqa: E402


def warm_up(fn, tries=12, tolerance=0.1):
    """Call `fn` until two calls in a row agree within `tolerance`: oneDNN builds its
    primitives per shape, layout and mode on first use, and threads spin up, so the first
    calls of every new measurement are slow by a varying amount."""
    last = None
    for _ in range(tries):
        t0 = time.perf_counter()
        fn()
        now = time.perf_counter() - t0
        if last is not None and abs(now - last) <= tolerance * min(now, last):
            return
        last = now


def interleaved(fns, repeats, settle=False):
    """Seconds of every call of each function in `fns` (a dict), warmed up, then timed in
    alternation (A, B, A, B, ...) so drift in the machine's speed hits all alike. With
    `settle`, one untimed call precedes each timed one: switching between fp32 and bf16
    training makes the first step after the switch slow by a varying amount (measured: a
    bf16 loop alone varies 2% between calls, alternated with fp32 24%)."""
    for fn in fns.values():
        warm_up(fn)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if settle:
                fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def timed(fn, repeats):
    return interleaved({"fn": fn}, repeats)["fn"]


class Timings:
    """Median seconds per measurement, and each one's spread between repeats."""

    def __init__(self):
        self.spread = {}

    def median(self, name, times):
        self.spread[name] = (max(times) - min(times)) / statistics.median(times)
        return statistics.median(times)


def cpu_busy(seconds=1.0):
    """Share of all CPUs' time spent busy over the next `seconds` (Linux /proc/stat), or
    None where that cannot be read. Unlike the load average it does not remember a job
    that just ended, and it sees one that is running now."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def machine_load():
    """(how busy the CPUs were just before the start, reasons to distrust timings taken now)."""
    busy = cpu_busy()
    if busy is None:  # no /proc/stat: the 1-minute load average, which lags by a minute
        load = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0
        busy = load
    return busy, ([f"the CPUs were {100 * busy:.0f}% busy before the benchmark started: another "
                   "process is using them"] if busy > 0.25 else [])


def step_flops(model, x, y):
    """Floating-point operations of one forward + backward (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_gflops(repeats, dtype=torch.float32, n=2048):
    """GFLOP/s of an n x n matrix product in `dtype`, the best of `repeats` warmed-up calls:
    about the most this CPU does with PyTorch in that precision."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / min(timed(lambda: a @ b, repeats)) / 1e9


def profile_step(step, rows):
    """torch.profiler over three calls of `step`: prints the ops that take the time and
    returns the share of self CPU time per kind of op."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=34))
    kinds = {"convolution forward": ("mkldnn_convolution", "_convolution"),
             "convolution backward": ("convolution_backward",),
             "matrix products (fc, 1x1-output convs)": ("aten::mm", "aten::addmm", "aten::bmm"),
             "batch norm": ("batch_norm",),
             "relu, pooling, loss": ("relu", "threshold", "pool", "log_softmax", "nll_loss")}
    total = sum(e.self_cpu_time_total for e in events)
    shares = {kind: sum(e.self_cpu_time_total for e in events
                        if any(k in e.key for k in keys)) / total
              for kind, keys in kinds.items()}
    # the optimizer's own ops (add, mul, ...) match none of the kinds above
    shares["optimizer step (SGD)"] = sum(e.cpu_time_total for e in events
                                         if e.key.startswith("Optimizer.step")) / total
    shares["everything else"] = 1 - sum(shares.values())
    return shares


RAW_STEPS = 5  # raw steps per timed call: one ~0.1 s step alone is too short to time well


def raw_step_fn(model, x, y, steps=RAW_STEPS):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                          fused=x.device.type in train.FUSED_DEVICES)  # as train.py's

    def step():
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return step


def input_grad_fn(model, x, y):
    """One raw forward+backward with respect to the input only (what an attack step needs)."""
    def step():
        xr = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return step


EMULATED_REPEATS = 3  # bf16 timed on a CPU without bf16 instructions: several times slower


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--data-root", default=os.environ.get("DATA_ROOT", "data"),
                   help="folder with cifar10-train.npz (env DATA_ROOT)")
    p.add_argument("--batch-size", type=utils.positive_int, default=128, help="batch size")
    p.add_argument("--batches", type=utils.positive_int, default=10,
                   help="batches of train.py's loop per timed run")
    p.add_argument("--repeats", type=utils.positive_int, default=7,
                   help="timed runs per measurement")
    p.add_argument("--pgd-iters", type=utils.positive_int, default=10, help="k of the PGD-k timings")
    p.add_argument("--profile-rows", type=utils.nonnegative_int, default=15,
                   help="print torch.profiler's top N ops of our raw training step (0: skip)")
    p.add_argument("--max-spread", type=utils.positive_float, default=0.25,
                   help="warn when a measurement's repeats differ by more than this fraction "
                        "of their median")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 3 instead of only warning when the machine is busy")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def bf16_kind():
    """'native' where the CPU has bf16 instructions, else 'emulated' (oneDNN converts, and a
    bf16 step is several times slower than fp32: timed briefly, and labelled so)."""
    return "native" if utils.bf16_autocast_reason(torch.device("cpu")) else "emulated"


def measure_raw_steps(args, x, x_cl, y, ips, t):
    """A raw training step of torchvision's ResNet18 and of ours (fp32)."""
    tv = torchvision.models.resnet18(num_classes=10)
    ours = resnet18().to(memory_format=torch.channels_last)
    raw = interleaved({"tv": raw_step_fn(tv, x, y), "ours": raw_step_fn(ours, x_cl, y)},
                      args.repeats)
    ips["raw_torchvision_fp32"] = RAW_STEPS * x.shape[0] / t.median("raw_torchvision_fp32", raw["tv"])
    ips["raw_ours_fp32"] = RAW_STEPS * x.shape[0] / t.median("raw_ours_fp32", raw["ours"])


def measure_train_loops(args, ips, t, bf16):
    """train.py's own loop on real CIFAR-10 batches, fp32 and bf16 autocast (alternated
    where bf16 is native; a few repeats of its own where it is emulated)."""
    splits = datasets.build_splits("cifar10", args.data_root, download=False)
    loader = datasets.batch_loader(splits.train, args.batch_size, shuffle=True, drop_last=True)

    def train_loop(amp):
        # a constant schedule: the warm-up calls the loop until two calls agree, so no
        # schedule sized for a number of steps in advance (one-cycle) is sure to last; the
        # schedule costs nothing measurable, and a moderate lr keeps the weights finite
        targs = train.parse_args(["--epochs", "1", "--amp", amp, "--schedule", "constant",
                                  "--lr", "0.02"])
        targs.amp_used = amp
        model = resnet18(mean=splits.info["mean"], std=splits.info["std"]).to(
            memory_format=torch.channels_last)
        optimizer = train.build_optimizer(targs, model)
        scheduler = train.build_scheduler(targs, optimizer, args.batches)
        criterion = LabelSmoothingCrossEntropy(0.0)
        return lambda: train.train_one_epoch(
            model, itertools.islice(loader, args.batches), optimizer, scheduler, criterion,
            targs, torch.device("cpu"), 1)

    if bf16 == "native":
        loops = interleaved({"train_loop_fp32": train_loop("off"),
                             "train_loop_bf16": train_loop("bf16")}, args.repeats, settle=True)
    else:
        loops = {"train_loop_fp32": timed(train_loop("off"), args.repeats),
                 "train_loop_bf16": timed(train_loop("bf16"), min(args.repeats, EMULATED_REPEATS))}
    ips.update({key: args.batch_size * args.batches / t.median(key, v) for key, v in loops.items()})


def measure_attacks(args, x_cl, y, results, t):
    """One PGD step against one raw input-gradient pass, and against torchattacks' PGD."""
    import torchattacks

    ours = resnet18().to(memory_format=torch.channels_last).eval()
    ta = torchattacks.PGD(ours, eps=8 / 255, alpha=2 / 255, steps=args.pgd_iters)
    attack = interleaved({
        "raw_input_grad": input_grad_fn(ours, x_cl, y),
        "pgd_k": lambda: pgd_attack(ours, x_cl, y, 8 / 255, 2 / 255, args.pgd_iters),
        "torchattacks_pgd_k": lambda: ta(x_cl, y)}, args.repeats)
    results["seconds"].update({key: t.median(key, v) for key, v in attack.items()})
    ips = results["images_per_s"]
    with torch.no_grad():
        ips["eval_clean"] = x_cl.shape[0] / t.median("eval_clean", timed(lambda: ours(x_cl), args.repeats))
    ips[f"eval_pgd{args.pgd_iters}"] = x_cl.shape[0] / results["seconds"]["pgd_k"]


def measure_hardware(args, x_cl, y, results, bf16):
    """How much of the machine a training step uses: its FLOPs against a matmul's peak."""
    ips, bs = results["images_per_s"], x_cl.shape[0]
    flops = step_flops(resnet18().to(memory_format=torch.channels_last), x_cl, y) / bs
    bf16_repeats = args.repeats if bf16 == "native" else min(args.repeats, EMULATED_REPEATS)
    peak = {"fp32": matmul_gflops(args.repeats), "bf16": matmul_gflops(bf16_repeats, torch.bfloat16)}
    results["hardware"] = {
        "train_step_gflop_per_image": flops / 1e9,
        "matmul_fp32_gflops": peak["fp32"], "matmul_bf16_gflops": peak["bf16"],
        "raw_ours_gflops": flops * ips["raw_ours_fp32"] / 1e9,
        "train_loop_fp32_gflops": flops * ips["train_loop_fp32"] / 1e9,
        "train_loop_bf16_gflops": flops * ips["train_loop_bf16"] / 1e9,
        # what 8 CIFAR-10 epochs (45,000 images each) would take at the fp32 matmul's speed
        "min_minutes_8_cifar10_epochs": 8 * 45000 * flops / (peak["fp32"] * 1e9) / 60,
    }
    return peak


def ratios(args, results, peak):
    ips, seconds, hw = results["images_per_s"], results["seconds"], results["hardware"]
    return {
        "train_loop_vs_raw": ips["train_loop_fp32"] / ips["raw_torchvision_fp32"],
        "raw_ours_vs_raw_torchvision": ips["raw_ours_fp32"] / ips["raw_torchvision_fp32"],
        "train_loop_bf16_vs_fp32": ips["train_loop_bf16"] / ips["train_loop_fp32"],
        "pgd_step_vs_raw_input_grad": (seconds["pgd_k"] / args.pgd_iters) / seconds["raw_input_grad"],
        "pgd_vs_torchattacks": seconds["pgd_k"] / seconds["torchattacks_pgd_k"],
        "eval_clean_vs_raw_train_step": ips["eval_clean"] / ips["raw_ours_fp32"],
        "train_loop_fp32_vs_fp32_matmul_peak": hw["train_loop_fp32_gflops"] / peak["fp32"],
        "train_loop_bf16_vs_bf16_matmul_peak": hw["train_loop_bf16_gflops"] / peak["bf16"],
    }


def check_trust(args, t, warnings):
    """Warnings for repeats that disagree and for a machine something else ran on."""
    noisy = {k: v for k, v in t.spread.items() if v > args.max_spread}
    if noisy:
        warnings.append("repeats disagree by more than " f"{100 * args.max_spread:.0f}%: "
                        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in noisy.items()))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load_after > torch.get_num_threads() + 0.75:  # more ran than our own threads
        warnings.append(f"1-minute load average {load_after:.2f} at the end, above this "
                        f"benchmark's {torch.get_num_threads()} threads: something else ran")
    return warnings


def print_results(results, t):
    emulated = " (emulated)" if results["bf16"] == "emulated" else ""
    print(f"{'measurement':36s} {'images/s':>10s} {'spread':>7s}")
    for k, v in results["images_per_s"].items():
        spread = t.spread.get(k, t.spread.get("pgd_k") if k.startswith("eval_pgd") else None)
        label = k + (emulated if "bf16" in k else "")
        print(f"{label:36s} {v:10.1f} {100 * spread:6.0f}%")
    print(f"\n{'hardware':36s} {'value':>10s}")
    for k, v in results["hardware"].items():
        print(f"{k + (emulated if 'bf16' in k else ''):36s} {v:10.2f}")
    if "profile_self_cpu_share" in results:
        print(f"\n{'share of a raw training step':40s} {'%':>6s}")
        for k, v in results["profile_self_cpu_share"].items():
            print(f"{k:40s} {100 * v:6.1f}")
    print(f"\n{'ratio':36s} {'value':>10s}")
    for k, v in results["ratios"].items():
        print(f"{k + (emulated if 'bf16' in k else ''):36s} {v:10.3f}")
    for w in results["warnings"]:
        print(f"\nWARNING: {w}. These timings are not trustworthy; re-run on an idle machine.")


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    busy_before, warnings = machine_load()
    torch.manual_seed(0)
    bs = args.batch_size
    x, y = torch.rand(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cpu, bf16 = utils.cpu_info(), bf16_kind()
    print(f"CPU: {cpu['model']}; flags: {', '.join(cpu['flags']) or 'none of ' + str(utils.CPU_FLAGS)}; "
          f"bf16 {bf16}; torch threads {torch.get_num_threads()}; CPUs {100 * busy_before:.0f}% "
          "busy before the start", flush=True)
    results = {"batch_size": bs, "torch": str(torch.__version__), "cpu": cpu, "bf16": bf16,
               "threads": torch.get_num_threads(), "cpu_busy_before": busy_before,
               "images_per_s": {}, "seconds": {}}
    t = Timings()
    measure_raw_steps(args, x, x_cl, y, results["images_per_s"], t)
    measure_train_loops(args, results["images_per_s"], t, bf16)
    measure_attacks(args, x_cl, y, results, t)
    peak = measure_hardware(args, x_cl, y, results, bf16)
    if args.profile_rows:
        step = raw_step_fn(resnet18().to(memory_format=torch.channels_last), x_cl, y)
        results["profile_self_cpu_share"] = profile_step(step, args.profile_rows)
    results["ratios"] = ratios(args, results, peak)
    results["spread"] = t.spread
    results["warnings"] = check_trust(args, t, warnings)
    results["wall_time_s"] = time.time() - start
    print_results(results, t)
    print(f"\nwall time {results['wall_time_s']:.0f} s", flush=True)
    if args.json:
        utils.save_json(results, args.json)
    if results["warnings"] and args.strict:
        raise SystemExit(3)
    return results


if __name__ == "__main__":
    main()
