"""Regenerate the whole study: train the experiment matrix, evaluate it, write report/.

    python run_report_pipeline.py --data-root ../shared/data

Every run is the command a person would type (train.py / eval.py main(argv)), written into
the report. Runs whose outputs are complete for the same command are skipped (--force redoes
them); an interrupted training run resumes. A run that cannot happen (missing dataset,
NaN, crash) is reported as "not run" with its reason, and the rest go on.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field

import utils

# ----------------------------------------------------------------------------- profiles
# Budgets per experiment group. Any flag below can still be overridden on the command line.

# Ablation variants: name -> flags added to the baseline's. "no_bn" gets its own working
# learning rate; "no_bn_same_lr" keeps the baseline's, which is what "BatchNorm eases
# optimization" is about.
ABLATIONS = {
    "baseline": [],
    "no_bn": ["--use-bn", "false", "--lr", "0.02"],
    "no_bn_same_lr": ["--use-bn", "false"],
    "label_smoothing": ["--label-smoothing", "0.1"],
    "adam": ["--optimizer", "adam", "--lr", "0.001"],
    "no_augment": ["--no-augment"],
    "dropout": ["--dropout", "0.3"],
}
# Circle Loss at gamma 256, m 0.25 starts near 150 nats on a fresh ResNet18 (CIFAR-10, batch
# 128) against cross-entropy's 2.3-2.5: weight ~0.016 makes the two terms equal at the first
# step. The sweep brackets that point by 4x either way; the validation split picks one.
CIRCLE_WEIGHTS = ("0.004", "0.016", "0.064")

PROFILES = {
    # Tiny budgets on a synthetic CIFAR-10 stand-in and two small real digit domains:
    # exercises the whole chain, and every outcome a run can have, in about two minutes.
    "smoke": {
        "no_download": True,  # a test-sized profile never pulls a dataset from the internet
        "datasets": {"cifar10": "synthetic", "mnist": "synthetic", "svhn": "svhn"},
        # real but small digit domains (USPS needs the data root; SVHN is never downloaded)
        "digit_domains": ["usps", "digits", "svhn"], "framing_pair": ("digits", "usps"),
        "seeds": [0, 1],
        # a learning rate no network survives: the "diverged" outcome, end to end
        "extra_ablations": {"diverge_check": ["--lr", "1e6"]},
        "cifar10": {"epochs": 2, "train_subset": 256, "batch_size": 32, "lr": 0.02,
                    "iters": 2, "alpha": "4/255", "adv_prob": 0.5},
        "ablation": {"epochs": 1, "train_subset": 256, "batch_size": 32, "lr": 0.02},
        "digit": {"epochs": 1, "train_subset": 512, "batch_size": 64, "lr": 0.02},
        "digits": {"epochs": 1, "train_subset": 512, "batch_size": 64, "lr": 0.02},
        "finetune": {"epochs": 2, "train_subset": 128, "batch_size": 32, "lr": 0.05,
                     "val_size": 100},
        "target_only": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        "eval": {"max_batches": 1, "sweep_max_batches": 1, "iter_sweep_max_batches": 1,
                 "batch_size": 32, "umap_samples": 200, "pgd_iters_list": "1,2,5",
                 "sweep_epsilons": "0,2/255,8/255,32/255", "autoattack_samples": 32,
                 "autoattack_version": "fast"},
    },
    # Real data sized for a 2-core CPU: the whole matrix in about 80 minutes (AVX-512 CPU).
    # Every CIFAR-10 model, standard or adversarially trained, has one budget, so the cost of
    # adversarial training is not confounded with the schedule. Adversarial training attacks
    # every batch (FGSM with a random start at step 10/255, or a 2-step PGD whose step
    # reaches the eps-ball's surface); the short schedules drop the colour jitter.
    "quick": {
        "datasets": {"cifar10": "cifar10", "mnist": "mnist", "svhn": "svhn"},
        "digit_domains": ["mnist", "usps", "digits", "mnistm", "svhn"],
        "framing_pair": ("mnist", "usps"),
        "seeds": [0, 1, 2],
        "cifar10": {"epochs": 8, "train_subset": None, "batch_size": 128, "lr": 0.2,
                    "iters": 2, "alpha": "10/255", "adv_prob": 1.0, "color_jitter": 0.0},
        "ablation": {"epochs": 4, "train_subset": 10000, "batch_size": 128, "lr": 0.1,
                     "color_jitter": 0.0},
        "digit": {"epochs": 1, "train_subset": None, "batch_size": 128, "lr": 0.05},
        "digits": {"epochs": 15, "train_subset": None, "batch_size": 64, "lr": 0.05},
        "finetune": {"epochs": 10, "train_subset": 1000, "batch_size": 64, "lr": 0.05,
                     "val_size": 1000},
        "target_only": {"epochs": 30, "batch_size": 64, "lr": 0.05},
        "eval": {"max_batches": 4, "sweep_max_batches": 1, "iter_sweep_max_batches": 1,
                 "batch_size": 256, "umap_samples": 2000, "pgd_iters_list": "1,2,5,10,20",
                 "sweep_epsilons": "0,2/255,4/255,8/255,16/255,32/255,64/255",
                 "autoattack_samples": 1000, "autoattack_version": "fast"},
    },
    # The study's long schedules, for GPUs (--device cuda --jobs N, or --launcher slurm).
    "full": {
        "datasets": {"cifar10": "cifar10", "mnist": "mnist", "svhn": "svhn"},
        "digit_domains": ["mnist", "usps", "digits", "mnistm", "svhn"],
        "framing_pair": ("mnist", "usps"),
        "seeds": [0, 1, 2],
        "cifar10": {"epochs": 80, "train_subset": None, "batch_size": 128, "lr": 0.1,
                    "iters": 7, "alpha": "2/255", "adv_prob": 0.5},
        "ablation": {"epochs": 80, "train_subset": None, "batch_size": 128, "lr": 0.1},
        "digit": {"epochs": 20, "train_subset": None, "batch_size": 128, "lr": 0.05},
        "digits": {"epochs": 40, "train_subset": None, "batch_size": 64, "lr": 0.05},
        "finetune": {"epochs": 20, "train_subset": 1000, "batch_size": 64, "lr": 0.05,
                     "val_size": 1000},
        "target_only": {"epochs": 60, "batch_size": 64, "lr": 0.05},
        "eval": {"max_batches": 40, "sweep_max_batches": 8, "iter_sweep_max_batches": 8,
                 "batch_size": 256, "umap_samples": 5000, "pgd_iters_list": "1,2,5,10,20,50,100",
                 "sweep_epsilons": "0,1/255,2/255,4/255,8/255,16/255,32/255,64/255",
                 "autoattack_samples": 0, "autoattack_version": "standard"},
    },
}


TRAIN_IMAGES = {"digits": 1170, "usps": 6562, "mnist": 55000, "mnistm": 55000, "svhn": 68257}
SMALL_DOMAINS = ("usps", "digits")  # trained with the "digits" budget (more epochs, small batches)


@dataclass
class Choice:
    """A flag whose value is picked when the run starts: the candidate (value -> run) whose
    final_metrics.json has the highest `by`."""
    flag: str
    candidates: dict
    by: str = "best_val_acc"


@dataclass
class Run:
    """One train.py or eval.py invocation of the matrix, declared once. `fields` are what the
    report needs to place it (variant, seed, source, target, kind, model, ...)."""
    name: str
    script: str  # "train" or "eval"
    argv: list
    group: str
    needs: list = field(default_factory=list)  # names of runs whose outputs this one reads
    fields: dict = field(default_factory=dict)
    choice: Choice = None
    cost: float = 1.0  # rough relative cost, for the time estimate
    # outcome: pending | done | skipped (up to date) | not run | diverged | FAILED
    status: str = "pending"
    reason: str = ""
    error_tail: str = ""  # a failure's last lines
    seconds: float = 0.0

    @property
    def needs_all(self):
        return self.needs + (list(self.choice.candidates.values()) if self.choice else [])

    @property
    def command(self):
        argv = self.argv
        if self.choice and self.choice.flag not in argv:
            argv = argv + [self.choice.flag, f"<best of {', '.join(self.choice.candidates.values())}>"]
        return utils.command_line(f"{self.script}.py", argv)


def _train_flags(budget, out_dir, dataset, data_root, common):
    flags = ["--dataset", dataset, "--data-root", data_root, "--out-dir", out_dir,
             "--epochs", str(budget["epochs"]), "--batch-size", str(budget["batch_size"]),
             "--lr", str(budget["lr"])]
    if budget.get("train_subset"):
        flags += ["--train-subset", str(budget["train_subset"])]
    if budget.get("val_size") and dataset not in SMALL_DOMAINS:  # small ones keep their 10%
        flags += ["--val-size", str(budget["val_size"])]
    if dataset == "cifar10" and "color_jitter" in budget:
        flags += ["--color-jitter", str(budget["color_jitter"])]
    return flags + common


def build_matrix(args, profile):
    """The experiment matrix as an ordered list of runs (dependencies come first)."""
    ds, root, ck = profile["datasets"], args.data_root, args.checkpoints
    common = ["--device", args.device]
    if args.no_download or profile.get("no_download"):
        common.append("--no-download")
    fast = ["--schedule", "onecycle", "--nesterov"]
    runs = []

    def train(name, group, budget, dataset, extra=(), needs=(), adv_iters=0, seed=None,
              choice=None, **fields):
        b = profile[budget] if isinstance(budget, str) else budget
        images = b.get("train_subset") or TRAIN_IMAGES.get(dataset, 45000)
        cost = b["epochs"] * images * (1 + 0.8 * adv_iters)
        seed = args.seed if seed is None else seed
        argv = (_train_flags(b, os.path.join(ck, name), dataset, root, common)
                + ["--seed", str(seed)] + fast + list(extra))
        runs.append(Run(name, "train", argv, group, list(needs), {**fields, "seed": seed},
                        choice, cost=cost))

    def finetune(src, dst, model):
        train(f"transfer_{src}_to_{dst}_finetune", "transfer", "finetune", dst,
              ["--init-from", os.path.join(ck, model, "best.pth"), "--freeze-features"],
              needs=[model], source=src, target=dst, kind="finetune")

    def evaluate(name, model, dataset, group, components=None, needs=(), extra=(), **fields):
        e = profile["eval"]
        argv = ["--checkpoint", os.path.join(ck, model, "best.pth"), "--dataset", dataset,
                "--data-root", root, "--out", os.path.join(ck, "eval", name),
                "--batch-size", str(e["batch_size"]), "--seed", str(args.seed),
                "--device", args.device, *extra]
        if args.no_download or profile.get("no_download"):
            argv.append("--no-download")
        # cost in training-image units: a forward pass ~0.3, an attack step ~0.8
        cost = 0.3 * 10000
        if components:
            argv += ["--components"] + components
        if not components or "autoattack" in components:
            argv += ["--autoattack-samples", str(e["autoattack_samples"]),
                     "--autoattack-version", e["autoattack_version"]]
            # APGD-CE's 100 steps on every image, APGD-T's 9 x 100 on the ~third left
            cost += 0.8 * (e["autoattack_samples"] or 10000) * (100 + 300)
        if not components or "attacks" in components:
            argv += ["--max-batches", str(e["max_batches"]),
                     "--sweep-max-batches", str(e["sweep_max_batches"]),
                     "--iter-sweep-max-batches", str(e["iter_sweep_max_batches"]),
                     "--umap-samples", str(e["umap_samples"]),
                     "--pgd-iters-list", e["pgd_iters_list"],
                     "--sweep-epsilons", e["sweep_epsilons"]]
            cost += 0.8 * 12 * e["max_batches"] * e["batch_size"]
            if not components:  # sweeps over eps and PGD iterations, UMAP
                n_eps = len(e["sweep_epsilons"].split(","))
                iters = sum(int(k) for k in e["pgd_iters_list"].split(","))
                cost += 0.8 * e["batch_size"] * (e["sweep_max_batches"] * n_eps * 12
                                                 + e["iter_sweep_max_batches"] * iters)
                cost += 10000
        runs.append(Run(name, "eval", argv, group, [model, *needs],
                        {"model": model, **fields}, cost=cost))

    # Ablations on one dataset, every variant with every seed.
    abl = ds.get(args.ablation_dataset, args.ablation_dataset)
    variants = {**ABLATIONS, **profile.get("extra_ablations", {})}
    for variant, extra in variants.items():
        for seed in args.seeds:
            train(f"ablation_{args.ablation_dataset}_{variant}_s{seed}", "ablation", "ablation",
                  abl, extra, seed=seed, variant=variant)

    # Digit domains from scratch, then transfer: direct evaluation on the other domains; a
    # new classifier on frozen features, fitted on a small labelled target subset; and, as
    # the reference, the target trained from scratch on that same subset.
    domains = profile["digit_domains"]
    subset = profile["finetune"]["train_subset"]
    target_only = {**profile["target_only"], "train_subset": subset,
                   "val_size": profile["finetune"].get("val_size")}
    for d in domains:
        train(f"{d}_scratch", "digits", "digits" if d in SMALL_DOMAINS else "digit", d,
              source=d, target=d, kind="in_domain")
    for d in domains:
        train(f"{d}_target_only", "transfer", target_only, d, target=d, kind="target_only")
    for src in domains:
        for dst in domains:
            if src != dst:
                evaluate(f"transfer_{src}_to_{dst}_direct", f"{src}_scratch", dst, "transfer",
                         components=["confusion"], source=src, target=dst, kind="direct")
                finetune(src, dst, f"{src}_scratch")
    src, dst = profile["framing_pair"]  # the same pair with the target's digits filling the frame
    evaluate(f"framing_{src}_to_{dst}_fill", f"{src}_scratch", dst, "transfer",
             components=["confusion"], extra=["--framing", "fill"], source=src, target=dst,
             kind="direct_fill")
    for dst in domains:  # declared either way: without weights they are "not run"
        train(f"transfer_imagenet_to_{dst}_finetune", "transfer", "finetune", dst,
              ["--pretrained-weights", args.pretrained_weights or "<none>", "--freeze-features"],
              source="imagenet", target=dst, kind="finetune")
        if not args.pretrained_weights:
            runs[-1].status = "not run"
            runs[-1].reason = "no ImageNet weights given (--pretrained-weights PATH)"

    # CIFAR-10, every model on one budget: standard, FGSM / FGSM-RS / PGD adversarial
    # training, and Circle Loss with and without PGD-AT at the weight its sweep chose.
    budget = profile["cifar10"]
    cifar = ds["cifar10"]
    sweep = {}
    for w in CIRCLE_WEIGHTS:
        sweep[w] = f"circle_sweep_w{w}"
        train(sweep[w], "circle_sweep", "ablation", cifar, ["--circle-weight", w], weight=float(w))
    circle = Choice("--circle-weight", sweep)
    adv = ["--adv-train", "--eps", "8/255", "--adv-prob", str(budget["adv_prob"])]
    pgd = adv + ["--attack", "pgd", "--alpha", budget["alpha"], "--iters", str(budget["iters"])]
    models = {"cifar10_standard": ([], 0, None), "cifar10_circle": ([], 0, circle),
              "cifar10_fgsm_at": (adv + ["--attack", "fgsm"], 1, None),
              "cifar10_fgsm_rs_at": (adv + ["--attack", "fgsm_rs"], 1, None),
              "cifar10_pgd_at": (pgd, budget["iters"], None),
              "cifar10_circle_pgd_at": (pgd, budget["iters"], circle)}
    for name, (extra, iters, choice) in models.items():
        train(name, "cifar10", "cifar10", cifar, extra, adv_iters=iters, choice=choice,
              model=name, adversarial=bool(iters), circle=choice is not None)

    # Natural-image features for digits: the CIFAR-10 standard model as a frozen extractor.
    for dst in domains:
        finetune("cifar10", dst, "cifar10_standard")

    # Every CIFAR-10 model under the same attacks (AutoAttack included); every component on
    # the standard and PGD-trained models.
    for name in models:
        full = name in ("cifar10_standard", "cifar10_pgd_at")
        evaluate(f"eval_{name}", name, cifar, "robustness",
                 components=None if full else ["attacks", "autoattack"], diagnostics=full)
    return runs


# ----------------------------------------------------------------------------- running

def _outputs(run):
    """(file proving the run finished, file recording its command)."""
    if run.script == "train":
        out = run.argv[run.argv.index("--out-dir") + 1]
        return os.path.join(out, "final_metrics.json"), os.path.join(out, "config.json")
    prefix = run.argv[run.argv.index("--out") + 1]
    return f"{prefix}.metrics.json", f"{prefix}.metrics.json"


def _diverged_file(run):
    return os.path.join(os.path.dirname(_outputs(run)[0]), "diverged.json") if run.script == "train" else None


def _recorded_command(path):
    try:
        return utils.load_json(path).get("command")
    except (OSError, ValueError):
        return None


def _newer_than_needs(path, run, runs_by_name):
    """Whether `path` is newer than the outputs of every run `run` reads (a retrained model
    makes its evaluation stale even though the evaluation's command is unchanged)."""
    made = os.path.getmtime(path)
    for name in run.needs_all:
        need_done = _outputs(runs_by_name[name])[0]
        if not os.path.exists(need_done) or os.path.getmtime(need_done) > made:
            return False
    return True


def _up_to_date(run, runs_by_name):
    """Whether the run's outputs are complete, were made by exactly this command, and are
    newer than the outputs of every run it reads."""
    done_file, command_file = _outputs(run)
    if not os.path.exists(done_file) or _recorded_command(command_file) != run.command:
        return False
    return _newer_than_needs(done_file, run, runs_by_name)


def _diverged_before(run, runs_by_name):
    """The divergence record of this exact command, if it already diverged (a result: a
    re-run would diverge again)."""
    path = _diverged_file(run)
    if (path and os.path.exists(path) and _recorded_command(path) == run.command
            and _newer_than_needs(path, run, runs_by_name)):
        return utils.load_json(path)
    return None


def _divergence_reason(record):
    if "step" in record:
        return f"loss {record['loss']} at epoch {record['epoch']}, step {record['step']}"
    return f"validation loss {record.get('validation_loss')} after epoch {record['epoch']}"


UP_TO_DATE = "up to date (same command, outputs complete)"
NOT_FINISHED = ("pending", "not run", "diverged", "FAILED")


def resolve(run, runs_by_name):
    """Fix a Choice flag from the candidates' results; False when none of them finished."""
    if not run.choice or run.choice.flag in run.argv:
        return True
    scores = {}
    for value, name in run.choice.candidates.items():
        done = _outputs(runs_by_name[name])[0]
        if runs_by_name[name].status in ("done", "skipped") and os.path.exists(done):
            scores[value] = utils.load_json(done)[run.choice.by]
    if not scores:
        return False
    run.argv = run.argv + [run.choice.flag, max(scores, key=lambda v: (scores[v], v))]
    run.fields["chosen"] = {"flag": run.choice.flag, "value": run.argv[-1], "scores": scores}
    return True


def blocked(run, runs_by_name):
    """Why a run cannot start because of what it reads, or None."""
    if run.status == "not run":  # decided when the matrix was declared
        return run.reason
    missing = [n for n in run.needs if runs_by_name[n].status in NOT_FINISHED]
    if missing:
        return "needs " + ", ".join(f"{n} ({runs_by_name[n].status})" for n in missing)
    if run.choice and not resolve(run, runs_by_name):
        return f"needs one of {', '.join(run.choice.candidates.values())}, none of which finished"
    return None


def _tail(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:])


