"""The run contract: the files a run leaves, the names of its outcomes, the shape of its
result record, and who owns its folder while it writes.

train.py and eval.py write through this module; the pipeline and the report read through
it. A training run's folder (`--out-dir`) holds:

    config.json             the flags, model arguments, data, environment (torch threads
                            included): written before the first step
    best.pth                the selected weights and what rebuilds the model (MODEL_KEYS)
    last.pth                the full training state, only while --resume may need it
    training_history.json   one row per epoch (and .csv)
    test.per_image.npz      each test image's index and whether best.pth classified it
                            correctly (two runs on one test split compare image by image)
    final_metrics.json      the run's result: written last, so its presence means finished
    diverged.json           in place of final_metrics.json when the loss became NaN/inf
    owner.lock              while a process writes the folder: its PID, host and command

An evaluation (`eval.py --out PREFIX`) writes PREFIX.metrics.json, PREFIX.per_image.npz (for
every image it scored: its index in the split and whether each attack left it correct, so two
evaluations on the same images compare image by image) and PREFIX.*.png, holding
PREFIX.owner.lock meanwhile.
"""

import enum
import json
import os
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

import metrics
import utils

CONFIG = "config.json"
BEST = "best.pth"
LAST = "last.pth"
HISTORY = "training_history"  # .json and .csv
FINAL = "final_metrics.json"
TEST_PER_IMAGE = "test.per_image.npz"
DIVERGED = "diverged.json"
LOCK = "owner.lock"
EVAL_SUFFIX = ".metrics.json"
PER_IMAGE_SUFFIX = ".per_image.npz"
PIPELINE_LOCK = "pipeline.lock"  # in a checkpoints folder a pipeline writes
LOOK_PLANS = "looks"  # <checkpoints>/looks/look_<k>.json: how a later look was planned, once
# In a report folder: the small records it was rendered from (the checkpoints folder's
# layout, weights left out), their times, and every run's outcome. Committed with the
# report, they let --render-only rebuild it where the checkpoints are gone.
RECORDS = "records"
RECORDS_MANIFEST = "manifest.json"
OUTCOMES = "outcomes.json"


class Outcome(enum.StrEnum):
    """How a run of the matrix ended (or where it stands)."""
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"          # it ran now and its numbers are on disk
    SKIPPED = "skipped"    # its numbers were on disk already, for the same command
    NOT_RUN = "not run"    # something it needs is absent in a way the user knows about
    DIVERGED = "diverged"  # its loss became NaN/inf: a result, recorded in diverged.json
    FAILED = "FAILED"      # a crash, a bad input, a missing output: loud everywhere


BUDGET = "budget"  # the first word of the reason of a run left out by the pipeline's --budget
FINISHED = (Outcome.DONE, Outcome.SKIPPED)
# what a run that reads another cannot start from
UNUSABLE = (Outcome.PENDING, Outcome.NOT_RUN, Outcome.DIVERGED, Outcome.FAILED)


@dataclass(frozen=True)
class TrainFiles:
    """The paths of one training run's files, from its folder."""
    folder: str

    def _path(self, name):
        return os.path.join(self.folder, name)

    config = property(lambda self: self._path(CONFIG))
    best = property(lambda self: self._path(BEST))
    last = property(lambda self: self._path(LAST))
    final = property(lambda self: self._path(FINAL))
    diverged = property(lambda self: self._path(DIVERGED))
    lock = property(lambda self: self._path(LOCK))
    history = property(lambda self: self._path(HISTORY + ".json"))
    history_csv = property(lambda self: self._path(HISTORY + ".csv"))
    per_image = property(lambda self: self._path(TEST_PER_IMAGE))

    @property
    def records(self):
        """The small files the report reads (weights and training state aside)."""
        return [self.config, self.final, self.history, self.diverged, self.per_image]


def eval_record(prefix):
    """The result file of `eval.py --out PREFIX`."""
    return prefix + EVAL_SUFFIX


