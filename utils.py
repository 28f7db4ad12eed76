"""Shared plumbing: seeding, devices, atomic files, checkpoints, provenance, clean evaluation."""

import argparse
import csv
import json
import os
import platform
import random
import subprocess
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from attacks import eval_mode

CHECKPOINT_FORMAT = 1
# best.pth holds what evaluation and transfer need (the weights, the arguments that rebuild
# the model, its epoch and the run's config: ~43 MB for ResNet18); last.pth adds the training
# state --resume needs (optimizer momentum doubles the size) and is removed once the run ends.
MODEL_KEYS = ("model", "model_args", "epoch", "config")
RESUME_KEYS = MODEL_KEYS + ("optimizer", "scheduler", "best_score", "history")
PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


class CheckpointError(RuntimeError):
    """A file that is missing, unreadable, not one of our checkpoints, or of another version."""


class NotAvailable(SystemExit):
    """Exit of a run that cannot happen because something it needs is absent in a way the
    user knows about (a dataset not on disk and not downloadable). On the command line it is
    an ordinary error exit; the report pipeline records it as "not run", where any other
    exit is a failure."""


class Diverged(SystemExit):
    """Exit of a training run whose loss became NaN or inf: a result, not a crash. train.py
    writes diverged.json next to the run's config before raising it."""


# ----------------------------------------------------------------------------- CLI helpers

def pixel_value(text):
    """argparse type for eps/alpha: '8/255' or '0.0314', in [0, 1]."""
    try:
        value = float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or fraction such as 8/255")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be within [0, 1] (pixel units)")
    return value


def _bounded(cast, low=None, high=None, low_open=False, what="value"):
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {cast.__name__}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{what} must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{what} must be <= {high}, got {text}")
        return value
    parse.__name__ = cast.__name__
    return parse


positive_int = _bounded(int, 1, what="value")
nonnegative_int = _bounded(int, 0, what="value")
positive_float = _bounded(float, 0.0, low_open=True, what="value")
nonnegative_float = _bounded(float, 0.0, what="value")
probability = _bounded(float, 0.0, 1.0, what="probability")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every option's default (or that it is required), unless its help text
    already explains it; on/off switches and unset options say nothing more."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required:
            return text + " (required)"
        if ("default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS))
                or not action.option_strings):  # an off switch or a default the text explains
            return text
        return text + " (default: %(default)s)"


def str2bool(text):
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# ----------------------------------------------------------------------------- runtime

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} was asked for but no CUDA device is available; "
                         "use --device cpu or auto")
    return torch.device(name)


# ----------------------------------------------------------------------------- files

def atomic_write(path, write):
    """Call write(tmp_path), then rename over `path`, so readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
    atomic_write(path, write)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, torch.device):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def plain(obj):
    """`obj` as plain JSON types only, safe inside a weights_only checkpoint."""
    return json.loads(json.dumps(obj, default=_json_default))


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_csv(rows, path):
    """Rows (dicts) to CSV; the header is the union of keys in first-seen order."""
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(state, path, keys=RESUME_KEYS):
    """Save the `keys` of `state` (MODEL_KEYS for a model to evaluate, RESUME_KEYS for one
    to continue training), atomically."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    kept = {k: state[k] for k in keys}
    atomic_write(path, lambda tmp: torch.save({**kept, "format": CHECKPOINT_FORMAT}, tmp))


