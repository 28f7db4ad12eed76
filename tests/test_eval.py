import dataclasses
import json
import os

import matplotlib.image
import numpy as np
import pytest
import torch

import attacks
import datasets
import eval as evaluate
import metrics
import run_contract
import utils

FAST = ["--batch-size", "64", "--max-batches", "2", "--sweep-max-batches", "1",
        "--iter-sweep-max-batches", "1", "--sweep-epsilons", "0,4/255,16/255,64/255",
        "--pgd-iters-list", "1,3,10", "--umap-samples", "300", "--eps", "16/255",
        "--alpha", "4/255", "--autoattack-samples", "24", "--autoattack-version", "fast",
        "--autoattack-steps", "25", "--corruption-samples", "60"]


@pytest.fixture(scope="module")
def evaluated(digits_model, tmp_path_factory):
    _, _, run_dir = digits_model
    out = tmp_path_factory.mktemp("eval") / "digits"
    result = evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "digits",
                            "--out", str(out)] + FAST)
    return result, out


def test_every_file_is_written_with_a_real_image(evaluated):
    result, out = evaluated
    expected = ["umap_features", "adv_examples", "confusion_matrix", "per_class_accuracy",
                "classwise_prf1", "reliability_diagram", "confidence_coverage", "topk_accuracy",
                "robustness_sweep", "pgd_iter_sweep", "corruption_heatmap"]
    for name in expected:
        path = f"{out}.{name}.png"
        assert os.path.exists(path), name
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 400, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    saved = json.loads(open(f"{out}.metrics.json").read())
    assert saved["clean_accuracy"] == result["clean_accuracy"]
    assert set(saved["files"]) == {f"{n}.png" for n in expected}


def test_umap_projects_fewer_points_than_its_neighbourhood(evaluated):
    # after the fixture, so UMAP's one-off compile is already paid
    points = evaluate._umap(np.random.default_rng(0).normal(size=(8, 512)).astype(np.float32), 0)
    assert points.shape == (8, 2) and np.isfinite(points).all()


def test_umap_compiles_are_kept_on_disk_for_the_next_process(evaluated):
    import umap.umap_

    # the fixture projected with UMAP: its compile was either read from the cache or written
    stats = umap.umap_.smooth_knn_dist.stats
    assert stats.cache_path, "UMAP compiled without a disk cache"
    assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) >= 1
    assert any(f.startswith("umap_.smooth_knn_dist") and f.endswith(".nbi")
               for f in os.listdir(stats.cache_path))


def test_metrics_json_holds_every_number(evaluated, digits_model):
    result, _ = evaluated
    _, final, _ = digits_model
    for key in ("clean_accuracy", "ece", "ece_temperature_scaled", "temperature", "aurc",
                "fgsm_accuracy", "pgd_accuracy", "noise_accuracy", "macro_precision",
                "macro_recall", "macro_f1"):
        assert key in result, key
        if key != "temperature":
            assert 0.0 <= result[key] <= 1.0, key
    assert result["temperature"] > 0
    # the full test split, and the same accuracy train.py reported for best.pth
    assert result["n_samples"]["clean"] == 497
    assert result["clean_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert set(result["topk"]) == {"1", "2", "3", "5"}
    assert result["topk"]["1"] == pytest.approx(result["clean_accuracy"])
    assert set(result["selective_accuracy"]) == {"0.8", "0.9"}
    assert result["selective_accuracy"]["0.8"] >= result["clean_accuracy"] - 1e-9
    assert result["n_samples"]["attacks"] == 128 and result["n_samples"]["sweep"] == 64
    assert len(result["robustness_sweep"]["pgd"]) == 4 and len(result["pgd_iter_sweep"]["pgd"]) == 3
    assert result["robustness_sweep"]["pgd"][0] == pytest.approx(result["robustness_sweep"]["clean"])
    assert np.array(result["confusion_matrix"]).sum() == 497
    assert result["feature_projection"]["method"] == "UMAP"
    assert result["checkpoint"]["trained_on"] == "digits"


def test_sanity_checks_pass_on_a_sound_attack(evaluated, capsys):
    result, _ = evaluated
    assert set(result["sanity_checks"]) == {
        "perturbation_within_eps", "adversarial_in_pixel_range", "pgd_le_fgsm_le_clean",
        "fgsm_le_noise", "pgd_large_eps_near_zero", "more_pgd_iters_not_weaker",
        "autoattack_le_pgd", "pgd_overestimate"}
    assert all(result["sanity_checks"].values()), result["sanity_details"]
    assert max(result["max_perturbation"].values()) <= 16 / 255 + 1e-6


def test_a_broken_attack_is_flagged(digits_model, tmp_path, monkeypatch, capsys):
    _, _, run_dir = digits_model

    def weak_pgd(model, x, y, eps, alpha, iters, restarts, generator):
        # ignores the gradient and leaves the eps-ball, at one corner pixel only: a shift of
        # every pixel by 2 eps would itself take a model to chance at the sweep's 64/255
        x_adv = x.clone()
        x_adv[..., 0, 0] += 2 * eps
        return x_adv.clamp(0, 1)
    monkeypatch.setitem(attacks.ATTACKS, "pgd", dataclasses.replace(attacks.ATTACKS["pgd"], run=weak_pgd))
    result = evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "digits",
                            "--out", str(tmp_path / "broken"), "--components", "attacks", "sweep",
                            "iter-sweep"] + FAST)
    checks = result["sanity_checks"]
    assert checks["perturbation_within_eps"] is False
    assert checks["pgd_le_fgsm_le_clean"] is False
    assert checks["pgd_large_eps_near_zero"] is False
    assert "WARNING: FAILED perturbation_within_eps" in capsys.readouterr().out
    assert json.loads((tmp_path / "broken.metrics.json").read_text())["sanity_checks"] == checks


