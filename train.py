"""Train the study's ResNet18: one loop for every option of the study.

    python train.py --dataset cifar10 --data-root ../shared/data --epochs 8 \
        --schedule onecycle --nesterov --out-dir checkpoints/cifar10_standard

Adversarial training, label smoothing, Circle Loss, frozen-feature fine-tuning and the
ImageNet-pretrained feature extractor are options of this loop. Every run writes
config.json before its first step, best.pth / last.pth every epoch, the history as
JSON and CSV, training curves, TensorBoard scalars, and final_metrics.json (with the test
accuracy, its interval and ECE). A loss that becomes NaN or inf stops the run with
diverged.json (where, and the command) in place of final_metrics.json. With Circle Loss the
history logs cross-entropy and the unweighted Circle term separately.
"""

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import attacks
import datasets
import metrics
import run_contract
import utils
from losses import CircleLoss, LabelSmoothingCrossEntropy
from models import load_torchvision_weights, resnet18
from plots import plot_training_curves

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEMO_EPOCHS, DEMO_SUBSET, DEMO_BATCH = 5, 2000, 32


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf at (epoch, step of the epoch, global step)."""

    def __init__(self, loss, epoch, step, global_step):
        super().__init__(f"loss became {loss} at epoch {epoch}, step {step} (global step "
                         f"{global_step}); lower --lr or check the data")
        self.record = {"loss": str(loss), "epoch": epoch, "step": step, "global_step": global_step}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="cifar10", choices=tuple(datasets.DOMAINS),
                   help="dataset to train on ('synthetic' is fake data for smoke tests)")
    d.add_argument("--data-root", default=datasets.default_data_root(),
                   help=datasets.DATA_ROOT_HELP)
    d.add_argument("--no-download", action="store_true",
                   help="never try to download a missing dataset")
    d.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="train-time augmentation (crop; flip and colour jitter on CIFAR-10 only)")
    d.add_argument("--color-jitter", type=_below_one("colour jitter"), default=None, metavar="S",
                   help="CIFAR-10 brightness/contrast/saturation jitter: factors drawn from "
                        "[1-S, 1+S] (default: the dataset's, "
                        f"{datasets.DOMAINS['cifar10'].augment['jitter']:g} for cifar10)")
    d.add_argument("--framing", choices=datasets.FRAMINGS, default="mnist",
                   help=datasets.FRAMING_HELP)
    d.add_argument("--train-subset", type=utils.positive_int, default=None,
                   help="train on a seeded subset of N images (default: all)")
    d.add_argument("--val-size", type=utils.positive_int, default=None,
                   help="validation images carved from train (default: min(5000, 10%% of train))")
    d.add_argument("--workers", type=utils.nonnegative_int, default=0,
                   help="data-loading worker processes (0: load in the main process)")

    m = p.add_argument_group("model")
    m.add_argument("--use-bn", type=utils.str2bool, default=None, metavar="{true,false}",
                   help="BatchNorm layers (default: true, or as in --init-from)")
    m.add_argument("--stem", choices=("imagenet", "cifar"), default=None,
                   help="imagenet: 7x7/2 conv + max-pool (fast on CPU); cifar: 3x3/1 conv, "
                        "~10x the compute (default: imagenet, or as in --init-from)")
    m.add_argument("--dropout", type=utils.probability, default=0.0,
                   help="dropout before the classifier")
    m.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from this train.py checkpoint's weights (transfer) (default: "
                        "random initialization)")
    m.add_argument("--freeze-features", action="store_true",
                   help="fit a new classifier (fc, freshly initialised) on the frozen features "
                        "of --init-from or --pretrained-weights; BatchNorm statistics stay frozen")
    m.add_argument("--pretrained-weights", default=None, metavar="PATH",
                   help="torchvision resnet18 ImageNet state dict (.pth) to start from "
                        "(default: none)")

    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=utils.positive_int, default=30, help="training epochs")
    o.add_argument("--batch-size", type=utils.positive_int, default=128, help="batch size")
    o.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer")
    o.add_argument("--lr", type=utils.positive_float, default=None,
                   help="(peak) learning rate (default: 0.1 for sgd, 1e-3 for adam)")
    o.add_argument("--momentum", type=utils.nonnegative_float, default=0.9, help="SGD momentum")
    o.add_argument("--nesterov", action="store_true", help="Nesterov momentum for SGD")
    o.add_argument("--weight-decay", type=utils.nonnegative_float, default=5e-4,
                   help="weight decay")
    o.add_argument("--schedule", choices=("onecycle", "multistep", "constant"),
                   default="onecycle",
                   help="onecycle (default): a quarter of the steps warm up to --lr, then "
                        "cosine decay to ~0, good at any budget; multistep: the study's "
                        "schedule, lr x0.1 at 50%% and 75%% of training (it needs long runs); "
                        "constant: --lr throughout")
    o.add_argument("--label-smoothing", type=_below_one("label smoothing"), default=0.0,
                   help="label smoothing eps (target 1-eps, others eps/(K-1))")
    o.add_argument("--circle-weight", type=utils.nonnegative_float, default=0.0,
                   help="weight of Circle Loss on the penultimate features (0: off)")
    o.add_argument("--circle-m", type=utils.nonnegative_float, default=0.25,
                   help="Circle Loss relaxation margin m")
    o.add_argument("--circle-gamma", type=utils.positive_float, default=256.0,
                   help="Circle Loss scale gamma")

    a = p.add_argument_group("adversarial training")
    a.add_argument("--adv-train", action="store_true",
                   help="replace batches by adversarial ones with probability --adv-prob")
    a.add_argument("--attack", choices=tuple(attacks.ATTACKS), default="pgd",
                   help="training attack: fgsm (the study's, no random start), fgsm_rs (random "
                        "start, one step of --alpha), pgd, noise (random signs)")
    a.add_argument("--eps", type=utils.pixel_value, default=8 / 255,
                   help="L-inf radius in pixel units, e.g. 8/255 or 0.0314 (default: 8/255)")
    a.add_argument("--alpha", type=utils.pixel_value, default=None,
                   help=f"attack step in pixel units (default: {attacks.PGD_STEP_RULE} for pgd, "
                        f"{attacks.FGSM_RS_ALPHA:g} x eps for fgsm_rs)")
    a.add_argument("--iters", type=utils.positive_int, default=7, help="PGD iterations")
    a.add_argument("--adv-prob", type=utils.probability, default=0.5,
                   help="probability that a batch is replaced by its adversarial version")
    a.add_argument("--select-by", choices=("clean", "robust"), default=None,
                   help="what best.pth maximises: validation accuracy (clean) or PGD-10 "
                        "validation accuracy at --eps (robust) (default: robust with "
                        "--adv-train, clean otherwise)")
    a.add_argument("--robust-val-samples", type=utils.nonnegative_int, default=1000,
                   help="validation images attacked with PGD-10 after every epoch of an "
                        "adversarial or --select-by robust run (a fixed seeded sample)")

    r = p.add_argument_group("run")
    r.add_argument("--amp", nargs="?", const="bf16", choices=("auto", "bf16", "off"),
                   default="auto",
                   help="bf16 autocast of the training forward pass: auto (default) uses it on "
                        "CUDA and on CPUs with bf16 instructions (avx512_bf16, amx_bf16), where "
                        "it is faster, and fp32 elsewhere (without them bf16 is emulated and "
                        "several times slower); bare --amp means bf16; what was used is in "
                        "config.json and the log")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--out-dir", default="checkpoints/run", help="where the run writes")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its last.pth (a finished run: check "
                        "the flags and report its result)")
    r.add_argument("--keep-weights", choices=("best", "none"), default="best",
                   help="what stays on disk once the run ends: best (best.pth: the selected "
                        "model's weights, for eval.py and --init-from) or none (only the records: "
                        "config, history, final_metrics). last.pth, the training state for "
                        "--resume, is removed either way")
    r.add_argument("--demo", action="store_true",
                   help=f"tiny budget: {DEMO_EPOCHS} epochs on {DEMO_SUBSET} images (all, if fewer) "
                        f"in batches of {DEMO_BATCH}, unless --epochs/--train-subset/--batch-size "
                        "are given")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)

    if args.demo:
        given = argv if argv is not None else sys.argv[1:]
        if "--epochs" not in given:
            args.epochs = DEMO_EPOCHS
        if "--batch-size" not in given:  # enough steps for BatchNorm's statistics to settle
            args.batch_size = DEMO_BATCH
        args.train_subset = args.train_subset or DEMO_SUBSET
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 1e-3
    if args.pretrained_weights and args.init_from:
        p.error("--pretrained-weights and --init-from both choose starting weights; give one")
    if args.pretrained_weights and (args.use_bn is False or args.stem == "cifar"):
        p.error("--pretrained-weights needs the torchvision architecture: --use-bn true --stem imagenet")
    if args.freeze_features and not (args.init_from or args.pretrained_weights):
        p.error("--freeze-features needs trained features: add --init-from CKPT or --pretrained-weights PATH")
    if args.alpha is None:
        args.alpha = {"pgd": attacks.pgd_step(args.eps, args.iters),
                      "fgsm_rs": attacks.FGSM_RS_ALPHA * args.eps}.get(args.attack)
    if args.adv_train and args.attack == "pgd" and args.alpha == 0:
        p.error("--alpha must be > 0 for PGD training")
    if args.select_by is None:
        args.select_by = "robust" if args.adv_train else "clean"
    if args.select_by == "robust" and (args.robust_val_samples == 0 or args.eps == 0):
        p.error("--select-by robust needs --robust-val-samples > 0 and --eps > 0")
    return args


def _below_one(what):
    """An argparse type for a value in [0, 1), named `what` in its error message."""
    def parse(text):
        value = utils.nonnegative_float(text)
        if value >= 1:
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 1), got {text}")
        return value
    return parse


# ----------------------------------------------------------------------------- building

def build_model(args, info):
    """The model to train and the keyword arguments that rebuild it."""
    model_args = {"num_classes": len(info["class_names"]), "use_bn": True, "stem": "imagenet",
                  "mean": info["mean"], "std": info["std"], "dropout": args.dropout}
    source = None
    if args.init_from:
        source = utils.load_checkpoint(args.init_from)
        # The features were learned under the source model's architecture and normalization.
        model_args = {**source["model_args"], "dropout": args.dropout}
        for flag, key in (("use_bn", "use_bn"), ("stem", "stem")):
            wanted = getattr(args, flag)
            if wanted is not None and wanted != model_args[key]:
                raise SystemExit(f"error: --{flag.replace('_', '-')} {wanted} conflicts with "
                                 f"{args.init_from}, which has {key}={model_args[key]}")
    elif args.pretrained_weights:
        model_args.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        model_args.update(use_bn=True if args.use_bn is None else args.use_bn,
                          stem=args.stem or "imagenet")
    model_args["mean"] = [float(v) for v in model_args["mean"]]
    model_args["std"] = [float(v) for v in model_args["std"]]

    model = resnet18(**model_args)
    if source is not None:
        state = source["model"]
        if args.freeze_features or state["fc.weight"].shape != model.fc.weight.shape:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # new classifier
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise SystemExit(f"error: --init-from {args.init_from}: weights do not fit its own "
                             f"model_args (missing {missing[:3]}, unexpected {unexpected[:3]})")
    elif args.pretrained_weights:
        try:
            state = torch.load(args.pretrained_weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's message would advise the unsafe weights_only=False
            raise SystemExit(f"error: cannot read --pretrained-weights {args.pretrained_weights} "
                             f"({type(exc).__name__}): it must be a torchvision resnet18 state "
                             "dict saved with torch.save (tensors only)")
        try:
            load_torchvision_weights(model, state, load_fc=False)
        except ValueError as exc:
            raise SystemExit(f"error: --pretrained-weights {args.pretrained_weights}: {exc}")
    if args.freeze_features:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    return model, model_args


def set_train_mode(model, freeze_features):
    """Train mode; with frozen features the backbone (its BatchNorm statistics) stays in eval."""
    model.train()
    if freeze_features:
        for name, module in model.named_modules():
            if name and not name.startswith("fc"):
                module.eval()


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused SGD and Adam steps


def build_optimizer(args, model):
    """SGD or Adam over the trainable parameters. The fused update (one kernel over every
    parameter) where torch has one for the device: on a CPU thread it takes ResNet18's SGD
    step from 38 to 12 ms and Adam's from 103 to 20 ms (AVX2 EPYC), a step of batch 32 itself
    being ~210 ms there; the arithmetic is the same update, rounded in another order."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].device.type in FUSED_DEVICES
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                           nesterov=args.nesterov and args.momentum > 0,
                           weight_decay=args.weight_decay, fused=fused)