def load_checkpoint(path, map_location="cpu"):
    """Load one of our checkpoints safely (weights_only: tensors and plain values only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, which would run whatever code a
        # file of unknown origin holds: only the exception's name is passed on
        raise CheckpointError(
            f"{path} is not a readable train.py checkpoint ({type(exc).__name__}); it may be "
            "truncated, corrupt, or another kind of file. Checkpoints are loaded as tensors and "
            "plain values only; point --checkpoint at a best.pth or last.pth that train.py "
            "wrote") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path} is not a train.py checkpoint (no 'model'/'model_args' keys)")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt.get('format')!r}; this code "
                              f"reads format {CHECKPOINT_FORMAT}. Retrain, or use the matching version.")
    return ckpt


def model_from_checkpoint(ckpt, path="checkpoint"):
    """Rebuild the model from the checkpoint alone: resnet18(**model_args) + its weights.
    Built on the meta device, so no random initialization is computed only to be
    overwritten (~0.15 s of 0.2 s per load on a 2-core CPU), and the global random stream
    is left as it was; the checkpoint's tensors become the model's (every parameter and
    buffer is in the state dict: a missing one is refused, as before)."""
    from models import resnet18

    try:
        with torch.device("meta"):
            model = resnet18(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"], assign=True)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not match model_args "
                              f"{ckpt['model_args']} ({str(exc)[:300]})") from exc
    return model


# ----------------------------------------------------------------------------- provenance

def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        # the generated report/ (and the findings it writes into docs/) is an output, not
        # code: rendering a look does not make the next look's runs -dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)report", ":(exclude)docs"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides CPU speed


def usable_cpus():
    """The CPU cores this process may run on: its affinity mask where the OS has one (a Slurm
    job, `taskset`, a pinned test worker get a share of the machine), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_info():
    """{'model': ..., 'flags': [the CPU_FLAGS this CPU has]} from /proc/cpuinfo (Linux);
    elsewhere the platform's processor name and no flags."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def bf16_autocast_reason(device):
    """Why bf16 autocast pays off on `device`, or None where it does not: on CUDA with bf16
    support, and on CPUs with bf16 instructions (without them oneDNN emulates bf16 and a
    step is several times slower than fp32)."""
    if device.type == "cuda":
        return "CUDA device with bf16 support" if torch.cuda.is_bf16_supported() else None
    bf16 = [f for f in cpu_info()["flags"] if f in ("avx512_bf16", "amx_bf16")]
    return f"CPU has {' and '.join(bf16)}" if bf16 else None


def environment_info():
    import matplotlib
    import sklearn
    import torchvision

    return {
        "python": platform.python_version(), "torch": str(torch.__version__),
        "torchvision": torchvision.__version__, "numpy": np.__version__,
        "scikit-learn": sklearn.__version__, "matplotlib": matplotlib.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu": cpu_info(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
    }


def plus_minus(value, ci95):
    """'27.3 ± 2.7': a fraction in percent with half the width of its 95% interval, as the
    logs and the report print every accuracy."""
    return f"{100 * value:.1f} ± {100 * (ci95[1] - ci95[0]) / 2:.1f}"


def command_line(script, argv):
    import shlex
    return " ".join(["python", script] + [shlex.quote(a) for a in argv])


# Flags that change where a run reads and writes, or how fast it goes, never what it
# computes: --resume may change them, and the report pipeline's up-to-date check ignores them.
NEUTRAL_FLAGS = ("workers", "device", "resume", "no_download", "data_root", "out_dir",
                 "keep_weights")
_NEUTRAL_SWITCHES = ("resume", "no_download")  # the ones that take no value


def computed_part(command):
    """A command line (as command_line writes it) without its NEUTRAL_FLAGS: two commands
    with equal computed parts compute the same numbers."""
    import shlex

    words, kept = shlex.split(command), []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
            continue
        name = word[2:].split("=", 1)[0].replace("-", "_") if word.startswith("--") else None
        if name in NEUTRAL_FLAGS:
            skip_value = name not in _NEUTRAL_SWITCHES and "=" not in word
            continue
        kept.append(word)
    return kept


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model, loader, device):
    """Logits and labels of `model` over `loader`, in eval mode (each module's mode restored)."""
    logits, labels = [], []
    with eval_mode(model):
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            logits.append(model(x).float().cpu())
            labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model, loader, device):
    """(mean cross-entropy, accuracy in [0, 1]) of `model` on `loader`."""
    logits, labels = predict(model, loader, device)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc
