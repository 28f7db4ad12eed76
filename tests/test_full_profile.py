"""The full profile, proven on a CPU before it meets a GPU: every distinct run type of its
matrix (each distinct set of flags and categorical values) runs a few steps on tiny data and
writes its outputs; --plan prints its runs and a total without training anything."""

import copy
import json
import os
import re

import numpy as np
import pytest
import torch

import datasets
import run_contract
import run_report_pipeline as pipeline
import utils
from study import looks, plan, profiles

SIZES = {"--data-root", "--out", "--out-dir", "--checkpoint", "--init-from",
         "--pretrained-weights", "--dataset"}  # where things are, not what is computed


def run_type(run):
    """What makes a run a different kind: its script, its flags, and every value of them that
    is a word (an attack, a stem, a schedule), not a number, a size or a path."""
    kind, argv, i = [run.script], run.argv, 0
    while i < len(argv):
        flag = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        numeric = value is None or re.fullmatch(r"[-+0-9./e]+", value)
        kind.append(flag if flag in SIZES or numeric else f"{flag}={value}")
        i += 1 if value is None else 2
    if run.choice:
        kind.append(f"choice {run.choice.flag}")
    return tuple(sorted(kind))


def tiny(profile):
    """The profile with every size shrunk (three steps of 2 images: the one-cycle schedule's
    minimum; two attack steps per batch; PGD-10 validation, the attacks, the sample grid and
    AutoAttack, one step of each of its attacks, on two images) and every flag name and word
    kept. The CIFAR stem costs ~16x the ImageNet stem per image: each attacked image counts."""
    p = copy.deepcopy(profile)
    for budget in [v for v in p.values() if isinstance(v, dict) and "epochs" in v] + list(p["recipes"].values()):
        budget.update(epochs=1, batch_size=2, train_subset=6, robust_val_samples=2)
        if "iters" in budget:
            budget["iters"] = 2
        if "val_size" in budget:
            budget["val_size"] = 10  # one image per class: a stratified split's least
    p["eval"].update(max_batches=1, sweep_max_batches=1, iter_sweep_max_batches=1, batch_size=2,
                     umap_samples=40, pgd_iters_list="1,2", sweep_epsilons="0,8/255",
                     autoattack_samples=2, autoattack_steps=1, grid_samples=2)
    return p


def write_tiny_data(root):
    """<name>-<split>.npz in the real layout for every domain read from files."""
    rng = np.random.default_rng(0)
    for name, domain in datasets.DOMAINS.items():
        if domain.source == "bundled":
            continue
        h, w, c = domain.native
        for split, n in (("train", 100), ("test", 12)):
            np.savez(os.path.join(root, f"{name}-{split}.npz"),
                     images=rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
                     labels=np.arange(n, dtype=np.int64) % 10)


def _with_needs(names, by_name):
    todo, out = list(names), set()
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += by_name[name].needs_all
    return out


@pytest.mark.slow  # ~30 runs, the CIFAR stem among them: 1.5-2.5 min on one core
def test_every_distinct_run_type_of_the_full_profile_runs_on_cpu(tmp_path, monkeypatch):
    import torchvision

    data = tmp_path / "data"
    data.mkdir()
    write_tiny_data(str(data))
    weights = tmp_path / "imagenet_resnet18.pth"  # torchvision's layout, random values
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    argv = ["--profile", "full", "--data-root", str(data), "--no-download", "--device", "cpu",
            "--checkpoints", str(tmp_path / "ck"), "--report-dir", str(tmp_path / "report"),
            "--pretrained-weights", str(weights)]
    # what the full profile is for: the CIFAR stem and the published recipes
    full = {r.name: r for r in plan.build_matrix(pipeline.parse_args(argv), profiles.PROFILES["full"])}
    assert {r.stem for r in full.values() if r.group == "cifar10"} == {"cifar"}
    assert "--schedule multistep" in full["cifar10_pgd_at"].command
    assert "--iters 10" in full["cifar10_pgd_at"].command
    assert "--autoattack-version standard" in full["eval_cifar10_pgd_at"].command

    monkeypatch.setitem(profiles.PROFILES, "full", tiny(profiles.PROFILES["full"]))
    runs = plan.build_matrix(pipeline.parse_args(argv), profiles.PROFILES["full"])
    by_name = {r.name: r for r in runs}
    kinds = {}
    for run in runs:
        kinds.setdefault(run_type(run), run.name)
    assert len(kinds) >= 20  # ablations, digits, transfer, every CIFAR-10 recipe, evaluations
    chosen = _with_needs(kinds.values(), by_name)

    code = pipeline.main(argv + ["--only", *sorted(chosen)])
    outcomes = json.loads((tmp_path / "report" / "figures" / "metrics_summary.json").read_text())["runs"]
    autoattacked = 0
    for name in chosen:
        assert outcomes[name]["status"] in ("done", "diverged"), (name, outcomes[name])
        run = by_name[name]
        if run.script == "eval":
            prefix = run.argv[run.argv.index("--out") + 1]
            assert os.path.exists(run_contract.eval_record(prefix)), name
            assert os.path.exists(run_contract.eval_per_image(prefix)), name
            if "--autoattack-version" in run.argv:  # the standard version, reduced throughout
                record = utils.load_json(run_contract.eval_record(prefix))["autoattack"]
                assert record["version"] == "standard" and record["steps"] == 1, name
                assert record["square_queries"] == 50, name
                autoattacked += 1
        else:
            files = run_contract.TrainFiles(run.argv[run.argv.index("--out-dir") + 1])
            assert os.path.exists(files.final) or os.path.exists(files.diverged), name
    assert autoattacked >= 2 and code == 0  # the standard models of both seeds


def test_plan_prints_every_run_and_a_total_without_training(tmp_path, capsys):
    argv = ["--profile", "quick", "--checkpoints", str(tmp_path / "ck"), "--device", "cpu", "--plan"]
    assert pipeline.main(argv) == 0
    out = capsys.readouterr().out
    runs = looks.matrix(pipeline.parse_args(argv), profiles.PROFILES["quick"], 1)  # look 1's
    for run in runs:
        assert run.name in out
    total = re.search(r"estimated total: ([0-9.]+) (min|h)", out)
    assert total and float(total.group(1)) > 0
    assert "images/s" in out
    assert not (tmp_path / "ck").exists()  # nothing trained, nothing written
    # the look schedule after it, and look 1 within 120 minutes on the reference CPU (its
    # estimate there is the runs' cost at the reference rate: the same on every machine)
    first = re.search(r"look 1 \(this plan\): \d+ runs added, [0-9.]+ (?:min|h) / ~([0-9.]+) min", out)
    assert first and float(first.group(1)) <= 120, out[-800:]
    assert "look 2:" in out and "the fixed design" in out