def call(script, argv):
    """Run train.main / eval.main on argv in this process and classify how it ended:
    (status, reason, error tail). Never raises, except on Ctrl-C."""
    module = __import__(script)  # the same main(argv) a person would call
    try:
        module.main(argv)
        return "done", "", ""
    except utils.NotAvailable as exc:  # something absent that the user knows about
        return "not run", str(exc.code).removeprefix("error: "), ""
    except utils.Diverged as exc:
        return "diverged", str(exc.code).removeprefix("error: "), ""
    except SystemExit as exc:  # bad input: a file the user gave, conflicting flags, ...
        message = str(exc.code).removeprefix("error: ")
        return "FAILED", message, message
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crash: the traceback's last lines go to the log and report
        traceback.print_exc()
        return "FAILED", f"{type(exc).__name__}: {exc}", _tail(traceback.format_exc())


def prepare(run, runs_by_name, force):
    """Decide whether a run needs executing: None if so, else sets its outcome."""
    reason = blocked(run, runs_by_name)
    if reason:
        run.status, run.reason = "not run", reason
        return False
    if not force and _up_to_date(run, runs_by_name):
        run.status, run.reason = "skipped", UP_TO_DATE
        return False
    record = None if force else _diverged_before(run, runs_by_name)
    if record:
        run.status, run.reason = "diverged", _divergence_reason(record) + " (recorded earlier)"
        return False
    return True


def launch_argv(run, force):
    """The argv to execute: an interrupted training run of the same command continues."""
    done_file, command_file = _outputs(run)
    argv = list(run.argv)
    if (run.script == "train" and not force and not os.path.exists(done_file)
            and _recorded_command(command_file) == run.command
            and os.path.exists(os.path.join(os.path.dirname(done_file), "last.pth"))):
        argv.append("--resume")
    return argv


def finish(run, outcome, seconds):
    """Record a run's outcome; a run that says it finished but left no result has FAILED."""
    run.status, run.reason, run.error_tail = outcome
    run.seconds = seconds
    done_file = _outputs(run)[0]
    if run.status == "done" and not os.path.exists(done_file):
        run.status, run.reason = "FAILED", f"finished without writing {done_file}"
    if run.status == "diverged" and _diverged_file(run) and os.path.exists(_diverged_file(run)):
        run.reason = _divergence_reason(utils.load_json(_diverged_file(run)))


def execute(run, runs_by_name, force):
    """Run one step in this process; never raises (except on Ctrl-C)."""
    if not prepare(run, runs_by_name, force):
        return
    start = time.time()
    outcome = call(run.script, launch_argv(run, force))
    finish(run, outcome, time.time() - start)


def _eta(runs, i, elapsed):
    done_cost = sum(r.cost for r in runs[:i] if r.status == "done")
    rest = sum(r.cost for r in runs[i:])
    if not done_cost:
        return "unknown"
    return f"{rest * elapsed / done_cost / 60:.0f} min"


# ----------------------------------------------------------------------------- transfer

# Published source-only accuracies (LeNet-style networks, other protocols: reference only).
PUBLISHED_SOURCE_ONLY = {
    ("mnist", "usps"): (0.752, "ADDA, Tzeng et al. 2017, Table 2"),
    ("usps", "mnist"): (0.571, "ADDA, Tzeng et al. 2017, Table 2"),
    ("mnist", "mnistm"): (0.5225, "DANN, Ganin et al. 2016, Table 1"),
}
HANDWRITING_TARGETS = ("usps", "digits")  # from MNIST: a change of handwriting and scanning


def _accuracy(result):
    """(accuracy, [low, high]) of a train.py or eval.py result, or None."""
    if not result:
        return None
    if "clean_accuracy" in result:
        return result["clean_accuracy"], result["clean_accuracy_ci95"]
    return result["test_accuracy"], result["test_accuracy_ci95"]


def _below(a, b):
    """a's 95% interval lies wholly below b's: a difference the sample size can see."""
    return a[1][1] < b[1][0]


def _cell(value):
    return "not run" if value is None else _pm(*value)


def _transfer(args, profile, res, why, fig_dir):
    """The transfer matrix as CSV rows, its heatmaps and its markdown section."""
    import plots

    domains = profile["digit_domains"]
    n_target = profile["finetune"]["train_subset"]
    in_domain = {d: _accuracy(res(f"{d}_scratch")) for d in domains}
    scratch_small = {d: _accuracy(res(f"{d}_target_only")) for d in domains}
    direct, tuned, closed, rows = {}, {}, {}, []
    sources = domains + ["cifar10"] + (["imagenet"] if args.pretrained_weights else [])
    for src in sources:
        for dst in domains:
            if src == dst:
                continue
            d_name, t_name = f"transfer_{src}_to_{dst}_direct", f"transfer_{src}_to_{dst}_finetune"
            direct[src, dst] = _accuracy(res(d_name)) if src in domains else None
            tuned[src, dst] = _accuracy(res(t_name))
            d, t, full = direct[src, dst], tuned[src, dst], in_domain[dst]
            # the share of the gap the new head closes, where there is a gap the intervals see
            # (a gap within them makes the ratio noise: 3,250% on the smoke profile)
            if d and t and full and _below(d, full):
                closed[src, dst] = (t[0] - d[0]) / (full[0] - d[0])
            published = PUBLISHED_SOURCE_ONLY.get((src, dst))
            rows.append({
                "source": src, "target": dst,
                "source_test_accuracy": in_domain[src][0] if in_domain.get(src) else "",
                "target_in_domain_accuracy": full[0] if full else "",
                "direct_accuracy": d[0] if d else "", "direct_ci95": d[1] if d else "",
                "finetuned_accuracy": t[0] if t else "", "finetuned_ci95": t[1] if t else "",
                "target_only_accuracy": scratch_small[dst][0] if scratch_small[dst] else "",
                "gap_closed": round(closed[src, dst], 3) if (src, dst) in closed else "",
                "published_source_only": published[0] if published else "",
                "published_source": published[1] if published else "",
                "direct_status": "ok" if d else ("n/a (no digit classifier)" if src not in domains
                                                 else why(d_name)),
                "finetune_status": "ok" if t else why(t_name)})
    if not args.pretrained_weights:
        rows.append({"source": "imagenet", "target": "all", "direct_status": "n/a",
                     "finetune_status": "not run: no weights (give --pretrained-weights PATH)"})

    def matrix(values, row_names):
        return [[in_domain[dst] if src == dst else values.get((src, dst)) for dst in domains]
                for src in row_names]
    plots.plot_transfer_matrix(
        [("direct: the source model as is (diagonal: in-domain)", domains, matrix(direct, domains)),
         (f"frozen features + new classifier on {n_target:,} target images",
          domains + ["CIFAR-10\nfeatures", f"scratch on\n{n_target:,}"],
          matrix(tuned, domains + ["cifar10"]) + [[scratch_small[d] for d in domains]])],
        domains, os.path.join(fig_dir, "transfer_matrix.png"),
        "Digit-domain transfer: test accuracy (%) with 95% intervals")

    md = ["## Cross-domain transfer", "",
          f"Domains: {', '.join(domains)}. Every digit dataset is framed the same way (MNIST's "
          "convention: the digit in a ~20-pixel box centred in 32x32; see the README's Data "
          "section). **Direct**: the source model evaluated on the target's test split as is. "
          f"**Frozen features**: the source model's features frozen and a new classifier fitted "
          f"on {n_target:,} labelled target training images. **Scratch on {n_target:,}**: the "
          "target trained from scratch on those same images, the reference a transfer must "
          "beat to be worth it. **In-domain**: the target trained on its whole training set. "
          "Accuracies in %, ± half the 95% Wilson interval; *gap closed* = (frozen - direct) / "
          "(in-domain - direct), shown where direct is clearly below in-domain.", "",
          _table(["source", "target", "direct", "frozen features", f"scratch on {n_target:,}",
                  "in-domain", "gap closed", "published source-only"],
                 [[r["source"], r["target"],
                   _cell(direct.get((r["source"], r["target"]))) if r["direct_status"] == "ok"
                   else _short(r["direct_status"]),
                   _cell(tuned.get((r["source"], r["target"]))) if r["finetune_status"] == "ok"
                   else _short(r["finetune_status"]),
                   _cell(scratch_small.get(r["target"])), _cell(in_domain.get(r["target"])),
                   f"{100 * r['gap_closed']:.0f}%" if r.get("gap_closed", "") != "" else "-",
                   f"{100 * r['published_source_only']:.1f} ({r['published_source']})"
                   if r.get("published_source_only") else "-"] for r in rows]), "",
          "![transfer matrix](figures/transfer_matrix.png)", ""]
    md += _framing_lines(profile, res, why, direct)
    md += ["Reading: " + " ".join(_transfer_readings(domains, direct, tuned, closed,
                                                      scratch_small)), "",
           "Published source-only numbers are for reference only: they come from LeNet-style "
           "networks under those papers' protocols (ADDA samples 2,000 MNIST and 1,800 USPS "
           "images; DANN's MNIST-M uses BSDS500 backgrounds, ours CIFAR-10 photos), not from "
           "this ResNet18.", ""]
    return rows, md


def _framing_lines(profile, res, why, direct):
    src, dst = profile["framing_pair"]
    boxed, name = direct.get((src, dst)), f"framing_{src}_to_{dst}_fill"
    filled = _accuracy(res(name))
    if not (boxed and filled):
        return [f"Framing: {src} -> {dst} under both framings: "
                + (why(name) if not filled else "not run: the direct row did not run"), ""]
    text = (f"Framing matters: the {src} model reads {dst} digits framed like its training data "
            f"(in a 20-pixel box) at {_pm(*boxed)}%, and the same digits scaled to fill the "
            f"32x32 frame (`--framing fill`) at {_pm(*filled)}% "
            f"({100 * (filled[0] - boxed[0]):+.1f} points).")
    if (src, dst) in PUBLISHED_SOURCE_ONLY:
        published, where = PUBLISHED_SOURCE_ONLY[src, dst]
        nearer = "fill" if abs(filled[0] - published) < abs(boxed[0] - published) else "MNIST"
        text += (f" The published source-only {100 * published:.1f}% ({where}) is nearer the "
                 f"{nearer} framing's number" + (": part of the shift reported between these two "
                                                 "domains is how their digits are framed."
                                                 if nearer == "fill" else "."))
    return [text, ""]


def _transfer_readings(domains, direct, tuned, closed, scratch_small):
    """Sentences computed from the matrix: harder direction, gap closed (`closed`: pair ->
    share of the gap to in-domain training), kind of shift."""
    out = []
    pairs = [(a, b) for i, a in enumerate(domains) for b in domains[i + 1:]
             if direct.get((a, b)) and direct.get((b, a))]
    if pairs:
        parts = []
        for a, b in pairs:
            ab, ba = direct[a, b], direct[b, a]
            if _below(ab, ba) or _below(ba, ab):
                hard, easy = ((a, b), (b, a)) if ab[0] < ba[0] else ((b, a), (a, b))
                parts.append(f"{hard[0]} -> {hard[1]} is harder than {easy[0]} -> {easy[1]} "
                             f"({100 * direct[hard][0]:.1f}% vs {100 * direct[easy][0]:.1f}%)")
            else:
                parts.append(f"{a} <-> {b} shows no difference the intervals can see "
                             f"({100 * ab[0]:.1f}% vs {100 * ba[0]:.1f}%)")
        out.append("Direction: " + "; ".join(parts) + ".")
    if closed:
        fractions = sorted(closed.values())
        vs_scratch = [(tuned[k], scratch_small[k[1]]) for k in closed if scratch_small.get(k[1])]
        above = sum(_below(ref, t) for t, ref in vs_scratch)
        below = sum(_below(t, ref) for t, ref in vs_scratch)
        out.append(f"Frozen-feature fine-tuning closes a median {100 * fractions[len(fractions) // 2]:.0f}% "
                   f"of the gap between direct transfer and in-domain training (range "
                   f"{100 * fractions[0]:.0f}% to {100 * fractions[-1]:.0f}% over {len(closed)} pairs). "
                   f"Against training from scratch on the same target images it is clearly better in "
                   f"{above}, level within the intervals in {len(vs_scratch) - above - below} and "
                   f"clearly worse in {below} of {len(vs_scratch)} pairs.")
    natural = {d: tuned[("cifar10", d)] for d in domains if tuned.get(("cifar10", d))}
    if natural:
        digit_best = {d: max((tuned[s, d] for s in domains if s != d and tuned.get((s, d))),
                             key=lambda v: v[0], default=None) for d in natural}
        out.append("CIFAR-10 (natural-image) features with a new classifier reach "
                   + ", ".join(f"{_pm(*v)}% on {d}" for d, v in natural.items())
                   + "; the best digit-domain features reach "
                   + ", ".join(f"{_pm(*v)}% on {d}" for d, v in digit_best.items() if v) + ".")
    colour, hand = direct.get(("mnist", "mnistm")), [(t, direct.get(("mnist", t)))
                                                     for t in HANDWRITING_TARGETS]
    hand = [(t, v) for t, v in hand if v]
    if colour and hand:
        numbers = (f"MNIST -> MNIST-M {_pm(*colour)}% vs "
                   + ", ".join(f"MNIST -> {t} {_pm(*v)}%" for t, v in hand))
        if all(_below(colour, v) for _, v in hand):
            out.append(f"A colour/texture shift costs more than a handwriting shift: {numbers}.")
        elif any(_below(v, colour) for _, v in hand):
            out.append(f"A colour/texture shift does not cost more than every handwriting shift: {numbers}.")
        else:
            out.append(f"Colour/texture vs handwriting shift: no difference the intervals can see ({numbers}).")
    else:
        out.append("Colour/texture vs handwriting shift: not run (needs MNIST -> MNIST-M and "
                   "MNIST -> USPS or digits).")
    return out


# ----------------------------------------------------------------------------- report

DIAGNOSTIC_FIGURES = ("umap_features.png", "adv_examples.png", "confusion_matrix.png",
                      "per_class_accuracy.png", "classwise_prf1.png", "reliability_diagram.png",
                      "confidence_coverage.png", "topk_accuracy.png")  # as eval.py names them


def _short(reason):
    """The first clause of a failure reason, for table cells (the full text is in the
    'Runs and commands' section and metrics_summary.json)."""
    reason = reason or "not selected or not reached"
    for cut in (": tried", ". "):
        if cut in reason:
            reason = reason.split(cut)[0]
    return reason if len(reason) <= 90 else reason[:87] + "..."


def _pct(value):
    return "not run" if value is None else f"{100 * value:.2f}"


def _pm(value, ci95):
    """An accuracy with half its 95% interval's width, in points: '27.3 ± 2.7'."""
    if value is None:
        return "not run"
    if not ci95:
        return f"{100 * value:.1f}"
    return utils.plus_minus(value, ci95)