def test_every_accuracy_carries_its_count_and_interval(evaluated):
    result, _ = evaluated
    for key in ("clean_accuracy", "attack_subset_clean_accuracy", "fgsm_accuracy",
                "pgd_accuracy", "noise_accuracy", "autoattack_accuracy"):
        n = result[f"{key}_n"]
        assert result[f"{key}_ci95"] == metrics.wilson_ci(round(result[key] * n), n), key
        low, high = result[f"{key}_ci95"]
        assert low <= result[key] <= high, key
    assert result["clean_accuracy_n"] == 497 and result["pgd_accuracy_n"] == 128
    for sweep in ("robustness_sweep", "pgd_iter_sweep"):
        s = result[sweep]
        assert len(s["pgd_ci95"]) == len(s["pgd"])
        assert all(lo <= a <= hi for a, (lo, hi) in zip(s["pgd"], s["pgd_ci95"]))
    assert len(result["per_class_accuracy_ci95"]) == 10 and set(result["topk_ci95"]) == {"1", "2", "3", "5"}
    assert set(result["selective_accuracy_ci95"]) == {"0.8", "0.9"}


def test_per_image_outcomes_match_the_counts_and_name_the_images(evaluated):
    result, out = evaluated
    per_image = run_contract.load_per_image(run_contract.eval_per_image(str(out)))
    cells = [f"corruption_{c}_s{s}" for c, sev in result["corruptions"]["accuracy"].items() for s in sev]
    assert set(per_image) == {"clean", "attack_subset_clean", "fgsm", "pgd", "noise", "autoattack_clean",
                              "autoattack", "autoattack_pgd", "corruption_clean", *cells}
    assert len(cells) == 15  # MNIST-C for a digit model
    for name, key in (("clean", "clean"), ("attack_subset_clean", "attack_subset_clean"),
                      ("fgsm", "fgsm"), ("pgd", "pgd"), ("noise", "noise"),
                      ("autoattack", "autoattack"), ("autoattack_pgd", "autoattack_pgd")):
        index, correct = per_image[name]
        assert correct.dtype == bool and len(index) == len(correct) == result[f"{key}_accuracy_n"], name
        assert correct.sum() == round(result[f"{key}_accuracy"] * len(correct)), name
    index, _ = per_image["pgd"]  # the seeded order's first images, each once
    order = torch.randperm(result["clean_accuracy_n"], generator=torch.Generator().manual_seed(result["params"]["seed"]))
    assert index.tolist() == order[:len(index)].tolist()
    assert per_image["autoattack"][0].tolist() == order[:result["autoattack_accuracy_n"]].tolist()
    n = result["corruptions"]["n"]
    for name in ["corruption_clean", *cells]:  # every model scores the same corrupted images
        assert per_image[name][0].tolist() == order[:n].tolist(), name
    assert per_image["corruption_clean"][1].sum() == round(result["corruption_clean_accuracy"] * n)
    for name, severities in result["corruptions"]["accuracy"].items():
        for s, accuracy in severities.items():
            assert per_image[f"corruption_{name}_s{s}"][1].sum() == round(accuracy * n), name
    assert (per_image["clean"][0] == np.arange(result["clean_accuracy_n"])).all()
    # an image AutoAttack leaves correct was correct clean: its outcomes are nested
    assert not (per_image["autoattack"][1] & ~per_image["autoattack_clean"][1]).any()


