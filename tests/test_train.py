import json
import math
import os

import pytest
import torch
import torchvision

import train
import utils
from losses import LabelSmoothingCrossEntropy

# 12 steps per epoch; a low learning rate keeps BatchNorm's running statistics usable
# after so few steps.
TINY = ["--dataset", "synthetic", "--train-subset", "384", "--val-size", "200",
        "--batch-size", "32", "--lr", "0.02", "--seed", "0"]


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


def test_every_help_text_states_its_default():
    parser = train.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in formatter._get_help_string(action), f"--{action.dest}"


# ----------------------------------------------------------------------------- a real run

def test_training_learns_and_writes_every_artifact(tmp_path):
    final, out = run(tmp_path, "--epochs", "3", "--schedule", "onecycle")
    for name in ("config.json", "best.pth", "last.pth", "training_history.json",
                 "training_history.csv", "training_curves.png", "final_metrics.json"):
        assert (out / name).exists(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))
    assert os.path.getsize(out / "training_curves.png") > 20_000

    history = json.loads((out / "training_history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(h)
        assert 0 <= h["train_acc"] <= 1 and 0 <= h["val_acc"] <= 1
    assert final["test_accuracy"] > 0.6  # synthetic patterns are learnable; chance is 0.1
    assert final["synthetic"] and "SYNTHETIC" in final["data_description"]

    config = json.loads((out / "config.json").read_text())
    assert config["args"]["epochs"] == 3 and config["synthetic"]
    assert config["environment"]["torch"] == torch.__version__
    assert config["command"].startswith("python train.py --dataset synthetic")

    ckpt = utils.load_checkpoint(str(out / "best.pth"))
    assert set(utils.CHECKPOINT_KEYS) <= set(ckpt)
    model = utils.model_from_checkpoint(ckpt)
    assert ckpt["epoch"] == final["best_epoch"]
    loader = train.datasets.batch_loader(train.datasets.build_splits("synthetic").test, 256)
    _, acc = utils.evaluate(model, loader, torch.device("cpu"))
    assert acc == pytest.approx(final["test_accuracy"], abs=1e-6)


def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    flags = ["--epochs", "3", "--adv-train", "--attack", "pgd", "--iters", "2",
             "--dropout", "0.1", "--circle-weight", "0.1", "--train-subset", "128"]
    _, straight = run(tmp_path, *flags, name="straight")

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
    assert utils.load_checkpoint(str(tmp_path / "resumed" / "last.pth"))["epoch"] == 1
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    run(tmp_path, *flags, "--resume", name="resumed")

    a = utils.load_checkpoint(str(straight / "last.pth"))
    b = utils.load_checkpoint(str(tmp_path / "resumed" / "last.pth"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_with_other_flags_is_refused(tmp_path):
    run(tmp_path, "--epochs", "1")
    with pytest.raises(SystemExit, match="use_bn"):
        run(tmp_path, "--epochs", "1", "--use-bn", "false", "--resume")
    with pytest.raises(SystemExit, match="--lr 0.02 \\(now 0.05\\)"):
        run(tmp_path, "--epochs", "1", "--lr", "0.05", "--resume")
    with pytest.raises(SystemExit, match="no .*last.pth"):
        run(tmp_path, "--epochs", "1", "--resume", name="empty")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_forward = LabelSmoothingCrossEntropy.forward
    steps = []

    def poisoned(self, logits, target):
        steps.append(1)
        loss = real_forward(self, logits, target)
        return loss * math.nan if len(steps) == 15 else loss  # 12 steps per epoch
    monkeypatch.setattr(LabelSmoothingCrossEntropy, "forward", poisoned)
    with pytest.raises(SystemExit) as err:
        run(tmp_path, "--epochs", "3")
    message = str(err.value)
    assert "epoch 2, step 3" in message and "global step 15" in message and "last.pth" in message
    assert utils.load_checkpoint(str(tmp_path / "run" / "last.pth"))["epoch"] == 1


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
    data = (out / "last.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(utils.CheckpointError, match="truncated.pth"):
        utils.load_checkpoint(str(tmp_path / "truncated.pth"))
    ckpt = torch.load(out / "last.pth", weights_only=True)
    ckpt["format"] = 99
    torch.save(ckpt, tmp_path / "future.pth")
    with pytest.raises(utils.CheckpointError, match="format 99"):
        utils.load_checkpoint(str(tmp_path / "future.pth"))
    ckpt["format"] = utils.CHECKPOINT_FORMAT
    ckpt["model_args"] = {**ckpt["model_args"], "use_bn": False}
    with pytest.raises(utils.CheckpointError, match="do not match model_args"):
        utils.model_from_checkpoint(ckpt, "mismatched.pth")


def test_frozen_feature_fine_tuning_changes_only_the_classifier(tmp_path):
    _, source = run(tmp_path, "--epochs", "1", name="source")
    src = utils.load_checkpoint(str(source / "best.pth"))
    final, out = run(tmp_path, "--epochs", "1", "--init-from", str(source / "best.pth"),
                     "--freeze-features", name="finetune")
    tuned = utils.load_checkpoint(str(out / "last.pth"))
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
    ckpt = utils.load_checkpoint(str(out / "last.pth"))
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
                 "--adv-prob", prob, "--train-subset", "128")
    history = json.loads((out / "training_history.json").read_text())
    assert history[0]["adv_batch_fraction"] == float(prob)


def test_options_of_the_study_run(tmp_path):
    for i, flags in enumerate([["--use-bn", "false", "--lr", "0.02", "--train-subset", "128"],
                               ["--optimizer", "adam", "--label-smoothing", "0.1",
                                "--train-subset", "128"],
                               ["--circle-weight", "0.5", "--no-augment", "--stem", "cifar",
                                "--train-subset", "64", "--val-size", "50"]]):
        final, out = run(tmp_path, "--epochs", "1", *flags, name=f"opt{i}")
        assert math.isfinite(final["test_loss"])


def test_svhn_fixture_trains_end_to_end(tmp_path):
    from test_datasets import write_svhn_fixture
    write_svhn_fixture(str(tmp_path))
    final = train.main(["--dataset", "svhn", "--data-root", str(tmp_path), "--no-download",
                        "--epochs", "3", "--batch-size", "32", "--schedule", "onecycle",
                        "--lr", "0.02",
                        "--out-dir", str(tmp_path / "svhn_run")])
    assert final["test_accuracy"] > 0.5
    with pytest.raises(SystemExit, match="svhn .* not available"):
        train.main(["--dataset", "svhn", "--data-root", str(tmp_path / "nowhere"),
                    "--no-download", "--out-dir", str(tmp_path / "x")])


@pytest.mark.real_data
def test_mnist_few_thousand_images_one_epoch_reaches_95_percent(tmp_path, data_root):
    final = train.main(["--dataset", "mnist", "--data-root", data_root, "--no-download",
                        "--train-subset", "6000", "--val-size", "1000", "--epochs", "1",
                        "--batch-size", "64", "--no-augment",
                        "--schedule", "onecycle", "--lr", "0.02", "--nesterov",
                        "--out-dir", str(tmp_path)])
    assert final["n_test"] == 10000 and final["data_description"] == "MNIST (pixel-exact)"
    assert final["test_accuracy"] >= 0.95