ROBUST_KEYS = ("clean_accuracy", "attack_subset_clean_accuracy", "fgsm_accuracy",
               "pgd_accuracy", "noise_accuracy", "autoattack_accuracy")


def _load_results(runs):
    """Numbers of every run, read only from the files train.py and eval.py wrote."""
    results = {}
    for run in runs:
        done_file, _ = _outputs(run)
        if run.status in ("done", "skipped") and os.path.exists(done_file):
            results[run.name] = utils.load_json(done_file)
            if run.script == "train":
                run_dir = os.path.dirname(done_file)
                results[run.name]["history"] = utils.load_json(
                    os.path.join(run_dir, "training_history.json"))
                config = utils.load_json(os.path.join(run_dir, "config.json"))
                results[run.name]["environment"] = config["environment"]
    return results


def write_report(args, profile_name, runs, results, report_dir, wall_time):
    import plots

    env = utils.environment_info()  # before writing: the report's own files would read as dirty
    fig_dir = os.path.join(report_dir, "figures")
    sum_dir = os.path.join(report_dir, "summary")
    os.makedirs(fig_dir, exist_ok=True)
    os.makedirs(sum_dir, exist_ok=True)
    by_name = {r.name: r for r in runs}

    def res(name):
        return results.get(name)

    def why(name):
        return f"not run: {_short(by_name[name].reason)}"

    # --- training / ablation table
    training_rows = []
    for run in runs:
        if run.script != "train":
            continue
        r = res(run.name)
        training_rows.append({
            "run": run.name, "group": run.group,
            "dataset": r["data_description"] if r else "",
            "epochs": r["epochs"] if r else "", "best_val_acc": r["best_val_acc"] if r else "",
            "test_accuracy": r["test_accuracy"] if r else "",
            "wall_time_s": round(r["wall_time_s"], 1) if r else "",
            "status": "ok" if r else why(run.name), "command": run.command})
    utils.save_csv(training_rows, os.path.join(sum_dir, "training_summary.csv"))

    # --- transfer matrix, heatmaps, framing comparison
    cross_rows, transfer_md = _transfer(args, PROFILES[profile_name], res, why, fig_dir)
    utils.save_csv(cross_rows, os.path.join(sum_dir, "cross_domain_summary.csv"))

    # --- robustness table
    cifar_models = ["cifar10_standard", "cifar10_fgsm_at", "cifar10_fgsm_rs_at", "cifar10_pgd_at",
                    "cifar10_circle", "cifar10_circle_pgd_at"]
    robust_rows = []
    for model in cifar_models:
        e = res(f"eval_{model}")
        row = {"model": model, "status": "ok" if e else why(f"eval_{model}")}
        if e:
            row.update({key: e.get(key) for key in ROBUST_KEYS})
            row.update({f"{key}_ci95": e.get(f"{key}_ci95") for key in ROBUST_KEYS})
            row.update({"n_attacked": e["n_samples"]["attacks"],
                        "n_autoattack": e.get("autoattack", {}).get("n"),
                        "autoattack_version": e.get("autoattack", {}).get("version"),
                        "autoattack_errors": "; ".join(
                            f"{k}: {v}" for k, v in e.get("autoattack", {}).get("errors", {}).items()),
                        "eps": e["params"]["eps"], "pgd_iters": e["params"]["iters"],
                        "sanity_checks_passed": sum(e["sanity_checks"].values()),
                        "sanity_checks_run": len(e["sanity_checks"])})
        robust_rows.append(row)
    utils.save_csv(robust_rows, os.path.join(sum_dir, "robustness_summary.csv"))

    # --- figures: comparisons drawn here, diagnostics copied from the standard model
    histories = {r.name: res(r.name)["history"] for r in runs
                 if r.script == "train" and res(r.name) and r.group in ("ablation", "cifar10")}
    if histories:
        plots.plot_run_comparison(histories, os.path.join(fig_dir, "training_curves.png"),
                                  f"Training curves ({profile_name} profile)")
    diag = {m: res(f"eval_{m}") for m in ("cifar10_standard", "cifar10_pgd_at") if res(f"eval_{m}")}
    if diag:
        title = f"{next(iter(diag.values()))['data']['description']}: standard vs PGD-trained"
        plots.plot_robustness_sweep({m: e["robustness_sweep"] for m, e in diag.items()},
                                    os.path.join(fig_dir, "robustness_sweep.png"), title)
        plots.plot_pgd_iter_sweep({m: e["pgd_iter_sweep"] for m, e in diag.items()},
                                  os.path.join(fig_dir, "pgd_iter_sweep.png"), title)
    for model, e in diag.items():
        target = fig_dir if model == "cifar10_standard" else os.path.join(fig_dir, model)
        os.makedirs(target, exist_ok=True)
        for name in DIAGNOSTIC_FIGURES:
            source = e["files"].get(name)
            if source and os.path.exists(source):
                shutil.copyfile(source, os.path.join(target, name))

    summary = {"profile": profile_name, "wall_time_s": wall_time,
               "runs": {r.name: {"status": r.status, "reason": r.reason, "command": r.command,
                                 "seconds_this_invocation": r.seconds} for r in runs},
               "results": {k: {kk: vv for kk, vv in v.items() if kk != "history"}
                           for k, v in results.items()}}
    utils.save_json(summary, os.path.join(fig_dir, "metrics_summary.json"))
    _write_markdown(args, profile_name, runs, results, report_dir, wall_time, training_rows,
                    transfer_md, robust_rows, env)


def _run_seconds(run, results):
    """The wall time a run recorded itself (kept across re-invocations), else this one's."""
    return results.get(run.name, {}).get("wall_time_s", run.seconds)