def build_scheduler(args, optimizer, steps_per_epoch):
    """Stepped once per batch, so resuming mid-schedule needs only its state dict."""
    total = args.epochs * steps_per_epoch
    if args.schedule == "onecycle":
        if total < 3:
            raise SystemExit(f"error: --schedule onecycle needs at least 3 steps, this run has "
                             f"{total} (epochs x batches); use more data/epochs or --schedule constant")
        return torch.optim.lr_scheduler.OneCycleLR(  # a quarter warms up (2 steps at least)
            optimizer, max_lr=args.lr, total_steps=total, pct_start=max(0.25, 2 / total),
            cycle_momentum=args.optimizer == "sgd" and args.momentum > 0)
    if args.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(0.5 * total), int(0.75 * total)], gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def epoch_seed(seed, epoch):
    """Every random draw of an epoch (order, augmentation, attacks, dropout) derives from this,
    so a run resumed at an epoch boundary repeats exactly what the original would have done."""
    return seed * 100_003 + epoch


# ----------------------------------------------------------------------------- the loop

def resolve_amp(requested, device):
    """("bf16" or "off", why) for --amp on this device."""
    reason = utils.bf16_autocast_reason(device)
    if requested == "off":
        return "off", "--amp off"
    if requested == "bf16":
        return "bf16", "--amp bf16" + ("" if reason else ": this device has no bf16 instructions, "
                                       "so expect a step several times slower than fp32")
    return ("bf16", f"--amp auto: {reason}") if reason else (
        "off", "--amp auto: no bf16 instructions on this device, fp32")


