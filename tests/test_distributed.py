import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train
import utils
from learning_cases import CASES, TINY, argv as case_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No BatchNorm, no augmentation, deterministic FGSM: then two processes with half the global
# batch each must compute exactly the averaged gradient one process computes, and attack
# the same global batches (the --adv-prob coin is flipped once per global batch). fp32: bf16
# rounding would differ between the two reductions.
FLAGS = ["--dataset", "synthetic", "--train-subset", "192", "--val-size", "200",
         "--batch-size", "32", "--lr", "0.02", "--epochs", "1", "--no-augment",
         "--use-bn", "false", "--adv-train", "--attack", "fgsm", "--adv-prob", "0.5",
         "--robust-val-samples", "64", "--seed", "0", "--amp", "off"]


@pytest.mark.slow  # three processes with torch: 45 s on an AVX2 EPYC
def test_two_cpu_processes_match_one_process_of_the_same_global_batch(tmp_path, torch_threads):
    # the single process runs with the one thread each DDP process gets: the thread count
    # changes the order of float sums, and with two threads against one the weights drifted
    # past this tolerance on a Xeon with AMX
    with torch_threads(1):
        single = train.main(FLAGS + ["--out-dir", str(tmp_path / "single")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         os.path.join(ROOT, "train.py"), *FLAGS, "--device", "cpu", "--out-dir", str(tmp_path / "ddp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a = utils.load_checkpoint(str(tmp_path / "single" / "best.pth"))
    b = utils.load_checkpoint(str(tmp_path / "ddp" / "best.pth"))
    assert a["epoch"] == b["epoch"] == 1
    # Splitting the batch changes the order of float sums, and FGSM's sign() turns the tiny
    # gradient differences into whole-step pixel changes; so the two runs agree to a share
    # of how far training moved each tensor, not bit for bit. Measured on a 2-core Xeon with
    # AMX, one thread on both sides: at most 4.6% of a tensor's update (conv1 4.4%). A DDP
    # that summed instead of averaging, or skipped the all-reduce, is off by 50-100%.
    init = _initial_weights(a["model_args"])
    moved = 0.0
    for key, value in a["model"].items():
        if not value.dtype.is_floating_point or "running" in key:
            continue
        update = (value - init[key]).norm()
        assert (b["model"][key] - value).norm() <= 0.15 * update, key
        moved = max(moved, (update / value.norm()).item())
    assert 0 < moved < 0.5  # init rebuilt right: training moved the weights, not replaced them
    ddp = json.loads((tmp_path / "ddp" / "final_metrics.json").read_text())
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.002
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 32,
                                     "per_process_batch_size": 16, "lr": 0.02, "amp": "off"}
    history = json.loads((tmp_path / "ddp" / "training_history.json").read_text())
    single_history = json.loads((tmp_path / "single" / "training_history.json").read_text())
    fraction = single_history[0]["adv_batch_fraction"]
    assert 0 < fraction < 1 and history[0]["adv_batch_fraction"] == fraction
    assert len(history) == 1
    events = os.listdir(tmp_path / "ddp" / "tensorboard")
    assert len(events) == 1  # only rank 0 logs


def _initial_weights(model_args, seed=0):
    """The weights train.py starts from: the model built right after seeding (the synthetic
    data and its split draw from generators of their own)."""
    from models import resnet18

    utils.seed_everything(seed)
    return resnet18(**model_args).state_dict()


def test_bf16_autocast_trains_and_auto_follows_the_hardware(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    if utils.bf16_autocast_reason(cpu):
        # the 3-epoch case: after one epoch (12 steps) bf16 runs ranged 43-85% over seeds 0-4
        final = train.main(case_argv("synthetic_3_epochs") + ["--amp", "--out-dir", str(tmp_path)])
        assert final["test_accuracy"] > CASES["synthetic_3_epochs"].bound
    else:
        # Without bf16 instructions oneDNN emulates bf16: the 3-epoch case took 75 s against
        # fp32's 23 s on an AVX2-only AMD EPYC (one thread), the slowest test of the suite
        # there, for a path `--amp auto` never takes on such a CPU. Its learning bound is
        # checked where bf16 is native; here four emulated steps must train in fp32 weights.
        final = train.main([*TINY, "--train-subset", "128", "--val-size", "64", "--epochs", "1",
                            "--amp", "--out-dir", str(tmp_path)])
        history = json.loads((tmp_path / "training_history.json").read_text())
        assert math.isfinite(history[0]["train_loss"]) and 0 <= final["test_accuracy"] <= 1
        weights = utils.load_checkpoint(str(tmp_path / "best.pth"))["model"]
        assert {v.dtype for k, v in weights.items() if "num_batches" not in k} == {torch.float32}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["distributed"]["amp"] == "bf16" and config["args"]["amp_used"] == "bf16"
    monkeypatch.setattr(utils, "cpu_info", lambda: {"model": "x", "flags": ["avx2", "avx512f"]})
    assert train.resolve_amp("auto", cpu)[0] == "off"  # bf16 would be emulated: slower
    assert "no bf16 instructions" in train.resolve_amp("bf16", cpu)[1]
    monkeypatch.setattr(utils, "cpu_info", lambda: {"model": "x", "flags": ["avx512_bf16"]})
    assert train.resolve_amp("auto", cpu) == ("bf16", "--amp auto: CPU has avx512_bf16")
    assert train.resolve_amp("off", cpu)[0] == "off"