def _table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _write_markdown(args, profile_name, runs, results, report_dir, wall_time, training_rows,
                    transfer_md, robust_rows, env):
    commits = {}
    for r in results.values():
        commit = r.get("environment", {}).get("git_commit", "unknown")
        commits[commit] = commits.get(commit, 0) + 1
    synthetic = any(r.get("synthetic") for r in results.values())
    md = [f"# Generalization and adversarial robustness of a ResNet18: report ({profile_name} profile)", ""]
    if synthetic:
        md += ["> **SYNTHETIC DATA.** This report was made with the smoke profile on synthetic "
               "patterns; its numbers say nothing about real images.", ""]
    data_desc = sorted({r["data_description"] if "data_description" in r else r["data"]["description"]
                        for r in results.values()})
    total = sum(r.get("wall_time_s", 0) for r in results.values())
    md += [f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
           f"`{utils.command_line('run_report_pipeline.py', args.argv)}`.",
           f"**Total run time: {total / 60:.1f} minutes** (sum of the wall times every run "
           f"recorded; this invocation itself took {wall_time / 60:.1f} min, re-using finished "
           f"runs). Data: {'; '.join(data_desc)}.", ""]

    # training
    md += ["## Training and ablations", "",
           "Test accuracy of each run's `best.pth` (chosen on the validation split carved from "
           "train). Ablations share one budget; see Parameters.", ""]
    md.append(_table(["run", "data", "epochs", "best val acc (%)", "test acc (%)", "wall time (s)"],
                     [[r["run"], r["dataset"] or "-", r["epochs"] or "-",
                       _pct(r["best_val_acc"] or None), _pct(r["test_accuracy"] or None)
                       if r["status"] == "ok" else r["status"], r["wall_time_s"] or "-"]
                      for r in training_rows if r["group"] in ("ablation", "digits", "cifar10")]))
    abl = {r["run"]: r for r in training_rows if r["group"] == "ablation" and r["status"] == "ok"}
    base = next((r for n, r in abl.items() if n.endswith("_baseline")), None)
    if base:
        deltas = [f"{n.split('_', 2)[-1]} {100 * (r['test_accuracy'] - base['test_accuracy']):+.2f}"
                  for n, r in abl.items() if r is not base]
        md += ["", f"Reading: against the baseline's {_pct(base['test_accuracy'])}% test accuracy, "
               f"the ablations move it by (points): {', '.join(deltas)}. One seed per row; at "
               "this budget the differences have not been checked against seed-to-seed "
               "variation, so read them as a smoke signal, not a ranking."]
    md += ["", "![training curves](figures/training_curves.png)", ""]

    md += transfer_md

    # robustness
    md += ["## Robustness (CIFAR-10 models)", ""]
    ok = [r for r in robust_rows if r["status"] == "ok"]
    if ok:
        p = ok[0]
        md.append(f"Accuracy (%, ± half the 95% Wilson interval) at eps {p['eps'] * 255:.0f}/255 "
                  f"on a seeded random sample of {p['n_attacked']} test images (PGD-{p['pgd_iters']} "
                  "with random start; random noise is a ±eps sign pattern) and, for AutoAttack "
                  f"({p['autoattack_version']} version, torchattacks), the first {p['n_autoattack']} "
                  "images of the same sample. Clean accuracy is on the whole test split. AutoAttack "
                  "is the number to trust; a PGD number well above it is a sign of gradient masking.")

    def checks(r):
        text = f"{r['sanity_checks_passed']} of {r['sanity_checks_run']} passed"
        return text if r["sanity_checks_passed"] == r["sanity_checks_run"] else f"**{text}** (see below)"
    md += ["", _table(["model", "clean", "clean, attacked subset", "FGSM", "PGD", "AutoAttack",
                       "noise", "sanity checks"],
                      [[r["model"]] + ([_pm(r[k], r[f"{k}_ci95"]) for k in ROBUST_KEYS[:4]]
                                       + [_pm(r["autoattack_accuracy"], r["autoattack_accuracy_ci95"])
                                          + (f" (incomplete: {r['autoattack_errors']})"
                                             if r["autoattack_errors"] else ""),
                                          _pm(r["noise_accuracy"], r["noise_accuracy_ci95"]),
                                          checks(r)]
                                       if r["status"] == "ok" else [r["status"]] + [""] * 6)
                       for r in robust_rows])]
    std, pgd = results.get("eval_cifar10_standard"), results.get("eval_cifar10_pgd_at")
    if std and pgd:
        before, after = [(e["pgd_accuracy"], e["pgd_accuracy_ci95"]) for e in (std, pgd)]
        clean = [(e["clean_accuracy"], e["clean_accuracy_ci95"]) for e in (std, pgd)]
        if _below(before, after):
            change = (f"raises PGD accuracy from {_pm(*before)}% to {_pm(*after)}% "
                      f"({100 * (after[0] - before[0]):+.1f} points)")
        else:  # nothing the sample can see: say so rather than print "+0.0 points"
            change = (f"does not raise PGD accuracy by more than the intervals can resolve "
                      f"({_pm(*before)}% vs {_pm(*after)}%)")
        cost = (f"at a clean-accuracy cost of {100 * (clean[0][0] - clean[1][0]):.1f} points"
                if _below(clean[1], clean[0]) else
                f"with no clean-accuracy difference the intervals can resolve ({_pm(*clean[0])}% "
                f"vs {_pm(*clean[1])}%)")
        md += ["", f"Reading: PGD adversarial training {change} {cost}."]
        if "autoattack_accuracy" in std and "autoattack_accuracy" in pgd:
            md[-1] += (f" Under AutoAttack: {_pm(std['autoattack_accuracy'], std['autoattack_accuracy_ci95'])}%"
                       f" -> {_pm(pgd['autoattack_accuracy'], pgd['autoattack_accuracy_ci95'])}%.")
        epochs = {name: len(results[name]["history"]) for name in ("cifar10_standard", "cifar10_pgd_at")
                  if name in results}
        if len(set(epochs.values())) == 2:
            md[-1] += (f" The two trained for different budgets ({epochs['cifar10_standard']} and "
                       f"{epochs['cifar10_pgd_at']} epochs), so part of that cost is the shorter "
                       "schedule, not the adversarial training.")
    masked = [(r["model"], results[f"eval_{r['model']}"]) for r in robust_rows if r["status"] == "ok"
              and results[f"eval_{r['model']}"]["sanity_checks"].get("pgd_overestimate") is False]
    if masked:
        md += ["", "**PGD overestimates robustness** (PGD-10 clearly more than 5 points above "
               "AutoAttack on the same images, a sign of gradient masking) for "
               + "; ".join(f"`{m}`: PGD {100 * e['autoattack_pgd_accuracy']:.1f}% vs AutoAttack "
                           f"{100 * e['autoattack_accuracy']:.1f}%" for m, e in masked)
               + ". Read those models' robustness from the AutoAttack column."]
    md += ["", "![robustness sweep](figures/robustness_sweep.png)",
           "![PGD iterations](figures/pgd_iter_sweep.png)", "",
           "![adversarial examples](figures/adv_examples.png)", ""]

    # calibration and diagnostics
    md += ["## Calibration and diagnostics", ""]
    diag = [m for m in ("cifar10_standard", "cifar10_pgd_at") if f"eval_{m}" in results]
    if diag:
        e = {m: results[f"eval_{m}"] for m in diag}
        md.append(_table(
            ["model", "ECE (%)", "ECE after T (%)", "T", "AURC (%)", "sel. acc @80% (%)",
             "sel. acc @90% (%)", "top-1 (%)", "top-3 (%)", "macro F1 (%)"],
            [[m, _pct(e[m]["ece"]), _pct(e[m]["ece_temperature_scaled"]),
              f"{e[m]['temperature']:.2f}", _pct(e[m]["aurc"]),
              _pct(e[m]["selective_accuracy"].get("0.8")),
              _pct(e[m]["selective_accuracy"].get("0.9")),
              _pct(e[m]["topk"].get("1")), _pct(e[m]["topk"].get("3")),
              _pct(e[m]["macro_f1"])] for m in diag]))
        md += ["", "Reading: " + "; ".join(
            f"{m}: ECE {_pct(e[m]['ece'])}% -> {_pct(e[m]['ece_temperature_scaled'])}% after "
            f"temperature scaling (T={e[m]['temperature']:.2f}); keeping the 80% most confident "
            f"predictions raises accuracy from {_pct(e[m]['clean_accuracy'])}% to "
            f"{_pct(e[m]['selective_accuracy'].get('0.8'))}%" for m in diag) + "."]
        md += ["", "ECE uses 10 equal-width bins; the temperature is fitted on the validation "
               "split. AURC is the mean over k of the error rate of the k most confident "
               "predictions. Figures below are for `cifar10_standard`; those of "
               "`cifar10_pgd_at` are in `figures/cifar10_pgd_at/`.", ""]
        for name in ("reliability_diagram", "confidence_coverage", "confusion_matrix",
                     "per_class_accuracy", "classwise_prf1", "topk_accuracy", "umap_features"):
            md.append(f"![{name}](figures/{name}.png)")
        md.append("")
    else:
        md += ["not run: " + "; ".join(f"{m}: {[r for r in runs if r.name == f'eval_{m}'][0].reason}"
                                       for m in ("cifar10_standard", "cifar10_pgd_at")), ""]

    # sanity checks
    md += ["## Attack sanity checks", ""]
    for run in runs:
        r = results.get(run.name)
        if run.script == "eval" and r and r.get("sanity_checks"):
            md.append(f"**{run.name}**")
            md += [f"- {'ok' if ok_ else '**FAILED**'} `{name}`: {r['sanity_details'][name]}"
                   for name, ok_ in r["sanity_checks"].items()]
            md.append("")

    # parameters, commands, provenance
    md += ["## Parameters", "", f"Profile `{profile_name}` budgets (epochs, train subset, "
           "batch size, learning rate) per group:", "", "```",
           json.dumps(PROFILES[profile_name], indent=1), "```", "",
           "## Runs and commands", "",
           _table(["run", "status", "wall time (s)", "command"],
                  [[r.name, r.status + (f": {r.reason}" if r.reason else ""),
                    f"{_run_seconds(r, results):.0f}", f"`{r.command}`"] for r in runs]), "",
           "## Provenance", "",
           f"- git commit of this report: `{env['git_commit']}`; commits that produced the runs: "
           + ", ".join(f"`{c}` ({n} runs)" for c, n in sorted(commits.items())),
           f"- python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
           f"numpy {env['numpy']}, scikit-learn {env['scikit-learn']}",
           f"- machine: {env['platform']}, {env['cpu_count']} CPUs, torch threads "
           f"{env['torch_threads']}, GPU: {env['cuda'] or 'none'}",
           f"- data root: `{args.data_root}`; datasets: {'; '.join(data_desc)}", ""]
    with open(os.path.join(report_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md))