def autocast(args, device):
    """bf16 autocast when --amp resolved to bf16 (CPU and CUDA alike); otherwise a no-op."""
    if args.amp_used != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def epoch_generators(seed, epoch, rank=0):
    """The epoch's seeded generators: `coin` decides which batches are attacked (the same
    in every process, so a global batch is adversarial or not as a whole) and `attack`
    draws the attacks' random starts (each process its own)."""
    base = epoch_seed(seed, epoch)
    return {"coin": torch.Generator().manual_seed(base * 4 + 1),
            "attack": torch.Generator().manual_seed(base * 4 + 2 + 7919 * rank)}


PROGRESS_LOG_S = 60  # seconds between progress lines when no terminal shows the bar


def train_one_epoch(model, loader, optimizer, scheduler, criterion, args, device, epoch,
                    circle=None, step0=0, dist=None, generators=None):
    """One pass over `loader`. `model` may be DistributedDataParallel-wrapped; attacks use
    the plain module (they never touch parameter gradients). `generators` are
    epoch_generators(...). Returns the epoch's stats, summed over all processes."""
    generators = generators or epoch_generators(args.seed, epoch)
    plain = getattr(model, "module", model)
    set_train_mode(plain, args.freeze_features)
    # loss sum, correct, seen, adversarial batches, cross-entropy sum, Circle Loss sum
    totals = torch.zeros(6, dtype=torch.float64)
    first = None
    rank0 = dist is None or dist.rank == 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", leave=False, dynamic_ncols=True,
               mininterval=1.0, disable=None if rank0 else True)  # None: only on a terminal
    logged = time.time()  # where no terminal shows the bar (a log file, Slurm), plain lines
    for i, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        if args.adv_train and torch.rand((), generator=generators["coin"]).item() < args.adv_prob:
            x = attacks.ATTACKS[args.attack].run(plain, x, y, args.eps, args.alpha, args.iters, 1,
                                                 generators["attack"])
            totals[3] += 1

        with autocast(args, device):
            logits, feats = model(x, return_features=True)
        # losses in fp32 outside autocast: Circle Loss scales cosine similarities by gamma
        # (256), which would magnify bf16's rounding of them into whole nats
        ce = criterion(logits.float(), y)
        # the unweighted Circle term is logged beside cross-entropy, so the history shows
        # whether --circle-weight makes it shape the objective or dominate it
        circle_term = circle(feats.float(), y) if circle is not None else torch.zeros(())
        loss = ce + args.circle_weight * circle_term if circle is not None else ce
        if not _all_finite(loss, dist):
            raise NonFiniteLossError(loss.item(), epoch, i + 1, step0 + i + 1)
        if first is None:
            first = {"cross_entropy": ce.item(), "circle": circle_term.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        totals[0] += loss.item() * y.numel()
        totals[1] += (logits.argmax(1) == y).sum().item()
        totals[2] += y.numel()
        totals[4] += ce.item() * y.numel()
        totals[5] += circle_term.item() * y.numel()
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{100 * totals[1] / totals[2]:.1f}%")
        if rank0 and bar.disable and time.time() - logged > PROGRESS_LOG_S:
            logged = time.time()
            print(f"  epoch {epoch}: step {i + 1}/{len(loader)}, loss {totals[0] / totals[2]:.3f}, "
                  f"acc {100 * totals[1] / totals[2]:.1f}%", flush=True)
    steps = i + 1
    adv_fraction = totals[3].item() / steps
    if dist is not None:
        dist.all_reduce(totals)
        adv_fraction = totals[3].item() / (steps * dist.world)
    stats = {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item(),
             "adv_batch_fraction": adv_fraction, "steps": steps,
             "train_cross_entropy": (totals[4] / totals[2]).item()}
    if circle is not None:
        stats.update(train_circle=(totals[5] / totals[2]).item(),
                     first_step_cross_entropy=first["cross_entropy"],
                     first_step_circle=first["circle"])
    return stats


ROBUST_VAL_ITERS = 10


def robust_val_accuracy(model, loader, args, device):
    """PGD-10 accuracy at --eps (eval.py's default step: 2/255 at 8/255) on the fixed
    validation sample, with the same random starts every epoch so epochs compare."""
    generator = torch.Generator().manual_seed(args.seed)
    correct = seen = 0
    with attacks.eval_mode(model):
        for x, y in loader:
            x = x.to(device, memory_format=torch.channels_last)
            y = y.to(device)
            x_adv = attacks.pgd_attack(model, x, y, args.eps, attacks.pgd_step(args.eps, ROBUST_VAL_ITERS),
                                       ROBUST_VAL_ITERS,
                                       generator=generator)
            with torch.no_grad():
                correct += (model(x_adv).argmax(1) == y).sum().item()
            seen += len(y)
    return correct / seen


def selection_score(row, select_by):
    """What best.pth maximises, as a list compared element by element: robust selection
    breaks ties in PGD accuracy (e.g. 0% early on) by clean accuracy."""
    return [row["val_pgd_acc"], row["val_acc"]] if select_by == "robust" else [row["val_acc"]]


def robust_collapse(history):
    """Catastrophic overfitting (Wong et al. 2020) in the last epoch: robust validation
    accuracy fell by more than half while clean validation accuracy rose."""
    if len(history) < 2 or "val_pgd_acc" not in history[-1]:
        return False
    prev, now = history[-2], history[-1]
    return now["val_pgd_acc"] < 0.5 * prev["val_pgd_acc"] and now["val_acc"] > prev["val_acc"]


def _all_finite(loss, dist):
    """Whether the loss is finite in every process (all stop together, none hangs)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0])
    if dist is not None:
        dist.all_reduce(bad)
    return bad.item() == 0


class Distributed:
    """The process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on
    CUDA. Rank 0 alone writes checkpoints, logs and figures."""

    def __init__(self, device):
        import torch.distributed as td

        self.td = td
        self.world = int(os.environ["WORLD_SIZE"])
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(self.backend)
        self.rank = td.get_rank()
        self.device = device
        if device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)

    def all_reduce(self, tensor):
        self.td.all_reduce(tensor)

    def barrier(self):
        self.td.barrier()

    def close(self):
        self.td.destroy_process_group()


def _run_config(args, argv, info, model_args, device):
    return utils.plain({
        "args": vars(args), "command": utils.command_line("train.py", argv),
        "model_args": model_args, "data": info, "environment": utils.environment_info(),
        "device": str(device), "synthetic": info["synthetic"],
    })


def _check_resumable(config, path, model_args, args):
    """Refuse, naming each one, flags that would change what the run in `path` computes."""
    if config["model_args"] != model_args:
        raise SystemExit(f"error: {path} was trained with model_args {config['model_args']}, but "
                         f"this command builds {model_args}; use the original flags or another "
                         "--out-dir")
    saved = config["args"]
    now = utils.plain(vars(args))
    changed = [k for k in sorted(set(saved) | set(now))
               if k not in utils.NEUTRAL_FLAGS and saved.get(k, "(absent)") != now.get(k, "(absent)")]
    if changed:
        diffs = "; ".join(f"--{k.replace('_', '-')} was {saved.get(k, '(absent)')}, now "
                          f"{now.get(k, '(absent)')}" for k in changed)
        raise SystemExit(f"error: cannot resume {path}: these flags differ from the run's "
                         f"config.json: {diffs}. Resume with the original flags, or start a new "
                         "--out-dir.")


def _finished(args, files, model_args):
    """The final metrics of the finished run in --out-dir when --resume is asked of it (after
    checking that the flags agree with its config.json), else None."""
    if not args.resume or os.path.exists(files.last) or not os.path.exists(files.final):
        return None
    _check_resumable(utils.load_json(files.config), files.config, model_args, args)
    print(f"{args.out_dir} holds a finished run of these flags; nothing to resume", flush=True)
    return utils.load_json(files.final)


def _resume(args, files, model, optimizer, scheduler, model_args, config, device):
    """(start epoch, best selection score, history) of the run in --out-dir."""
    if not args.resume:
        if os.path.exists(files.last) or os.path.exists(files.final):
            print(f"note: {args.out_dir} already holds a run; starting afresh (use --resume to "
                  "continue it)", flush=True)
        return 1, [-1.0], []
    if not os.path.exists(files.last):
        raise SystemExit(f"error: --resume: no {files.last} to resume from; drop --resume "
                         "to start a new run")
    try:
        ckpt = utils.load_checkpoint(files.last, map_location=device)
    except utils.CheckpointError as exc:
        raise SystemExit(f"error: --resume: {exc}")
    missing = [k for k in utils.RESUME_KEYS if k not in ckpt]
    if missing:
        raise SystemExit(f"error: --resume: {files.last} lacks the training state {missing} "
                         "(a model-only checkpoint); start a new --out-dir")
    _check_resumable({**ckpt["config"], "model_args": ckpt["model_args"]}, files.last,
                     model_args, args)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    config["resumed_from_epoch"] = ckpt["epoch"]
    print(f"resuming {args.out_dir} after epoch {ckpt['epoch']}", flush=True)
    return ckpt["epoch"] + 1, ckpt["best_score"], ckpt["history"]


def _diverged(args, config, record, rank):
    """Record a divergence as the run's outcome (a result a re-run reproduces, not a crash)."""
    if rank == 0:
        utils.save_json({**record, "command": config["command"]}, run_contract.TrainFiles(args.out_dir).diverged)


def _record_epoch(files, state, is_best, writer):
    """Checkpoints (atomic), history as JSON and CSV, TensorBoard scalars: rank 0 only."""
    if is_best:
        utils.save_checkpoint(state, files.best, utils.MODEL_KEYS)
    utils.save_checkpoint(state, files.last, utils.RESUME_KEYS)
    row = state["history"][-1]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_pgd_acc"):
        if key in row:
            writer.add_scalar(key.replace("_", "/", 1), row[key], row["epoch"])
    writer.add_scalar("lr", row["lr"], row["epoch"])
    utils.save_json(state["history"], files.history)
    utils.save_csv(state["history"], files.history_csv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = utils.choose_device(args.device)
    dist = Distributed(device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    owner = (run_contract.Owner(run_contract.TrainFiles(args.out_dir).lock, f"run folder {args.out_dir}")
             if dist is None or dist.rank == 0 else contextlib.nullcontext())
    try:
        with owner:  # one writer per run folder
            return fit(args, argv, dist.device if dist else device, dist)
    except KeyboardInterrupt:
        if dist is None or dist.rank == 0:
            print(interrupted_message(args, argv), file=sys.stderr, flush=True)
        raise
    finally:
        if dist is not None:
            dist.close()


def interrupted_message(args, argv):
    """What an interrupted run has kept, and the command that continues it."""
    last = run_contract.TrainFiles(args.out_dir).last
    try:
        epoch = utils.load_checkpoint(last)["epoch"]
    except utils.CheckpointError:
        return (f"\ninterrupted before the first epoch finished: nothing is saved in "
                f"{args.out_dir} yet; run the same command again to start over")
    again = [a for a in argv if a != "--resume"] + ["--resume"]
    return (f"\ninterrupted: {last} holds epochs 1-{epoch} of {args.epochs} (and best.pth the "
            f"best of them); the epoch in progress is lost. Continue from epoch {epoch + 1} with:\n"
            f"  {utils.command_line('train.py', again)}")


@dataclass
class Session:
    """What the epochs of one training run share: built by `setup`, read by `run_epochs`
    and `final_evaluation`."""
    args: argparse.Namespace
    device: torch.device
    dist: "Distributed"
    files: run_contract.TrainFiles
    splits: datasets.Splits
    model: nn.Module
    model_args: dict
    loaders: dict  # train, val, and robust (None unless the run validates under PGD)
    loader_gen: torch.Generator  # the train loader's, reseeded every epoch
    optimizer: torch.optim.Optimizer
    scheduler: object
    criterion: nn.Module
    circle: nn.Module  # None without --circle-weight
    config: dict = None
    start_epoch: int = 1
    best_score: list = None
    history: list = None
    ddp_model: nn.Module = None  # the model the steps run (wrapped under torchrun)
    writer: object = None  # TensorBoard, rank 0 only
    started: float = 0.0  # when this invocation began its epochs
    prior_time: float = 0.0  # seconds of the epochs an interrupted invocation finished

    rank = property(lambda self: self.dist.rank if self.dist else 0)
    world = property(lambda self: self.dist.world if self.dist else 1)
    steps_per_epoch = property(lambda self: len(self.loaders["train"]))
    label = property(lambda self: self.splits.info["description"])  # says SYNTHETIC if so


def fit(args, argv, device, dist=None):
    """Train as the flags say: set up (or resume; a finished run returns its result), run
    the epochs, then evaluate the selected checkpoint on the test split (rank 0 only)."""
    session = setup(args, argv, device, dist)
    if isinstance(session, dict):
        return session
    try:
        run_epochs(session)
    finally:
        if session.writer is not None:
            session.writer.close()
    return final_evaluation(session) if session.rank == 0 else None


def _data_and_model(args, world):
    """The splits and the model, bad input mapped to the pipeline's outcomes."""
    if args.batch_size % world:
        raise SystemExit(f"error: --batch-size {args.batch_size} (the global batch) must be "
                         f"divisible by the {world} processes")
    try:
        splits = datasets.build_splits(args.dataset, args.data_root, not args.no_download,
                                       args.val_size, args.train_subset, args.augment, args.seed,
                                       args.color_jitter, args.framing, subset_at_most=args.demo)
        model, model_args = build_model(args, splits.info)
    except datasets.DatasetUnavailableError as exc:
        raise utils.NotAvailable(f"error: {exc}")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    except utils.CheckpointError as exc:
        raise SystemExit(f"error: --init-from: {exc}")
    return splits, model, model_args


def _loaders(args, splits, world, rank):
    """Train (sharded, reseeded each epoch), validation, and the fixed PGD validation sample."""
    loader_gen = torch.Generator()
    loaders = {"train": datasets.batch_loader(
        splits.train, args.batch_size, shuffle=True, drop_last=len(splits.train) > args.batch_size,
        workers=args.workers, generator=loader_gen, world=world, rank=rank),
        "val": datasets.batch_loader(splits.val, 512), "robust": None}
    if (args.adv_train or args.select_by == "robust") and args.robust_val_samples and args.eps:
        sample = torch.randperm(len(splits.val), generator=torch.Generator().manual_seed(args.seed))
        loaders["robust"] = datasets.batch_loader(splits.val, 256,
                                                  sampler=sample[:args.robust_val_samples].tolist())
    return loaders, loader_gen


def setup(args, argv, device, dist=None):
    """A Session ready for its first (or resumed) epoch, or a finished run's final metrics."""
    world, rank = (dist.world, dist.rank) if dist else (1, 0)
    # recorded in the run's arguments, so --resume on a machine that would choose otherwise
    # refuses instead of changing the arithmetic mid-run
    args.amp_used, amp_why = resolve_amp(args.amp, device)
    utils.seed_everything(args.seed)
    files = run_contract.TrainFiles(args.out_dir)
    splits, model, model_args = _data_and_model(args, world)
    finished = _finished(args, files, model_args)  # before loaders and optimizer are built
    if finished is not None:
        return finished
    # channels-last is ~1.4x faster for this network on CPU (oneDNN) and on GPUs alike.
    model.to(device, memory_format=torch.channels_last)
    loaders, loader_gen = _loaders(args, splits, world, rank)
    optimizer = build_optimizer(args, model)
    s = Session(args, device, dist, files, splits, model, model_args, loaders, loader_gen,
                optimizer, build_scheduler(args, optimizer, len(loaders["train"])),
                LabelSmoothingCrossEntropy(args.label_smoothing),
                CircleLoss(args.circle_m, args.circle_gamma) if args.circle_weight > 0 else None)
    s.config = _run_config(args, argv, splits.info, model_args, device)
    s.config["distributed"] = {"world_size": world, "backend": dist.backend if dist else None,
                               "global_batch_size": args.batch_size,
                               "per_process_batch_size": args.batch_size // world,
                               "lr": args.lr, "amp": args.amp_used}
    s.config["precision"] = {"amp": args.amp_used, "why": amp_why}
    s.start_epoch, s.best_score, s.history = _resume(args, files, model, s.optimizer, s.scheduler,
                                                     model_args, s.config, device)
    s.ddp_model = torch.nn.parallel.DistributedDataParallel(model) if dist is not None else model
    if rank == 0:
        _open_run_folder(s)
    s.started, s.prior_time = time.time(), sum(h["epoch_time_s"] for h in s.history)
    return s


def _open_run_folder(s):
    """Rank 0: the config before the first step, the run's announcement, TensorBoard."""
    args = s.args
    os.makedirs(args.out_dir, exist_ok=True)
    if s.start_epoch == 1:  # a new run replaces the outcome of any earlier one in this folder
        for stale in (s.files.final, s.files.diverged, s.files.per_image):
            if os.path.exists(stale):
                os.remove(stale)
    utils.save_json(s.config, s.files.config)
    print(f"run folder: {os.path.abspath(args.out_dir)}", flush=True)
    print(f"training on {s.label}: {s.splits.info['sizes']} images, {s.steps_per_epoch} "
          f"steps/epoch, device {s.device}" + (f", {s.world} processes" if s.dist else "")
          + f"; precision {'bf16 autocast' if args.amp_used == 'bf16' else 'fp32'} "
          f"({s.config['precision']['why']})",
          flush=True)
    from torch.utils.tensorboard import SummaryWriter
    s.writer = SummaryWriter(os.path.join(args.out_dir, "tensorboard"))


def run_epochs(s):
    """The epochs from s.start_epoch: train, then (rank 0) validate, select, checkpoint."""
    args = s.args
    for epoch in range(s.start_epoch, args.epochs + 1):
        t0 = time.time()
        torch.manual_seed(epoch_seed(args.seed, epoch) + 7919 * s.rank)
        s.loader_gen.manual_seed(epoch_seed(args.seed, epoch))  # the same order on every rank
        kept = (f"; the last good checkpoint is {s.files.last}"
                if os.path.exists(s.files.last) else "")
        try:
            stats = train_one_epoch(s.ddp_model, s.loaders["train"], s.optimizer, s.scheduler,
                                    s.criterion, args, s.device, epoch, s.circle,
                                    step0=(epoch - 1) * s.steps_per_epoch, dist=s.dist,
                                    generators=epoch_generators(args.seed, epoch, s.rank))
        except NonFiniteLossError as exc:
            _diverged(args, s.config, exc.record, s.rank)
            raise utils.Diverged(f"error: {exc}{kept}")
        if s.rank == 0:
            _end_of_epoch(s, epoch, stats, t0, kept)


def _end_of_epoch(s, epoch, stats, t0, kept):
    """Rank 0: validation (clean, and PGD where asked), selection, checkpoints, the log line."""
    args, model = s.args, s.model
    val_loss, val_acc = utils.evaluate(model, s.loaders["val"], s.device)
    if not math.isfinite(val_loss):
        _diverged(args, s.config, {"validation_loss": str(val_loss), "epoch": epoch,
                                   "global_step": epoch * s.steps_per_epoch}, s.rank)
        raise utils.Diverged(f"error: the validation loss became {val_loss} after epoch "
                             f"{epoch}: training diverged; lower --lr{kept}")
    row = {"epoch": epoch, **stats, "val_loss": val_loss, "val_acc": val_acc}
    if s.loaders["robust"] is not None:
        row["val_pgd_acc"] = robust_val_accuracy(model, s.loaders["robust"], args, s.device)
    row.update(lr=s.optimizer.param_groups[0]["lr"], epoch_time_s=time.time() - t0)
    s.history.append(row)
    if robust_collapse(s.history):
        row["robust_collapse"] = True
        print(f"WARNING: epoch {epoch}: PGD validation accuracy collapsed "
              f"({100 * s.history[-2]['val_pgd_acc']:.1f}% -> "
              f"{100 * row['val_pgd_acc']:.1f}%) while clean accuracy rose: catastrophic "
              "overfitting; best.pth keeps the most robust epoch", flush=True)
    score = selection_score(row, args.select_by)
    is_best = score > s.best_score
    s.best_score = max(s.best_score, score)
    state = {"model": model.state_dict(), "model_args": s.model_args,
             "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
             "epoch": epoch, "best_score": s.best_score, "history": s.history,
             "config": s.config}
    _record_epoch(s.files, state, is_best, s.writer)
    robust = (f"  val PGD-{ROBUST_VAL_ITERS} {100 * row['val_pgd_acc']:.2f}%"
              if "val_pgd_acc" in row else "")
    print(f"epoch {epoch}/{args.epochs}  train loss {row['train_loss']:.4f} "
          f"acc {100 * row['train_acc']:.2f}%  val loss {val_loss:.4f} "
          f"acc {100 * val_acc:.2f}%{robust}  lr {row['lr']:.2e}  "
          f"{row['epoch_time_s']:.0f}s" + ("  *best" if is_best else ""), flush=True)


CLEAN_TRAIN_SAMPLE = 10_000  # images: enough for a +-1 point interval, ~10 s on a CPU


def clean_train_accuracy(model, train, seed, device):
    """Whether the run fits its training set: the model (eval mode: dropout off) on a seeded
    sample of the training images as stored, without augmentation. The train accuracy of the
    epochs is measured on augmented, dropout-on batches, which flatters the regularized runs."""
    plain = datasets.ArrayDataset(train.images, train.labels, train.name)  # no augmentation
    order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(seed))
    sample = order[:CLEAN_TRAIN_SAMPLE].tolist()
    logits, labels = utils.predict(model, datasets.batch_loader(plain, 512, sampler=sample), device)
    return run_contract.accuracy("train_clean_accuracy", (logits.argmax(1) == labels).sum().item(),
                                 len(labels))


def final_evaluation(s):
    """The selected checkpoint on the test split: the run's result, written last."""
    args, files, history, test = s.args, s.files, s.history, s.splits.test
    plot_training_curves(history, os.path.join(args.out_dir, "training_curves.png"),
                         f"ResNet18 on {s.label}")
    best = utils.model_from_checkpoint(utils.load_checkpoint(files.best, s.device), files.best)
    best.to(s.device, memory_format=torch.channels_last)
    logits, labels = utils.predict(best, datasets.batch_loader(test, 512), s.device)
    hits = (logits.argmax(1) == labels).numpy()
    correct = int(hits.sum())
    fitted = clean_train_accuracy(best, s.splits.train, args.seed, s.device)
    # the first of equal scores, as is_best keeps it
    best_row = max(history, key=lambda h: selection_score(h, args.select_by))
    final = {**run_contract.accuracy("test_accuracy", correct, len(test)), **fitted,
             "test_loss": torch.nn.functional.cross_entropy(logits, labels).item(),
             # calibration of the selected model (label smoothing's claimed effect), as eval.py
             "test_ece": metrics.expected_calibration_error(metrics.softmax(logits.numpy()),
                                                            labels.numpy()),
             "selected_by": args.select_by,
             "best_epoch": best_row["epoch"], "best_val_acc": best_row["val_acc"],
             **({"best_val_pgd_acc": best_row["val_pgd_acc"]} if "val_pgd_acc" in best_row else {}),
             "robust_collapse_epochs": [h["epoch"] for h in history if h.get("robust_collapse")],
             "epochs": args.epochs, "n_train": len(s.splits.train), "n_test": len(test),
             "dataset": args.dataset,
             "data_description": s.label, "synthetic": s.splits.info["synthetic"],
             "wall_time_s": s.prior_time + (time.time() - s.started),
             "train_time_s": sum(h["epoch_time_s"] for h in history),
             "command": s.config["command"]}
    if s.circle is not None:  # the two terms at the first step, before any learning
        final.update(initial_cross_entropy=history[0]["first_step_cross_entropy"],
                     initial_circle=history[0]["first_step_circle"],
                     circle_weight=args.circle_weight)
    # image by image, so two runs on this test split compare by McNemar's test
    run_contract.save_per_image({"clean": (np.arange(len(test)), hits)}, files.per_image)
    utils.save_json(final, files.final)
    # the run is complete: the training state is no longer needed, nor, if asked, the weights
    os.remove(files.last)
    if args.keep_weights == "none":
        os.remove(files.best)
    print(f"test accuracy of best.pth (epoch {final['best_epoch']}): "
          f"{100 * final['test_accuracy']:.2f}% on {len(test)} {s.label} test images; wall time "
          f"{final['wall_time_s']:.0f}s\nrun folder: {os.path.abspath(args.out_dir)} ("
          + ("best.pth and " if args.keep_weights == "best" else "")
          + "config.json, training_history, test.per_image.npz, final_metrics.json)", flush=True)
    return final


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # the message above says what to do; no traceback
