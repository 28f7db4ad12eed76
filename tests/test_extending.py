"""Extending the study is one entry: a new attack, or a new domain, reaches every table and
figure with no other edit (README, "To add X, edit Y")."""

import dataclasses

import pytest

import attacks
import datasets
import eval as evaluate
import plots
from reporting import common
from reporting import robustness
from reporting import transfer
import run_report_pipeline as pipeline
from study import plan
import train
from test_report import cifar  # hand-made records


def _blank(model, x, y, eps, alpha, iters, restarts, generator):
    """A toy attack: every pixel to 0.5 (moved at most eps): no gradient, so easy to check."""
    return (x + (0.5 - x).clamp(-eps, eps)).clamp(0, 1)


@pytest.fixture
def toy_attack(monkeypatch):
    entry = attacks.Attack(_blank, "grey blank", "#8c564b", evaluated=True)
    monkeypatch.setitem(attacks.ATTACKS, "blank", entry)
    return entry


def _legends(monkeypatch):
    """Legend texts of every figure saved while patched."""
    seen = []

    def save(fig, path):
        seen.extend(t.get_text() for ax in fig.axes if ax.get_legend()
                    for t in ax.get_legend().get_texts())
        fig.savefig(path)
    monkeypatch.setattr(plots, "_save", save)
    return seen


def test_a_new_attack_reaches_evals_json_the_robustness_table_and_the_figures(
        toy_attack, digits_model, tmp_path, monkeypatch):
    _, _, run_dir = digits_model
    legends = _legends(monkeypatch)
    result = evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "digits",
                            "--out", str(tmp_path / "toy"), "--components", "attacks", "sweep",
                            "--max-batches", "1", "--sweep-max-batches", "1", "--batch-size", "64",
                            "--sweep-epsilons", "0,8/255", "--autoattack-samples", "0"])
    assert 0 <= result["blank_accuracy"] <= 1 and len(result["blank_accuracy_ci95"]) == 2
    assert len(result["robustness_sweep"]["blank"]) == 2
    assert any(text.startswith("grey blank") for text in legends)

    # the report's robustness table and model figure, from hand-made records
    runs, results = [], {}
    cifar(runs, results, "std", dict(adversarial=False, circle=False), (0.80, 0.10, 0.01, 0.0))
    results["eval_std"].update(blank_accuracy=0.5, blank_accuracy_ci95=[0.45, 0.55])
    study = common.Study(runs, results, "test", {}, "python run_report_pipeline.py", "data")
    headers = [h for h, _ in robustness.robust_columns()]
    assert headers.index("grey blank") < headers.index("AutoAttack")  # an attack, not a baseline
    legends.clear()
    md = robustness.robustness_section(study, robustness.robustness_rows(study), str(tmp_path),
                                   str(tmp_path), str(tmp_path))
    table_head = next(line for line in md if line.startswith("| model"))
    assert "| grey blank |" in table_head and "| 50.0 ± 5.0 |" in "\n".join(md)
    assert "grey blank" in legends  # the model comparison's bars


def test_a_new_digit_domain_is_a_transfer_domain_of_the_smoke_profile(monkeypatch, tmp_path):
    toy = dataclasses.replace(datasets.DOMAINS["digits"], name="toydigits")  # 8x8 grey digits
    monkeypatch.setitem(datasets.DOMAINS, "toydigits", toy)
    args = pipeline.parse_args(["--profile", "smoke", "--checkpoints", str(tmp_path)])
    runs = {r.name: r for r in plan.build_matrix(args, pipeline.PROFILES["smoke"])}
    for name in ("toydigits_scratch", "toydigits_target_only", "transfer_toydigits_to_usps_direct",
                 "transfer_usps_to_toydigits_finetune", "transfer_svhn_to_toydigits_direct",
                 "transfer_cifar10_to_toydigits_finetune", "transfer_imagenet_to_toydigits_finetune"):
        assert name in runs, name
    # the report's transfer claims place it: grey, and a change of handwriting from MNIST
    assert "toydigits" in transfer.grey_domains() and "toydigits" in transfer.handwriting_targets()
    # and the scripts take it as it was declared
    final = train.main(["--dataset", "toydigits", "--epochs", "1", "--train-subset", "128",
                        "--batch-size", "32", "--out-dir", str(tmp_path / "run"),
                        "--keep-weights", "none"])
    assert final["dataset"] == "toydigits" and final["n_test"] == datasets.DIGITS_TEST_SIZE