def test_autoattack_is_at_least_as_strong_as_pgd(evaluated):
    result, _ = evaluated
    aa = result["autoattack"]
    assert aa["version"] == "fast" and aa["n"] == 24 and aa["complete"] and not aa["errors"]
    assert aa["steps"] == 25 and evaluate.build_parser().parse_args(
        ["--checkpoint", "x", "--dataset", "digits", "--out", "y"]).autoattack_steps == 100
    assert list(aa["per_attack"]) == ["clean", "apgd-ce", "apgd-t"]
    assert aa["square_queries"] is None  # the fast version has no Square
    steps = list(aa["per_attack"].values())
    assert all(b <= a for a, b in zip(steps, steps[1:]))  # each attack only removes images
    # the same fraction, once as a count over n and once as a float32 mean: not bit-equal
    assert result["autoattack_accuracy"] == pytest.approx(steps[-1], abs=1e-6)
    assert result["autoattack_accuracy"] <= result["autoattack_pgd_accuracy"]
    assert result["autoattack_pgd_accuracy"] < steps[0]  # the model is attackable at 16/255
    assert result["robustness_sweep"]["autoattack"]["accuracy"] == result["autoattack_accuracy"]


def test_our_autoattack_ensemble_is_the_librarys_with_the_papers_iterations(digits_model):
    import torchattacks
    model, _, _ = digits_model
    ours = [a for _, a in evaluate.autoattack_ensemble(model, 8 / 255, "standard", 10, 0)]
    theirs = torchattacks.AutoAttack(model, eps=8 / 255, version="standard", seed=0)._autoattack.attacks
    assert [type(a) for a in ours] == [type(a) for a in theirs]
    for a, b in zip(ours, theirs):
        for attr in ("eps", "norm", "n_restarts", "loss", "n_queries", "n_target_classes",
                     "multi_targeted", "seed"):
            assert getattr(a, attr, None) == getattr(b, attr, None), (type(a).__name__, attr)
    # Croce & Hein's standard version: 100 iterations for APGD-CE, APGD-T and FAB-T
    # (torchattacks.AutoAttack leaves them at 10), 9 target classes, 5,000 Square queries
    assert [getattr(a, "steps", None) for a in ours] == [100, 100, 100, None]
    assert [getattr(b, "steps", None) for b in theirs] == [10, 10, 10, None]
    assert ours[1].n_target_classes == ours[2].n_target_classes == 9 and ours[3].n_queries == 5000
    # a reduced run (fewer steps, a smoke test) is reduced throughout: Square's queries too
    reduced = [a for _, a in evaluate.autoattack_ensemble(model, 8 / 255, "standard", 10, 0, steps=2)]
    assert [getattr(a, "steps", None) for a in reduced] == [2, 2, 2, None]
    assert reduced[3].n_queries == evaluate.square_queries(2) == 100
    fast = evaluate.autoattack_ensemble(model, 8 / 255, "fast", 10, 0)
    assert [name for name, _ in fast] == ["apgd-ce", "apgd-t"]


