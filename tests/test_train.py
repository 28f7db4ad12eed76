import json
import math
import os

import pytest
import torch
import torchvision

import run_contract
import train
import utils
from learning_cases import CASES, TINY, argv as case_argv
from losses import LabelSmoothingCrossEntropy

TINY = TINY + ["--seed", "0"]


def run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    final = train.main(TINY + ["--out-dir", str(out)] + list(extra))
    return final, out


# ----------------------------------------------------------------------------- flags

@pytest.mark.parametrize("flags, message", [
    (["--eps", "abc"], "not a number"),
    (["--eps", "2"], "within [0, 1]"),
    (["--lr", "-0.1"], "must be >"),
    (["--adv-prob", "1.5"], "<= 1"),
    (["--epochs", "0"], ">= 1"),
    (["--use-bn", "maybe"], "true or false"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--label-smoothing", "1"], "label smoothing must be in [0, 1)"),
    (["--color-jitter", "1"], "colour jitter must be in [0, 1)"),
    (["--freeze-features"], "--init-from"),
])
def test_invalid_flags_are_rejected_with_a_reason(flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        train.parse_args(flags)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_eps_accepts_fractions_and_decimals():
    args = train.parse_args(["--eps", "8/255", "--alpha", "0.0078"])
    assert args.eps == pytest.approx(8 / 255) and args.alpha == pytest.approx(0.0078)
    assert train.parse_args([]).lr == 0.1 and train.parse_args(["--optimizer", "adam"]).lr == 1e-3


@pytest.mark.parametrize("script", ["train", "eval"])
def test_every_help_text_states_its_default(script):
    """Each option says its default (in words where it is unset), or that it is required;
    an on/off switch says neither, and nothing prints "(default: None)"."""
    parser = __import__(script).build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = formatter._get_help_string(action)
        if action.required:
            assert text.endswith("(required)"), f"--{action.dest}"
        elif action.nargs != 0:
            assert "default" in text and not (action.default is None and "%(default)" in text), \
                f"--{action.dest}"


# ----------------------------------------------------------------------------- a real run

def test_training_learns_and_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "run"
    final = train.main(case_argv("synthetic_3_epochs") + ["--out-dir", str(out)])
    printed = capsys.readouterr().out.splitlines()  # where it writes, first and last
    assert printed[0].startswith("run folder: ") and printed[-1].startswith("run folder: ")
    for name in ("config.json", "best.pth", "training_history.json",
                 "training_history.csv", "training_curves.png", "final_metrics.json"):
        assert (out / name).exists(), name
    assert not (out / "last.pth").exists()  # the training state goes once the run is complete
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))
    assert os.path.getsize(out / "training_curves.png") > 20_000
    # each test image's outcome, in the split's order: what pairs two runs on one test split
    index, correct = run_contract.load_per_image(str(out / "test.per_image.npz"))["clean"]
    assert index.tolist() == list(range(final["n_test"]))
    assert correct.sum() == round(final["test_accuracy"] * final["n_test"])

    history = json.loads((out / "training_history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(h)
        assert 0 <= h["train_acc"] <= 1 and 0 <= h["val_acc"] <= 1
    assert final["test_accuracy"] > CASES["synthetic_3_epochs"].bound  # chance is 0.1
    assert final["synthetic"] and "SYNTHETIC" in final["data_description"]

    config = json.loads((out / "config.json").read_text())
    assert config["args"]["epochs"] == 3 and config["synthetic"]
    assert config["environment"]["torch"] == torch.__version__
    assert config["command"].startswith("python train.py --dataset synthetic")

    ckpt = utils.load_checkpoint(str(out / "best.pth"))
    assert set(ckpt) == {*utils.MODEL_KEYS, "format"}  # what evaluation needs, no optimizer
    rng = torch.get_rng_state()
    model = utils.model_from_checkpoint(ckpt)
    assert torch.equal(torch.get_rng_state(), rng)  # no initialization drawn, then overwritten
    assert ckpt["epoch"] == final["best_epoch"]
    loader = train.datasets.batch_loader(train.datasets.build_splits("synthetic").test, 256)
    _, acc = utils.evaluate(model, loader, torch.device("cpu"))
    assert acc == pytest.approx(final["test_accuracy"], abs=1e-6)


@pytest.mark.slow  # 18-24 s on an AVX2 EPYC (30 s before its runs were sized down)
def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch, capsys):
    flags = ["--epochs", "3", "--adv-train", "--attack", "pgd", "--iters", "2",
             "--dropout", "0.1", "--circle-weight", "0.1", "--train-subset", "128",
             "--val-size", "50", "--robust-val-samples", "8", "--select-by", "clean"]
    _, straight = run(tmp_path, *flags, name="straight")
    # both terms of the objective are logged, unweighted, and add up to the training loss
    history = json.loads((straight / "training_history.json").read_text())
    for row in history:
        assert row["train_circle"] > 0 and row["train_cross_entropy"] > 0
        assert row["train_loss"] == pytest.approx(row["train_cross_entropy"] + 0.1 * row["train_circle"],
                                                  rel=1e-4)
    final = json.loads((straight / "final_metrics.json").read_text())
    assert final["initial_circle"] == history[0]["first_step_circle"] and final["circle_weight"] == 0.1
    assert 0 <= final["test_ece"] <= 1

    real_epoch = train.train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of epoch 2
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *flags, name="resumed")
    message = capsys.readouterr().err
    assert "holds epochs 1-1 of 3" in message and "from epoch 2" in message
    assert message.strip().endswith("--resume") and "train.py --dataset synthetic" in message
    interrupted_state = utils.load_checkpoint(str(tmp_path / "resumed" / "last.pth"))
    assert interrupted_state["epoch"] == 1 and set(utils.RESUME_KEYS) <= set(interrupted_state)
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    run(tmp_path, *flags, "--resume", name="resumed")

    # every epoch's numbers (the last epoch's validation loss is computed from the final
    # weights) and the selected weights are the uninterrupted run's, bit for bit
    resumed = tmp_path / "resumed"

    def numbers(run_dir):
        return [{k: v for k, v in h.items() if k != "epoch_time_s"}
                for h in json.loads((run_dir / "training_history.json").read_text())]
    assert numbers(resumed) == numbers(straight) and len(numbers(resumed)) == 3
    a = utils.load_checkpoint(str(straight / "best.pth"))
    b = utils.load_checkpoint(str(resumed / "best.pth"))
    assert a["epoch"] == b["epoch"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # and the run folder holds only the records and the model, no training state
    assert not (resumed / "last.pth").exists()
    weights = sum(v.numel() * v.element_size() for v in a["model"].values())
    assert os.path.getsize(resumed / "best.pth") < weights * 1.02 + 200_000


def test_resume_with_other_flags_is_refused(tmp_path):
    # a finished run is checked against its config.json (its training state is gone)
    finished, _ = run(tmp_path, "--epochs", "1")
    with pytest.raises(SystemExit, match="use_bn"):
        run(tmp_path, "--epochs", "1", "--use-bn", "false", "--resume")
    with pytest.raises(SystemExit, match="--lr was 0.02, now 0.05"):
        run(tmp_path, "--epochs", "1", "--lr", "0.05", "--resume")
    # every flag that changes the result is guarded, each one named
    with pytest.raises(SystemExit) as err:
        run(tmp_path, "--epochs", "1", "--eps", "4/255", "--label-smoothing", "0.1",
            "--weight-decay", "0", "--circle-m", "0.3", "--resume")
    for flag in ("--eps", "--label-smoothing", "--weight-decay", "--circle-m"):
        assert f"{flag} was" in str(err.value), flag
    assert "Traceback" not in str(err.value)
    with pytest.raises(SystemExit, match="no .*last.pth"):
        run(tmp_path, "--epochs", "1", "--resume", name="empty")
    # flags that change nothing computed may differ; a finished run reports its result
    again, _ = run(tmp_path, "--epochs", "1", "--workers", "1", "--device", "cpu", "--resume")
    assert again == finished


def test_keep_weights_none_leaves_only_the_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "PROGRESS_LOG_S", -1)  # a progress line after every step
    final, out = run(tmp_path, "--epochs", "1", "--train-subset", "128", "--keep-weights", "none")
    # no terminal here, so no bar: a log still shows how far the epoch has got
    assert "  epoch 1: step 2/4, loss " in capsys.readouterr().out
    assert not list(out.glob("*.pth"))
    assert json.loads((out / "final_metrics.json").read_text()) == final
    assert (out / "config.json").exists() and (out / "training_history.json").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_forward = LabelSmoothingCrossEntropy.forward
    steps = []

    def poisoned(self, logits, target):
        steps.append(1)
        loss = real_forward(self, logits, target)
        return loss * math.nan if len(steps) == 15 else loss  # 12 steps per epoch
    monkeypatch.setattr(LabelSmoothingCrossEntropy, "forward", poisoned)
    with pytest.raises(utils.Diverged) as err:  # a SystemExit: an error exit on the command line
        run(tmp_path, "--epochs", "3")
    message = str(err.value)
    assert "epoch 2, step 3" in message and "global step 15" in message and "last.pth" in message
    assert utils.load_checkpoint(str(tmp_path / "run" / "last.pth"))["epoch"] == 1
    # the divergence is recorded as the run's outcome, with the command that produced it
    record = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert (record["epoch"], record["step"], record["global_step"], record["loss"]) == (2, 3, 15, "nan")
    assert record["command"] == json.loads((tmp_path / "run" / "config.json").read_text())["command"]
    assert not (tmp_path / "run" / "final_metrics.json").exists()


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(utils.CheckpointError, match="bad.pth"):
        utils.load_checkpoint(str(bad))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(utils.CheckpointError, match="not a train.py checkpoint"):
        utils.load_checkpoint(str(tmp_path / "other.pth"))
    with pytest.raises(utils.CheckpointError, match="does not exist"):
        utils.load_checkpoint(str(tmp_path / "missing.pth"))
    _, out = run(tmp_path, "--epochs", "1")
    data = (out / "best.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(utils.CheckpointError, match="truncated.pth"):
        utils.load_checkpoint(str(tmp_path / "truncated.pth"))
    ckpt = torch.load(out / "best.pth", weights_only=True)
    ckpt["format"] = 99
    torch.save(ckpt, tmp_path / "future.pth")
    with pytest.raises(utils.CheckpointError, match="format 99"):
        utils.load_checkpoint(str(tmp_path / "future.pth"))
    ckpt["format"] = utils.CHECKPOINT_FORMAT
    args = ckpt["model_args"]
    for wrong in ({"use_bn": False}, {"num_classes": 5}):  # extra keys; a shape that differs
        ckpt["model_args"] = {**args, **wrong}
        with pytest.raises(utils.CheckpointError, match="do not match model_args"):
            utils.model_from_checkpoint(ckpt, "mismatched.pth")
    ckpt["model_args"] = args  # built on the meta device: a tensor the file lacks must not stay empty
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if k != "fc.weight"}
    with pytest.raises(utils.CheckpointError, match="fc.weight"):
        utils.model_from_checkpoint(ckpt, "incomplete.pth")


