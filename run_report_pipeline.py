"""Regenerate the whole study: train the experiment matrix, evaluate it, write report/.

    python run_report_pipeline.py --data-root ../shared/data
    python run_report_pipeline.py --profile full --device cuda --jobs 4      # 4 GPUs
    python run_report_pipeline.py --profile full --launcher slurm --jobs 16  # a cluster

The matrix is declared once, in build_matrix, as data: each run's script, flags, the runs it
reads, and the fields the report places it by. Every run is the command a person would
type (train.py / eval.py main(argv)), written into the report; report.py renders tables,
figures and the claims' verdicts from the records and the files the runs wrote. Runs whose
outputs are complete for the same command are skipped (--force redoes them); an
interrupted training run resumes. Each run ends in one of:
    done / skipped   its numbers are on disk;
    not run          something it needs is absent in a way the user knows about (a dataset
                     not available offline, no --pretrained-weights), or a run it reads did
                     not finish;
    diverged         its training loss became NaN/inf: a result, recorded in diverged.json;
    FAILED           anything else (a crash, a bad file given, a missing output): the error's
                     last lines go to the log and the top of REPORT.md, and the pipeline exits
                     with status 2 once the other runs have finished.
"""

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

import datasets
import run_contract
import utils
from run_contract import Outcome

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
        "digit_domains": "smoke-sized", "framing_pair": ("digits", "usps"),
        "seeds": [0, 1],
        # a learning rate no network survives: the "diverged" outcome, end to end
        "extra_ablations": {"diverge_check": ["--lr", "1e6"]},
        "deliberate": {"diverge_check": "a learning rate no network survives, to check the "
                                        "diverged outcome end to end"},
        "cifar10": {"epochs": 2, "train_subset": 256, "batch_size": 32, "lr": 0.02,
                    "iters": 2, "alpha": "4/255", "adv_prob": 0.5, "robust_val_samples": 32},
        "ablation": {"epochs": 1, "train_subset": 256, "batch_size": 32, "lr": 0.02},
        "circle_sweep": {"epochs": 1, "train_subset": 256, "batch_size": 32, "lr": 0.02},
        "digit": {"epochs": 1, "train_subset": 512, "batch_size": 64, "lr": 0.02},
        "digits": {"epochs": 1, "train_subset": 512, "batch_size": 64, "lr": 0.02},
        "finetune": {"epochs": 2, "train_subset": 128, "batch_size": 32, "lr": 0.05,
                     "val_size": 100},
        "target_only": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        "eval": {"max_batches": 1, "sweep_max_batches": 1, "iter_sweep_max_batches": 1,
                 "batch_size": 32, "umap_samples": 200, "pgd_iters_list": "1,2,5",
                 "sweep_epsilons": "0,2/255,8/255,32/255", "autoattack_samples": 16,
                 "autoattack_version": "fast", "autoattack_steps": 10},
    },
    # Real data sized for a 2-core CPU: the whole matrix in about 80 minutes (AVX-512 CPU).
    # Every CIFAR-10 model, standard or adversarially trained, has one budget, so the cost of
    # adversarial training is not confounded with the schedule. Adversarial training attacks
    # every batch (FGSM with a random start at step 10/255, or a 2-step PGD whose step
    # reaches the eps-ball's surface); the short schedules drop the colour jitter.
    "quick": {
        "datasets": {"cifar10": "cifar10", "mnist": "mnist", "svhn": "svhn"},
        "digit_domains": "all",
        "framing_pair": ("mnist", "usps"),
        "seeds": [0, 1, 2],
        "cifar10": {"epochs": 8, "train_subset": None, "batch_size": 128, "lr": 0.2,
                    "iters": 2, "alpha": "10/255", "adv_prob": 1.0, "color_jitter": 0.0},
        # 8 epochs: at 4 the baseline was at 48% with train accuracy no higher than test
        # (nothing to regularize yet); the sweep only ranks weights, so 4 do there
        "ablation": {"epochs": 8, "train_subset": 10000, "batch_size": 128, "lr": 0.1,
                     "color_jitter": 0.0},
        "circle_sweep": {"epochs": 4, "train_subset": 10000, "batch_size": 128, "lr": 0.1,
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
        "digit_domains": "all",
        "framing_pair": ("mnist", "usps"),
        "seeds": [0, 1, 2],
        "cifar10": {"epochs": 80, "train_subset": None, "batch_size": 128, "lr": 0.1,
                    "iters": 7, "alpha": "2/255", "adv_prob": 0.5},
        "ablation": {"epochs": 80, "train_subset": None, "batch_size": 128, "lr": 0.1},
        "circle_sweep": {"epochs": 30, "train_subset": None, "batch_size": 128, "lr": 0.1},
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


def profile_domains(profile):
    """The profile's transfer domains: every digit domain datasets.DOMAINS declares, or, for
    "smoke-sized", those small enough (or bundled) for a test-sized run."""
    return datasets.digit_domains(smoke=profile["digit_domains"] == "smoke-sized")


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
    status: Outcome = Outcome.PENDING
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
    if budget.get("val_size") and not datasets.DOMAINS[dataset].small:  # small ones keep their 10%
        flags += ["--val-size", str(budget["val_size"])]
    if budget.get("robust_val_samples"):  # PGD-10 validation of adversarial runs
        flags += ["--robust-val-samples", str(budget["robust_val_samples"])]
    if datasets.DOMAINS[dataset].augment["jitter"] and "color_jitter" in budget:  # natural images
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
        images = b.get("train_subset") or datasets.DOMAINS[dataset].train_images
        cost = b["epochs"] * images * (1 + 0.8 * adv_iters)
        seed = args.seed if seed is None else seed
        argv = (_train_flags(b, os.path.join(ck, name), dataset, root, common)
                + ["--seed", str(seed)] + fast + list(extra))
        runs.append(Run(name, "train", argv, group, list(needs), {**fields, "seed": seed},
                        choice, cost=cost))

    def finetune(src, dst, model):
        train(f"transfer_{src}_to_{dst}_finetune", "transfer", "finetune", dst,
              ["--init-from", run_contract.TrainFiles(os.path.join(ck, model)).best, "--freeze-features"],
              needs=[model], source=src, target=dst, kind="finetune")

    def evaluate(name, model, dataset, group, components=None, needs=(), extra=(), **fields):
        e = profile["eval"]
        argv = ["--checkpoint", run_contract.TrainFiles(os.path.join(ck, model)).best, "--dataset", dataset,
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
            if e.get("autoattack_steps"):  # fewer than the paper's 100: a smoke test only
                argv += ["--autoattack-steps", str(e["autoattack_steps"])]
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
            why = profile.get("deliberate", {}).get(variant)
            train(f"ablation_{args.ablation_dataset}_{variant}_s{seed}", "ablation", "ablation",
                  abl, extra, seed=seed, variant=variant, **({"deliberate": why} if why else {}))

    # Digit domains from scratch, then transfer: direct evaluation on the other domains; a
    # new classifier on frozen features, fitted on a small labelled target subset; and, as
    # the reference, the target trained from scratch on that same subset.
    domains = profile_domains(profile)
    subset = profile["finetune"]["train_subset"]
    target_only = {**profile["target_only"], "train_subset": subset,
                   "val_size": profile["finetune"].get("val_size")}
    for d in domains:
        train(f"{d}_scratch", "digits", "digits" if datasets.DOMAINS[d].small else "digit", d,
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
            runs[-1].status = Outcome.NOT_RUN
            runs[-1].reason = "no ImageNet weights given (--pretrained-weights PATH)"

    # CIFAR-10, every model on one budget: standard, FGSM / FGSM-RS / PGD adversarial
    # training, and Circle Loss with and without PGD-AT at the weight its sweep chose.
    budget = profile["cifar10"]
    cifar = ds["cifar10"]
    sweep = {}
    for w in CIRCLE_WEIGHTS:
        sweep[w] = f"circle_sweep_w{w}"
        train(sweep[w], "circle_sweep", "circle_sweep", cifar, ["--circle-weight", w],
              weight=float(w))
    circle = Choice("--circle-weight", sweep)
    adv = ["--adv-train", "--eps", "8/255", "--adv-prob", str(budget["adv_prob"])]
    pgd = adv + ["--attack", "pgd", "--alpha", budget["alpha"], "--iters", str(budget["iters"])]
    models = {"cifar10_standard": ([], 0, None), "cifar10_circle": ([], 0, circle),
              "cifar10_fgsm_at": (adv + ["--attack", "fgsm"], 1, None),
              "cifar10_fgsm_rs_at": (adv + ["--attack", "fgsm_rs"], 1, None),
              "cifar10_pgd_at": (pgd, budget["iters"], None),
              "cifar10_circle_pgd_at": (pgd, budget["iters"], circle)}
    for name, (extra, iters, choice) in models.items():
        attack = extra[extra.index("--attack") + 1] if "--attack" in extra else None
        train(name, "cifar10", "cifar10", cifar, extra, adv_iters=iters, choice=choice,
              model=name, adversarial=attack is not None, attack=attack, circle=choice is not None)

    # Natural-image features for digits: the CIFAR-10 standard model as a frozen extractor.
    for dst in domains:
        finetune("cifar10", dst, "cifar10_standard")

    # Every CIFAR-10 model under the same attacks (AutoAttack included); every component on
    # the standard and PGD-trained models.
    for name in models:
        full = name in ("cifar10_standard", "cifar10_pgd_at")
        evaluate(f"eval_{name}", name, cifar, "robustness",
                 components=None if full else ["attacks", "autoattack"], diagnostics=full)
    _keep_only_weights_read(runs)
    return runs


def _keep_only_weights_read(runs):
    """Training runs whose weights no other run reads keep only their records on disk (a
    ResNet18's best.pth is ~43 MB; most runs of the matrix are read only through their
    final_metrics.json)."""
    read = {name for run in runs for name in run.needs}
    for run in runs:
        if run.script == "train" and run.name not in read:
            run.argv += ["--keep-weights", "none"]


def _keeps_weights(run):
    return run.script == "train" and "--keep-weights" not in run.argv


# ----------------------------------------------------------------------------- running

def _outputs(run):
    """(file proving the run finished, file recording its command)."""
    if run.script == "train":
        files = _train_files(run)
        return files.final, files.config
    record = run_contract.eval_record(run.argv[run.argv.index("--out") + 1])
    return record, record


def _train_files(run):
    return run_contract.TrainFiles(run.argv[run.argv.index("--out-dir") + 1])


def _diverged_file(run):
    return _train_files(run).diverged if run.script == "train" else None


def _recorded_command(path):
    try:
        return utils.load_json(path).get("command")
    except (OSError, ValueError):
        return None


def _same_command(path, run):
    """Whether the command recorded in `path` computes what `run` would: flags that only
    say where data lives or which device runs it (utils.NEUTRAL_FLAGS) may differ."""
    recorded = _recorded_command(path)
    return recorded is not None and utils.computed_part(recorded) == utils.computed_part(run.command)


def _newer_than_needs(path, run, runs_by_name):
    """Whether `path` is newer than the outputs of every run `run` reads (a retrained model
    makes its evaluation stale even though the evaluation's command is unchanged)."""
    made = os.path.getmtime(path)
    for name in run.needs_all:
        need_done = _outputs(runs_by_name[name])[0]
        if not os.path.exists(need_done) or os.path.getmtime(need_done) > made:
            return False
    return True


def _up_to_date(run, runs_by_name, need_weights=True):
    """Whether the run's outputs are complete, were made by exactly this command, and are
    newer than the outputs of every run it reads (and, if other runs read its weights and
    `need_weights`, whether they are there)."""
    done_file, command_file = _outputs(run)
    if not os.path.exists(done_file) or not _same_command(command_file, run):
        return False
    if need_weights and _keeps_weights(run) and not os.path.exists(_train_files(run).best):
        return False
    return _newer_than_needs(done_file, run, runs_by_name)


def _diverged_before(run, runs_by_name):
    """The divergence record of this exact command, if it already diverged (a result: a
    re-run would diverge again)."""
    path = _diverged_file(run)
    if (path and os.path.exists(path) and _same_command(path, run)
            and _newer_than_needs(path, run, runs_by_name)):
        return utils.load_json(path)
    return None


def _divergence_reason(record):
    if "step" in record:
        return f"loss {record['loss']} at epoch {record['epoch']}, step {record['step']}"
    return f"validation loss {record.get('validation_loss')} after epoch {record['epoch']}"


UP_TO_DATE = "up to date (same command, outputs complete)"
NOT_EXECUTED = "not executed in this invocation and no up-to-date outputs"


def resolve(run, runs_by_name):
    """Fix a Choice flag from the candidates' results; False when none of them finished."""
    if not run.choice or run.choice.flag in run.argv:
        return True
    scores = {}
    for value, name in run.choice.candidates.items():
        done = _outputs(runs_by_name[name])[0]
        if runs_by_name[name].status in run_contract.FINISHED and os.path.exists(done):
            scores[value] = utils.load_json(done)[run.choice.by]
    if not scores:
        return False
    run.argv = run.argv + [run.choice.flag, max(scores, key=lambda v: (scores[v], v))]
    run.fields["chosen"] = {"flag": run.choice.flag, "value": run.argv[-1], "scores": scores}
    return True


def blocked(run, runs_by_name):
    """Why a run cannot start because of what it reads, or None."""
    if run.status == Outcome.NOT_RUN:  # decided when the matrix was declared
        return run.reason
    missing = [n for n in run.needs if runs_by_name[n].status in run_contract.UNUSABLE]
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
        return Outcome.DONE, "", ""
    except utils.NotAvailable as exc:  # something absent that the user knows about
        return Outcome.NOT_RUN, str(exc.code).removeprefix("error: "), ""
    except utils.Diverged as exc:
        return Outcome.DIVERGED, str(exc.code).removeprefix("error: "), ""
    except SystemExit as exc:  # bad input: a file the user gave, conflicting flags, ...
        message = str(exc.code).removeprefix("error: ")
        return Outcome.FAILED, message, message
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crash: the traceback's last lines go to the log and report
        traceback.print_exc()
        return Outcome.FAILED, f"{type(exc).__name__}: {exc}", _tail(traceback.format_exc())


def prepare(run, runs_by_name, force):
    """Decide whether a run needs executing: None if so, else sets its outcome."""
    reason = blocked(run, runs_by_name)
    if reason:
        run.status, run.reason = Outcome.NOT_RUN, reason
        return False
    if not force and _up_to_date(run, runs_by_name):
        run.status, run.reason = Outcome.SKIPPED, UP_TO_DATE
        return False
    record = None if force else _diverged_before(run, runs_by_name)
    if record:
        run.status, run.reason = Outcome.DIVERGED, _divergence_reason(record) + " (recorded earlier)"
        return False
    return True


def launch_argv(run, force):
    """The argv to execute: an interrupted training run of the same command continues."""
    done_file, command_file = _outputs(run)
    argv = list(run.argv)
    if (run.script == "train" and not force and not os.path.exists(done_file)
            and _same_command(command_file, run)
            and os.path.exists(_train_files(run).last)):
        argv.append("--resume")
    return argv


def finish(run, outcome, seconds):
    """Record a run's outcome; a run that says it finished but left no result has FAILED."""
    run.status, run.reason, run.error_tail = outcome
    run.seconds = seconds
    done_file = _outputs(run)[0]
    if run.status == Outcome.DONE and not os.path.exists(done_file):
        run.status, run.reason = Outcome.FAILED, f"finished without writing {done_file}"
    if run.status == Outcome.DIVERGED and _diverged_file(run) and os.path.exists(_diverged_file(run)):
        run.reason = _divergence_reason(utils.load_json(_diverged_file(run)))


def execute(run, runs_by_name, force):
    """Run one step in this process; never raises (except on Ctrl-C)."""
    if not prepare(run, runs_by_name, force):
        return
    start = time.time()
    outcome = call(run.script, launch_argv(run, force))
    finish(run, outcome, time.time() - start)


def on_disk(run, runs_by_name):
    """The outcome of a run that is not executed now, from the files it left (its numbers
    stand without its weights, which only a run that reads them needs)."""
    if run.status == Outcome.NOT_RUN:  # decided when the matrix was declared
        return
    chosen = resolve(run, runs_by_name)  # a Choice flag is fixed by what the candidates left
    record = chosen and _diverged_before(run, runs_by_name)
    if chosen and _up_to_date(run, runs_by_name, need_weights=False):
        run.status, run.reason = Outcome.SKIPPED, UP_TO_DATE
    elif record:
        run.status, run.reason = Outcome.DIVERGED, _divergence_reason(record) + " (recorded earlier)"
    else:
        run.status, run.reason = Outcome.NOT_RUN, NOT_EXECUTED


def _eta(runs, elapsed):
    done_cost = sum(r.cost for r in runs if r.status == Outcome.DONE)
    rest = sum(r.cost for r in runs if r.status == Outcome.PENDING)
    if not done_cost:
        return "unknown"
    return f"{rest * elapsed / done_cost / 60:.0f} min"


def _announce_start(run, i, total, start, runs):
    print(f"\n=== [{i}/{total}] {run.script} {run.name} | elapsed "
          f"{(time.time() - start) / 60:.1f} min | estimated left {_eta(runs, time.time() - start)}"
          f"\n    {run.command}", flush=True)


def _announce_end(run):
    print(f"=== {run.name}: {run.status}{': ' + run.reason if run.reason else ''} "
          f"({run.seconds:.0f}s)", flush=True)
    if run.status == Outcome.FAILED:
        print(f"FAILED: {run.name}\n{run.error_tail or run.reason}", file=sys.stderr, flush=True)


def run_serial(runs, by_name, force):
    """Every run in matrix order, in this process: the output streams to the terminal."""
    start = time.time()
    for i, run in enumerate(runs, 1):
        if run.status != Outcome.PENDING:
            continue
        if not prepare(run, by_name, force):
            _announce_end(run)
            continue
        _announce_start(run, i, len(runs), start, runs)
        t0 = time.time()
        outcome = call(run.script, launch_argv(run, force))
        finish(run, outcome, time.time() - t0)
        _announce_end(run)


# ----------------------------------------------------------------------------- parallel

def _log_path(log_dir, name):
    return os.path.join(log_dir, f"{name}.log")


def call_logged(script, argv, log, threads=None):
    """`call` with the run's output in `log` (parallel runs would interleave on a terminal);
    `threads` caps torch's CPU threads (processes sharing cores must divide them)."""
    import contextlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print(f"\n$ {utils.command_line(script + '.py', argv)}", flush=True)
        return call(script, argv)


def _worker_init(slots, gpus):
    """Pin one worker process to one GPU (before torch touches CUDA), round robin."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])


def _threads_per_job(jobs):
    """Torch CPU threads for each of `jobs` runs sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _visible_gpus():
    """The GPU indices this machine offers, read without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class ProcessBackend:
    """N worker processes on this machine: one GPU each where there are GPUs, else the CPU
    cores divided between them."""

    def __init__(self, jobs, device):
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # CUDA and OpenMP do not survive fork
        gpus = _visible_gpus() if device in ("auto", "cuda") else []
        self.threads = _threads_per_job(jobs)
        self.manager = context.Manager()
        slots = self.manager.Queue()
        for i in range(jobs):
            slots.put(i)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_init, initargs=(slots, gpus))
        self.where = (f"{jobs} processes, one GPU each ({', '.join(gpus)})" if gpus else
                      f"{jobs} processes with {self.threads} CPU threads each")

    def submit(self, run, argv, log):
        return self.pool.submit(call_logged, run.script, argv, log, self.threads)

    @staticmethod
    def outcome(handle):
        try:
            return handle.result()
        except Exception as exc:  # the worker process itself died
            return Outcome.FAILED, f"worker process: {type(exc).__name__}: {exc}", ""

    def close(self):
        self.pool.shutdown(cancel_futures=True)  # on Ctrl-C, runs not yet started never start
        self.manager.shutdown()


class SubmititBackend:
    """Each run a job through submitit: a Slurm cluster, or its local executor (the same
    job files and logs, on this machine) for testing."""

    def __init__(self, args, jobs):
        import submitit

        folder = os.path.join(args.checkpoints, "submitit", "%j")
        if args.launcher == "slurm":
            try:
                self.executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            except RuntimeError as exc:  # no srun / sbatch on this machine
                raise SystemExit(f"error: --launcher slurm: {exc} Run the pipeline on the "
                                 "cluster's login node, or use --launcher local.")
            params = {"timeout_min": args.slurm_timeout_min,
                      "cpus_per_task": args.slurm_cpus, "gpus_per_node": args.slurm_gpus,
                      "nodes": 1, "tasks_per_node": 1, "name": "cnn-robustness"}
            if args.slurm_partition:
                params["slurm_partition"] = args.slurm_partition
            self.executor.update_parameters(**params)
            self.threads = args.slurm_cpus
        else:
            self.executor = submitit.LocalExecutor(folder=folder)
            self.threads = _threads_per_job(jobs)
            self.executor.update_parameters(timeout_min=args.slurm_timeout_min)
        self.where = f"submitit {args.launcher} jobs, logs in {os.path.dirname(folder)}"

    def submit(self, run, argv, log):
        return self.executor.submit(call_logged, run.script, argv, log, self.threads)

    @staticmethod
    def outcome(job):
        try:
            return job.result()
        except Exception as exc:  # the job died (killed, timed out, node failure)
            return Outcome.FAILED, f"job {job.job_id}: {type(exc).__name__}: {str(exc)[-500:]}", _tail(str(exc))

    def close(self):
        pass


def run_parallel(runs, by_name, force, backend, jobs, log_dir):
    """Runs whose inputs are ready start as soon as a slot is free; each run's output goes to
    log_dir/<name>.log. Outcomes are the same as run_serial's."""
    print(f"running on {backend.where}; logs in {log_dir}/", flush=True)
    pending = [r for r in runs if r.status == Outcome.PENDING]
    running, start = {}, time.time()
    try:
        while pending or running:
            progressed = False
            for run in list(pending):
                if len(running) >= jobs:
                    break
                if any(by_name[n].status in (Outcome.PENDING, Outcome.RUNNING) for n in run.needs_all):
                    continue
                pending.remove(run)
                progressed = True
                if not prepare(run, by_name, force):
                    _announce_end(run)
                    continue
                _announce_start(run, len(runs) - len(pending), len(runs), start, runs)
                run.status = Outcome.RUNNING
                running[run.name] = (run, backend.submit(run, launch_argv(run, force),
                                                         _log_path(log_dir, run.name)), time.time())
            for name, (run, handle, t0) in list(running.items()):
                if handle.done():  # a concurrent.futures Future and a submitit Job alike
                    finish(run, backend.outcome(handle), time.time() - t0)
                    del running[name]
                    progressed = True
                    _announce_end(run)
            if not progressed:
                time.sleep(0.5)
    finally:
        backend.close()


# ----------------------------------------------------------------------------- report

def _load_results(runs):
    """Numbers of every run, read only from the files train.py and eval.py wrote."""
    results = {}
    for run in runs:
        done_file, _ = _outputs(run)
        if run.status in run_contract.FINISHED and os.path.exists(done_file):
            results[run.name] = (run_contract.load_train_record(_train_files(run).folder)
                                 if run.script == "train" else utils.load_json(done_file))
    return results


def write_report(args, runs, results, wall_time):
    """Render the report from the run records and the numbers their files hold."""
    import report

    study = report.Study(runs, results, args.profile, PROFILES[args.profile],
                         utils.command_line("run_report_pipeline.py", args.argv), args.data_root,
                         wall_time)
    return report.write(study, args.report_dir)


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


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                   help="budgets: smoke (synthetic, ~1.5 min), quick (real data, ~1 h on 2 CPU "
                        "cores), full (the study's schedules, for a GPU)")
    p.add_argument("--data-root", default=datasets.default_data_root(),
                   help=datasets.DATA_ROOT_HELP)
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
    p.add_argument("--render-only", action="store_true",
                   help="run nothing: write the report from the outputs already on disk")
    p.add_argument("--jobs", type=utils.positive_int, default=1,
                   help="runs at once: with the local launcher, N processes (one GPU each "
                        "where there are GPUs, else the CPU cores divided between them); with "
                        "slurm, at most N jobs queued at once")
    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="where runs execute: this machine; a Slurm cluster, one job per run "
                        "through submitit; or submitit's local executor (the Slurm code path "
                        "on this machine, for testing)")
    p.add_argument("--slurm-partition", default=None, help="Slurm partition (--launcher slurm)")
    p.add_argument("--slurm-gpus", type=utils.nonnegative_int, default=1,
                   help="GPUs per Slurm job")
    p.add_argument("--slurm-cpus", type=utils.positive_int, default=8,
                   help="CPU cores per Slurm job (and torch threads)")
    p.add_argument("--slurm-timeout-min", type=utils.positive_int, default=600,
                   help="time limit of one job in minutes")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any run did not run")
    p.add_argument("--seed", type=int, default=0, help="seed of every run but the ablations")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="seeds of every ablation variant (default: the profile's; quick: 0,1,2)")
    p.add_argument("--device", default="auto", help="device of every run")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.seeds is None:
        args.seeds = PROFILES[args.profile]["seeds"]
    if args.checkpoints is None:
        args.checkpoints = os.path.join("checkpoints", args.profile)
    if args.report_dir is None:
        args.report_dir = "report" if args.profile == REPORT_PROFILE else os.path.join("report", args.profile)
    return args


def missing_data(args, profile):
    """The real datasets this profile reads whose files are not in the data root, as one
    line that says which and how to add them (None when nothing is missing)."""
    ds = profile["datasets"]
    names = {ds.get(args.ablation_dataset, args.ablation_dataset), ds["cifar10"],
             *profile_domains(profile)}
    missing = {n: files for n in sorted(names) if (files := datasets.files_missing(n, args.data_root))}
    if not missing:
        return None
    return (f"data root {args.data_root} lacks " + "; ".join(
        f"{n} ({', '.join(files)})" for n, files in missing.items())
        + ": their runs are \"not run\". Add them with --data-root FOLDER (or $DATA_ROOT) "
        "naming a folder that holds those files (README, Data).")


def main(argv=None):
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    runs = build_matrix(args, profile)
    missing = missing_data(args, profile)
    by_name = {r.name: r for r in runs}
    if args.list:
        for run in runs:
            print(f"{run.name:40s} {run.group:12s} {run.command}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(by_name))
        if unknown:
            raise SystemExit(f"error: unknown runs {unknown}; choose from {sorted(by_name)}")
    if missing:
        print(f"NOTE: {missing}", flush=True)
    start = time.time()
    outcomes = restore_records(args) if args.render_only else {}
    for run in runs:
        if (args.only and run.name not in args.only) or args.render_only:
            on_disk(run, by_name)  # report what is on disk for it
            recorded_outcome(run, outcomes)
    if not args.render_only:
        # one pipeline per checkpoints folder at a time (each run also has one owner)
        with run_contract.Owner(os.path.join(args.checkpoints, run_contract.PIPELINE_LOCK),
                                f"checkpoints folder {args.checkpoints}"):
            launch(args, runs, by_name)
    wall = time.time() - start
    if args.render_only:
        lost = records_lost(args, runs)
        if lost:
            print(f"error: --render-only: {len(lost)} runs that {args.report_dir}/REPORT.md shows "
                  f"with results have no up-to-date records under {args.checkpoints} ("
                  + ", ".join(lost[:5]) + (", ..." if len(lost) > 5 else "")
                  + f"); the report is left as it is. Point --checkpoints at their records, or "
                  "run the pipeline without --render-only to redo them.", file=sys.stderr, flush=True)
            return 1
    results = _load_results(runs)
    write_report(args, runs, results, wall)
    save_records(args, runs)
    code = exit_status(args, runs)
    if missing:
        print(f"\nNOTE: {missing}", flush=True)
    return code


def launch(args, runs, by_name):
    """Execute the pending runs: serially in this process, or through a backend."""
    if args.launcher == "local" and args.jobs == 1:
        run_serial(runs, by_name, args.force)
        return
    backend = (ProcessBackend(args.jobs, args.device) if args.launcher == "local"
               else SubmititBackend(args, args.jobs))
    run_parallel(runs, by_name, args.force, backend, args.jobs, os.path.join(args.checkpoints, "logs"))


def _record_files(run):
    return _train_files(run).records if run.script == "train" else [_outputs(run)[0]]


def save_records(args, runs):
    """Copy the small records of every run the report shows into <report-dir>/records/ (the
    checkpoints folder's layout, with their times), and every run's outcome: committed
    with the report, they let --render-only rebuild it on a fresh clone."""
    import shutil

    folder = os.path.join(args.report_dir, run_contract.RECORDS)
    shutil.rmtree(folder, ignore_errors=True)  # records of runs the report no longer shows go
    files = {}
    for run in runs:
        if run.status not in (*run_contract.FINISHED, Outcome.DIVERGED):
            continue
        for path in _record_files(run):
            if os.path.exists(path):
                rel = os.path.relpath(path, args.checkpoints)
                os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
                shutil.copyfile(path, os.path.join(folder, rel))
                files[rel] = os.path.getmtime(path)
    utils.save_json({"checkpoints": args.checkpoints, "files": files},
                    os.path.join(folder, run_contract.RECORDS_MANIFEST))
    utils.save_json({r.name: {"status": r.status, "reason": r.reason, "error_tail": r.error_tail,
                              "seconds": r.seconds, "command": r.command} for r in runs},
                    os.path.join(folder, run_contract.OUTCOMES))


def restore_records(args):
    """Before --render-only: copy the report's committed records that the checkpoints
    folder lacks into it (never over a file there), with their original times. Returns the
    outcomes the report recorded, {} when it has none."""
    import shutil

    folder = os.path.join(args.report_dir, run_contract.RECORDS)
    manifest_path = os.path.join(folder, run_contract.RECORDS_MANIFEST)
    if not os.path.exists(manifest_path):
        return {}
    restored = 0
    for rel, made in utils.load_json(manifest_path)["files"].items():
        dest = os.path.join(args.checkpoints, rel)
        if not os.path.exists(dest) and os.path.exists(os.path.join(folder, rel)):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(folder, rel), dest)
            os.utime(dest, (made, made))
            restored += 1
    if restored:
        print(f"restored {restored} run records from {folder} into {args.checkpoints} "
              "(records only: no weights)", flush=True)
    return utils.load_json(os.path.join(folder, run_contract.OUTCOMES))


def recorded_outcome(run, outcomes):
    """Under --render-only, a run keeps the outcome the report recorded for the same command
    where the disk agrees: its numbers (or divergence record) are there (it stays "done" or
    "diverged", with its time), or nothing is (a FAILED run stays FAILED, with its error; a
    "not run" keeps its reason)."""
    before = outcomes.get(run.name)
    if not before or utils.computed_part(before["command"]) != utils.computed_part(run.command):
        return
    numbers_there = ((run.status, before["status"]) in ((Outcome.SKIPPED, Outcome.DONE),
                                                       (Outcome.DIVERGED, Outcome.DIVERGED)))
    nothing_there = (run.status == Outcome.NOT_RUN and run.reason == NOT_EXECUTED
                     and before["status"] in (Outcome.NOT_RUN, Outcome.FAILED))
    if numbers_there or nothing_there:
        run.status, run.reason = Outcome(before["status"]), before["reason"]
        run.error_tail, run.seconds = before["error_tail"], before["seconds"]


def records_lost(args, runs):
    """The runs the report in --report-dir shows with results (done, up to date or diverged)
    whose records are not on disk now: rendering would turn their rows into "not run"."""
    path = os.path.join(args.report_dir, "figures", "metrics_summary.json")
    if not os.path.exists(path):
        return []
    shown = utils.load_json(path).get("runs", {})
    now = {r.name: r.status for r in runs}
    shows_result = (*run_contract.FINISHED, Outcome.DIVERGED)
    return [name for name, r in shown.items() if r["status"] in shows_result
            and now.get(name) not in shows_result]


def exit_status(args, runs):
    """Summarise the outcomes; non-zero if any run FAILED (or, with --strict, did not run)."""
    count = {s: sum(r.status == s for r in runs) for s in (Outcome.DONE, Outcome.SKIPPED,
                                                           Outcome.NOT_RUN, Outcome.DIVERGED,
                                                           Outcome.FAILED)}
    print(f"\nreport written to {args.report_dir}/REPORT.md: "
          + ", ".join(f"{n} {'up to date' if s == Outcome.SKIPPED else s}" for s, n in count.items() if n),
          flush=True)
    for r in runs:
        if r.status in (Outcome.NOT_RUN, Outcome.DIVERGED, Outcome.FAILED):
            print(f"  {r.status}: {r.name}: {r.reason}", flush=True)
    failed = [r for r in runs if r.status == Outcome.FAILED]
    for r in failed:
        print(f"\nFAILED: {r.name}\n    {r.command}\n" + "\n".join(
            "    " + line for line in (r.error_tail or r.reason).splitlines()), file=sys.stderr)
    if failed:
        return 2
    if (args.strict and count[Outcome.NOT_RUN]) or count[Outcome.NOT_RUN] == len(runs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