def eval_per_image(prefix):
    """The per-image outcomes of `eval.py --out PREFIX`: arrays NAME (bool, correct or not)
    and NAME_index (the images' indices in the split), for the whole split ("clean"), the
    attacked sample ("attack_subset_clean" and each attack), AutoAttack's sample
    ("autoattack_clean", "autoattack", "autoattack_pgd") and the corruptions' sample
    ("corruption_clean" and "corruption_<name>_s<severity>" per corruption and severity)."""
    return prefix + PER_IMAGE_SUFFIX


def save_per_image(per_image, path):
    """{name: (index, correct)}: each scored image's index in the split and whether it was
    classified correctly, per name, as arrays NAME and NAME_index (a few bytes per image,
    compressed). eval.py's names: see eval_per_image; a training run's: "clean", its test
    split under best.pth."""
    arrays = {}
    for name, (index, correct) in per_image.items():
        arrays[name] = np.asarray(correct, dtype=bool)
        arrays[f"{name}_index"] = np.asarray(index, dtype=np.int32)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_per_image(path):
    """{name: (index, correct)} from a file save_per_image wrote, {} where there is none (a
    run made before its script recorded them)."""
    if not os.path.exists(path):
        return {}
    with np.load(path) as f:
        return {k: (f[f"{k}_index"], f[k]) for k in f.files if not k.endswith("_index")}


def eval_lock(prefix):
    """The lock `eval.py --out PREFIX` holds while it writes."""
    return prefix + "." + LOCK


def accuracy(key, correct, n):
    """{key: accuracy, key_n: n, key_ci95: [low, high]}: how train.py and eval.py store every
    accuracy (a Wilson interval on the n images it was measured on)."""
    correct, n = int(correct), int(n)
    return {key: correct / n, f"{key}_n": n, f"{key}_ci95": metrics.wilson_ci(correct, n)}


def load_train_record(folder):
    """A finished training run's result with what the report reads beside it: its history,
    environment, arguments and precision."""
    files = TrainFiles(folder)
    record = utils.load_json(files.final)
    config = utils.load_json(files.config)
    record["history"] = utils.load_json(files.history)
    record["environment"] = config["environment"]
    record["args"] = config["args"]
    record["precision"] = config.get("precision", {}).get("amp")
    return record


# ----------------------------------------------------------------------------- one owner

class Busy(SystemExit):
    """Another live process owns the folder (or checkpoints) this one would write."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Owner:
    """Holds `path` (a lock file) for this process while a run writes: created atomically
    with the owner's PID, host and command. A second writer refuses at once with a message
    naming the owner; a lock whose process is gone (killed, on this host) is taken over, so
    it never blocks a --resume. A lock from another host cannot be checked from here: the
    message says how to clear it once that job is gone."""

    def __init__(self, path, what):
        self.path, self.what, self.held = path, what, False
        self.folder = os.path.dirname(os.path.abspath(path))
        self.made_folder = False

    def __enter__(self):
        self.made_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": utils.command_line(os.path.basename(sys.argv[0]) or "python", sys.argv[1:])}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._check_owner()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise Busy(f"error: could not take {self.path}: other processes keep taking it")

    def _check_owner(self):
        """Return if the lock at self.path is stale (and remove it); else refuse."""
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError):
            owner = {}  # being written this instant, or torn: treat it as held
        host, pid = owner.get("host"), owner.get("pid")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            print(f"note: {self.path} was left by process {pid}, which is gone; taking it over",
                  flush=True)
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            return
        raise Busy(f"error: {self.what} is being written by process {pid} on {host} "
                   f"({owner.get('command', 'unknown command')}); wait for it to finish, or use "
                   f"another folder. If that process is gone, delete {self.path}.")

    def __exit__(self, *exc):
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False
        if self.made_folder and not os.listdir(self.folder):
            os.rmdir(self.folder)  # a run that wrote nothing (its data was absent) leaves nothing
        return False