# ----------------------------------------------------------------------------- main

REPORT_PROFILE = "quick"  # the profile whose report is committed in report/


def _seed_list(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds repeat in {text!r}")
    return seeds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                   help="budgets: smoke (synthetic, ~1.5 min), quick (real data, ~1 h on 2 CPU "
                        "cores), full (the study's schedules, for a GPU)")
    p.add_argument("--data-root", default=os.environ.get("DATA_ROOT", "data"),
                   help="folder with <dataset>-<split>.npz files (env DATA_ROOT)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--ablation-dataset", choices=("svhn", "cifar10", "mnist"), default="cifar10",
                   help="dataset of the ablations (the study names svhn, which is not "
                        "available offline)")
    p.add_argument("--pretrained-weights", default=None, metavar="PATH",
                   help="torchvision resnet18 ImageNet weights for the frozen-extractor rows")
    p.add_argument("--checkpoints", default=None,
                   help="where runs write (default: checkpoints/<profile>, so profiles never "
                        "overwrite each other's runs)")
    p.add_argument("--report-dir", default=None,
                   help=f"where the report goes (default: report/ for the {REPORT_PROFILE} "
                        "profile, which made the committed report; report/<profile>/ for the "
                        "others, so they never overwrite it)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN",
                   help="run only these runs (and report on everything on disk); --list "
                        "prints their names")
    p.add_argument("--list", action="store_true",
                   help="print the profile's runs (name, group, command) and exit")
    p.add_argument("--force", action="store_true", help="redo runs that are up to date")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any run did not run")
    p.add_argument("--seed", type=int, default=0, help="seed of every run but the ablations")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="seeds of every ablation variant (default: the profile's; quick: 0,1,2)")
    p.add_argument("--device", default="auto", help="device of every run")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.seeds is None:
        args.seeds = PROFILES[args.profile]["seeds"]
    if args.checkpoints is None:
        args.checkpoints = os.path.join("checkpoints", args.profile)
    if args.report_dir is None:
        args.report_dir = "report" if args.profile == REPORT_PROFILE else os.path.join("report", args.profile)
    return args


def main(argv=None):
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    runs = build_matrix(args, profile)
    by_name = {r.name: r for r in runs}
    if args.list:
        for run in runs:
            print(f"{run.name:40s} {run.group:12s} {run.command}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(by_name))
        if unknown:
            raise SystemExit(f"error: unknown runs {unknown}; choose from {sorted(by_name)}")
    start = time.time()
    for i, run in enumerate(runs):
        if args.only and run.name not in args.only:  # report what is on disk for it
            run.status, run.reason = (("skipped", UP_TO_DATE) if _up_to_date(run, by_name) else
                                      ("not run", "not selected (--only) and no up-to-date outputs"))
            continue
        print(f"\n=== [{i + 1}/{len(runs)}] {run.script} {run.name} | elapsed "
              f"{(time.time() - start) / 60:.1f} min | estimated left {_eta(runs, i, time.time() - start)}"
              f"\n    {run.command}", flush=True)
        execute(run, by_name, args.force)
        print(f"=== {run.name}: {run.status}{': ' + run.reason if run.reason else ''} "
              f"({run.seconds:.0f}s)", flush=True)
        if run.status == "FAILED":
            print(f"FAILED: {run.name}\n{run.error_tail or run.reason}", file=sys.stderr, flush=True)

    wall = time.time() - start
    results = _load_results(runs)
    write_report(args, args.profile, runs, results, args.report_dir, wall)
    return exit_status(args, runs)


def exit_status(args, runs):
    """Summarise the outcomes; non-zero if any run FAILED (or, with --strict, did not run)."""
    count = {s: sum(r.status == s for r in runs) for s in ("done", "skipped", "not run",
                                                           "diverged", "FAILED")}
    print(f"\nreport written to {args.report_dir}/REPORT.md: "
          + ", ".join(f"{n} {s}" for s, n in count.items() if n), flush=True)
    for r in runs:
        if r.status in ("not run", "diverged", "FAILED"):
            print(f"  {r.status}: {r.name}: {r.reason}", flush=True)
    failed = [r for r in runs if r.status == "FAILED"]
    for r in failed:
        print(f"\nFAILED: {r.name}\n    {r.command}\n" + "\n".join(
            "    " + line for line in (r.error_tail or r.reason).splitlines()), file=sys.stderr)
    if failed:
        return 2
    if (args.strict and count["not run"]) or count["not run"] == len(runs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