def test_frozen_feature_fine_tuning_changes_only_the_classifier(tmp_path):
    small = ["--epochs", "1", "--train-subset", "128", "--val-size", "50"]
    _, source = run(tmp_path, *small, name="source")
    src = utils.load_checkpoint(str(source / "best.pth"))
    final, out = run(tmp_path, *small, "--init-from", str(source / "best.pth"),
                     "--freeze-features", name="finetune")
    tuned = utils.load_checkpoint(str(out / "best.pth"))
    assert tuned["model_args"]["mean"] == src["model_args"]["mean"]
    for key, value in src["model"].items():
        if key.startswith("fc."):
            assert not torch.equal(value, tuned["model"][key]), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, tuned["model"][key]), f"{key} changed while frozen"
    with pytest.raises(SystemExit, match="conflicts"):
        run(tmp_path, "--epochs", "1", "--init-from", str(source / "best.pth"),
            "--stem", "cifar", name="conflict")


def test_imagenet_weights_as_a_frozen_feature_extractor(tmp_path):
    weights = torchvision.models.resnet18().state_dict()  # stand-in for the ImageNet file
    torch.save(weights, tmp_path / "resnet18_imagenet.pth")
    _, out = run(tmp_path, "--epochs", "1", "--pretrained-weights",
                 str(tmp_path / "resnet18_imagenet.pth"), "--freeze-features")
    ckpt = utils.load_checkpoint(str(out / "best.pth"))
    assert ckpt["model_args"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert torch.equal(ckpt["model"]["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    assert torch.equal(ckpt["model"]["bn1.running_var"], weights["bn1.running_var"])
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(SystemExit, match="junk.pth"):
        run(tmp_path, "--epochs", "1", "--pretrained-weights", str(tmp_path / "junk.pth"),
            name="junk")


@pytest.mark.parametrize("attack, prob", [("fgsm", "1"), ("pgd", "1"), ("pgd", "0")])
def test_adversarial_training_replaces_batches(tmp_path, attack, prob):
    _, out = run(tmp_path, "--epochs", "1", "--adv-train", "--attack", attack, "--iters", "2",
                 "--adv-prob", prob, "--train-subset", "128", "--val-size", "50",
                 "--robust-val-samples", "16")
    history = json.loads((out / "training_history.json").read_text())
    assert history[0]["adv_batch_fraction"] == float(prob)


def test_options_of_the_study_run(tmp_path):
    for i, flags in enumerate([["--use-bn", "false", "--lr", "0.02", "--train-subset", "128",
                                "--val-size", "50"],
                               ["--optimizer", "adam", "--label-smoothing", "0.1",
                                "--train-subset", "128", "--val-size", "50"],
                               # the CIFAR stem trains in test_full_profile.py (every CIFAR-10
                               # recipe); here it made this run 16 s against ~3 s (one thread)
                               ["--circle-weight", "0.5", "--no-augment", "--train-subset", "64",
                                "--val-size", "50", "--batch-size", "16"]]):
        final, out = run(tmp_path, "--epochs", "1", *flags, name=f"opt{i}")
        assert math.isfinite(final["test_loss"])


def test_svhn_fixture_trains_end_to_end(tmp_path):
    from test_datasets import write_svhn_fixture
    write_svhn_fixture(str(tmp_path))
    final = train.main(case_argv("svhn_fixture_3_epochs", svhn=str(tmp_path))
                       + ["--out-dir", str(tmp_path / "svhn_run")])
    assert final["test_accuracy"] > CASES["svhn_fixture_3_epochs"].bound
    with pytest.raises(utils.NotAvailable, match="svhn .* not available"):
        train.main(["--dataset", "svhn", "--data-root", str(tmp_path / "nowhere"),
                    "--no-download", "--out-dir", str(tmp_path / "x")])


# ----------------------------------------------------------------------------- robustness

def test_robust_selection_keeps_the_most_robust_epoch_and_flags_a_collapse(tmp_path, monkeypatch,
                                                                           capsys):
    scripted = iter([0.20, 0.40, 0.10])  # epoch 3 collapses while clean accuracy rises
    monkeypatch.setattr(train, "robust_val_accuracy", lambda *a, **k: next(scripted))
    final, out = run(tmp_path, "--epochs", "3", "--schedule", "onecycle", "--adv-train",
                     "--attack", "fgsm_rs", "--adv-prob", "0.5", "--eps", "2/255")
    history = json.loads((out / "training_history.json").read_text())
    assert [h["val_pgd_acc"] for h in history] == [0.20, 0.40, 0.10]
    assert history[2]["val_acc"] > history[1]["val_acc"]  # the premise of the collapse
    assert final["selected_by"] == "robust" and final["best_epoch"] == 2
    assert utils.load_checkpoint(str(out / "best.pth"))["epoch"] == 2
    assert final["best_val_pgd_acc"] == 0.40 and final["robust_collapse_epochs"] == [3]
    assert history[2]["robust_collapse"] and "catastrophic overfitting" in capsys.readouterr().out


def test_selection_score_and_collapse_rule():
    history = [{"val_acc": 0.5, "val_pgd_acc": 0.3}, {"val_acc": 0.7, "val_pgd_acc": 0.1}]
    assert max(history, key=lambda h: train.selection_score(h, "robust")) is history[0]
    assert max(history, key=lambda h: train.selection_score(h, "clean")) is history[1]
    tie = [{"val_acc": 0.4, "val_pgd_acc": 0.0}, {"val_acc": 0.6, "val_pgd_acc": 0.0}]
    assert max(tie, key=lambda h: train.selection_score(h, "robust")) is tie[1]
    assert train.robust_collapse(history) and not train.robust_collapse(history[:1])
    assert not train.robust_collapse([history[1], history[0]])  # clean fell too: no collapse
    assert train.parse_args(["--adv-train"]).select_by == "robust"
    assert train.parse_args([]).select_by == "clean"
    assert train.parse_args(["--adv-train", "--attack", "fgsm_rs"]).alpha == pytest.approx(10 / 255)
    # the one PGD step rule, 2.5 eps / iters: 7 steps at 8/255 reach 2.5 eps together
    assert train.parse_args(["--adv-train"]).alpha == pytest.approx(2.5 * (8 / 255) / 7)
    assert train.parse_args(["--adv-train", "--iters", "10"]).alpha == pytest.approx(2 / 255)


def test_the_robust_validation_accuracy_is_pgd_on_a_fixed_sample(tmp_path):
    # one epoch: PGD-10 on its 100 validation images costs more than the epoch's training
    final, out = run(tmp_path, "--epochs", "1", "--adv-train", "--attack", "fgsm",
                     "--adv-prob", "1", "--eps", "2/255", "--robust-val-samples", "100",
                     "--select-by", "clean")
    history = json.loads((out / "training_history.json").read_text())
    for h in history:
        assert 0 <= h["val_pgd_acc"] <= h["val_acc"] + 0.05
        # a count of 100 images: k / 100 exactly, up to the float's rounding (0.07 * 100 is
        # 7.000000000000001)
        assert h["val_pgd_acc"] * 100 == pytest.approx(round(h["val_pgd_acc"] * 100), abs=1e-9)
    assert final["selected_by"] == "clean"


def test_loader_workers_do_not_change_the_weights(tmp_path):
    # augmentation, the adversarial coin flip and the attacks' starts all draw from seeded
    # generators of their own, never from a worker process's global state
    flags = ["--epochs", "1", "--adv-train", "--attack", "fgsm_rs", "--adv-prob", "0.5",
             "--train-subset", "160", "--robust-val-samples", "32"]
    _, a = run(tmp_path, *flags, "--workers", "0", name="w0")
    _, b = run(tmp_path, *flags, "--workers", "2", name="w2")
    wa = utils.load_checkpoint(str(a / "best.pth"))
    wb = utils.load_checkpoint(str(b / "best.pth"))
    history = json.loads((a / "training_history.json").read_text())
    assert 0 < history[0]["adv_batch_fraction"] < 1
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key


def test_a_huge_learning_rate_stops_the_run(tmp_path):
    with pytest.raises(SystemExit, match="diverged|loss became"):
        run(tmp_path, "--epochs", "2", "--lr", "1e6")


def test_the_readmes_first_run_works_on_the_bundled_digits(digits_model):
    """`train.py --dataset digits --demo` (the shared fixture is that run): 5 epochs on all
    1,170 training digits (fewer than the demo's 2,000), with the default schedule, and it
    learns."""
    _, final, run_dir = digits_model
    config = json.loads((run_dir / "config.json").read_text())
    assert final["epochs"] == 5 and config["data"]["sizes"]["train"] == 1170
    assert config["args"]["schedule"] == "onecycle"
    assert final["test_accuracy"] > CASES["digits_demo"].bound
