"""Throughput of the hot loops, side by side in one process, as ratios to a raw reference.

    python benchmarks/throughput.py --data-root ../shared/data --json benchmarks/results/throughput.json

Measured (images/second, median of --repeats timed runs after a warm-up):
- raw reference: torchvision's resnet18, forward + backward + SGD step on one in-memory batch;
- our ResNet18 in the same raw step, and train.py's loop (train_one_epoch) on real CIFAR-10
  batches, data loading, augmentation, metrics and progress bar included, in fp32 and with
  --amp (bf16 autocast; channels-last always);
- one PGD step of attacks.pgd_attack vs one raw forward+backward, and vs torchattacks' PGD;
- evaluation: clean forward and PGD-k, per image;
- the hardware's reach: the floating-point operations of one training step (counted by
  torch.utils.flop_counter) against the GFLOP/s of a large fp32 matrix product, so each
  loop's speed reads as a fraction of what this machine can do at all.
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


def timed(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns, repeats, warmup=1):
    """Median seconds of each function in `fns` (a dict), timed in alternation."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def step_flops(model, x, y):
    """Floating-point operations of one forward + backward (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_gflops(repeats, n=2048):
    """fp32 GFLOP/s of an n x n matrix product: about the most this CPU does with PyTorch."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / timed(lambda: a @ b, repeats) / 1e9


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


def raw_step_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--data-root", default=os.environ.get("DATA_ROOT", "data"),
                   help="folder with cifar10-train.npz (env DATA_ROOT)")
    p.add_argument("--batch-size", type=utils.positive_int, default=128, help="batch size")
    p.add_argument("--batches", type=utils.positive_int, default=20,
                   help="batches of train.py's loop per timed run")
    p.add_argument("--repeats", type=utils.positive_int, default=5, help="timed runs per measurement")
    p.add_argument("--pgd-iters", type=utils.positive_int, default=10, help="k of the PGD-k timings")
    p.add_argument("--profile-rows", type=utils.nonnegative_int, default=15,
                   help="print torch.profiler's top N ops of our raw training step (0: skip)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    bs = args.batch_size
    x, y = torch.rand(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    x_cl = x.contiguous(memory_format=torch.channels_last)

    tv = torchvision.models.resnet18(num_classes=10)
    ours = resnet18().to(memory_format=torch.channels_last)
    results = {"batch_size": bs, "torch": str(torch.__version__),
               "threads": torch.get_num_threads(), "images_per_s": {}, "seconds": {}}
    ips = results["images_per_s"]

    raw = interleaved({"tv": raw_step_fn(tv, x, y), "ours": raw_step_fn(ours, x_cl, y)},
                      args.repeats)
    ips["raw_torchvision_fp32"] = bs / raw["tv"]
    ips["raw_ours_fp32"] = bs / raw["ours"]

    # train.py's own loop on real CIFAR-10 batches, fp32 and with --amp (bf16 autocast)
    splits = datasets.build_splits("cifar10", args.data_root, download=False)
    loader = datasets.batch_loader(splits.train, bs, shuffle=True, drop_last=True)

    def train_loop(flags):
        targs = train.parse_args(["--epochs", "1"] + flags)
        model = resnet18(mean=splits.info["mean"], std=splits.info["std"]).to(
            memory_format=torch.channels_last)
        optimizer = train.build_optimizer(targs, model)
        scheduler = train.build_scheduler(targs, optimizer, args.batches * (args.repeats + 1))
        criterion = LabelSmoothingCrossEntropy(0.0)
        return lambda: train.train_one_epoch(
            model, itertools.islice(loader, args.batches), optimizer, scheduler, criterion,
            targs, torch.device("cpu"), 1)

    loops = interleaved({"train_loop_fp32": train_loop([]),
                         "train_loop_amp": train_loop(["--amp"])}, args.repeats)
    ips.update({key: bs * args.batches / t for key, t in loops.items()})

    # attacks: one PGD step vs one raw input-gradient pass, and vs torchattacks
    import torchattacks
    ours.eval()
    t_grad = timed(input_grad_fn(ours, x_cl, y), args.repeats)
    t_pgd1 = timed(lambda: pgd_attack(ours, x_cl, y, 8 / 255, 2 / 255, 1), args.repeats)
    ta = torchattacks.PGD(ours, eps=8 / 255, alpha=2 / 255, steps=args.pgd_iters)
    pgd = interleaved({"ours": lambda: pgd_attack(ours, x_cl, y, 8 / 255, 2 / 255, args.pgd_iters),
                       "torchattacks": lambda: ta(x_cl, y)}, args.repeats)
    t_pgdk, t_ta = pgd["ours"], pgd["torchattacks"]
    results["seconds"].update(raw_input_grad=t_grad, pgd_1_step=t_pgd1,
                              pgd_k=t_pgdk, torchattacks_pgd_k=t_ta)
    with torch.no_grad():
        ips["eval_clean"] = bs / timed(lambda: ours(x_cl), args.repeats)
    ips[f"eval_pgd{args.pgd_iters}"] = bs / t_pgdk

    # how much of the machine a training step uses
    flops = step_flops(resnet18().to(memory_format=torch.channels_last), x_cl, y) / bs
    peak = matmul_gflops(args.repeats)
    results["hardware"] = {
        "train_step_gflop_per_image": flops / 1e9,
        "matmul_fp32_gflops": peak,
        "raw_ours_gflops": flops * ips["raw_ours_fp32"] / 1e9,
        "train_loop_gflops": flops * ips["train_loop_fp32"] / 1e9,
        # what 8 CIFAR-10 epochs (45,000 images each) would take at the matmul's speed
        "min_minutes_8_cifar10_epochs": 8 * 45000 * flops / (peak * 1e9) / 60,
    }

    if args.profile_rows:
        step = raw_step_fn(resnet18().to(memory_format=torch.channels_last), x_cl, y)
        results["profile_self_cpu_share"] = profile_step(step, args.profile_rows)

    results["ratios"] = {
        "train_loop_vs_raw": ips["train_loop_fp32"] / ips["raw_torchvision_fp32"],
        "raw_ours_vs_raw_torchvision": ips["raw_ours_fp32"] / ips["raw_torchvision_fp32"],
        "train_loop_amp_vs_raw": ips["train_loop_amp"] / ips["raw_torchvision_fp32"],
        "pgd_step_vs_raw_step": (t_pgdk / args.pgd_iters) / t_grad,
        "pgd_step_vs_torchattacks": t_pgdk / t_ta,
        "raw_ours_vs_matmul_peak": results["hardware"]["raw_ours_gflops"] / peak,
        "train_loop_vs_matmul_peak": results["hardware"]["train_loop_gflops"] / peak,
    }
    print(f"{'measurement':36s} {'images/s':>10s}")
    for k, v in ips.items():
        print(f"{k:36s} {v:10.1f}")
    print(f"\n{'hardware':36s} {'value':>10s}")
    for k, v in results["hardware"].items():
        print(f"{k:36s} {v:10.2f}")
    if "profile_self_cpu_share" in results:
        print(f"\n{'share of a raw training step':40s} {'%':>6s}")
        for k, v in results["profile_self_cpu_share"].items():
            print(f"{k:40s} {100 * v:6.1f}")
    print(f"\n{'ratio':36s} {'value':>10s}")
    for k, v in results["ratios"].items():
        print(f"{k:36s} {v:10.3f}")
    if args.json:
        utils.save_json(results, args.json)
    return results


if __name__ == "__main__":
    main()