def test_fab_runs_in_the_standard_ensemble(digits_model, tmp_path, monkeypatch):
    # torchattacks 3.5.1's FAB .view()s the input gradient, which keeps a channels-last
    # input's layout: "view size is not compatible with input tensor's size and stride".
    # eval.py hands AutoAttack standard-layout inputs, so all four attacks run.
    import torchattacks
    model, _, run_dir = digits_model
    x, y = datasets.build_eval_split("digits", "test")[0][list(range(0, 497, 50))]
    fab = torchattacks.FAB(model.eval(), eps=16 / 255, multi_targeted=True, n_classes=10,
                           steps=3, seed=0)  # the layout is the point here, not the strength
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        fab(x.contiguous(memory_format=torch.channels_last), y)
    assert (fab(x, y) - x).abs().max() <= 16 / 255 + 1e-6
    # eval.py's own path, with FAB-T alone and 3 iterations to keep the test short (on the
    # demo model, 12 images: 33% left after 3, 5 and 10 steps alike, 92% clean; 5 s vs 15 s)
    monkeypatch.setitem(evaluate.AUTOATTACK_VERSIONS, "standard", ("fab-t",))
    result = evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "digits",
                            "--out", str(tmp_path / "aa"), "--components", "autoattack",
                            "--autoattack-version", "standard", "--autoattack-samples", "12",
                            "--autoattack-steps", "3",
                            "--eps", "16/255", "--batch-size", "64"])
    aa = result["autoattack"]
    assert aa["complete"] and not aa["errors"], aa["errors"]
    assert list(aa["per_attack"]) == ["clean", "fab-t"]
    assert aa["per_attack"]["fab-t"] < aa["per_attack"]["clean"]  # FAB really attacked


def test_the_validation_split_is_the_one_training_carved():
    ckpt = {"config": {"data": {"dataset": "cifar10",
                                "split": {"seed": 3, "val_size": 500, "train_subset": None}}}}
    assert evaluate.training_validation_split(ckpt, "cifar10") == (500, 3)
    assert evaluate.training_validation_split(ckpt, "cifar10", 200) == (200, 3)
    assert evaluate.training_validation_split(ckpt, "mnist") == (None, 0)  # another dataset


def test_a_model_is_evaluated_on_another_dataset(digits_model, tmp_path, capsys):
    _, _, run_dir = digits_model
    result = evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "synthetic",
                            "--out", str(tmp_path / "x"), "--components", "confusion", "calibration"])
    assert result["checkpoint"]["trained_on"] == "digits" and result["synthetic"]
    assert "the model was trained on digits, not synthetic" in capsys.readouterr().out
    assert result["n_samples"]["clean"] == datasets.SYNTHETIC_SIZES["test"] and "ece" in result


@pytest.mark.parametrize("flags, message", [
    (["--sweep-epsilons", ","], "empty"),
    (["--pgd-iters-list", "0,5"], ">= 1"),
    (["--iters", "0"], ">= 1"),
    (["--eps", "9"], "within [0, 1]"),
    (["--coverage-points", "1.5"], "(0, 1]"),
])
def test_invalid_flags_are_rejected(flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        evaluate.build_parser().parse_args(["--checkpoint", "x", "--dataset", "digits",
                                            "--out", "y"] + flags)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_bad_checkpoints_give_a_clear_error_naming_the_file(tmp_path, digits_model):
    for name, content in (("empty.pth", b""), ("text.pth", b"hello")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit, match=name) as err:
            evaluate.main(["--checkpoint", str(tmp_path / name), "--dataset", "digits",
                           "--out", str(tmp_path / "o")])
        assert not isinstance(err.value, utils.NotAvailable)  # a bad file: FAILED, not "not run"
        # torch's advice to load with weights_only=False would run a stranger's code
        assert "weights_only" not in str(err.value) and "train.py wrote" in str(err.value)
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pth"), "--dataset", "digits",
                       "--out", str(tmp_path / "o")])
    _, _, run_dir = digits_model
    with pytest.raises(utils.NotAvailable, match="svhn .*not available"):
        evaluate.main(["--checkpoint", str(run_dir / "best.pth"), "--dataset", "svhn",
                       "--data-root", str(tmp_path), "--no-download", "--out", str(tmp_path / "o")])


def test_the_readme_names_the_figures_eval_writes():
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")).read()
    listed = re.search(r"`PREFIX\.\{([^}]*)\}\.png`", readme).group(1).split(",")
    written = [f.removesuffix(".png") for files in evaluate.COMPONENT_FILES.values() for f in files]
    assert sorted(listed) == sorted(written)
