"""The experiment plan: the matrix of runs a profile (study/profiles.py) declares.

Each run is declared once, as data: its script, flags, the runs it reads, and the fields the
report places it by (variant, seed, source, target, kind, model, ...). The matrix is built by
one small function per experiment group, in dependency order.
"""

import os
from dataclasses import dataclass, field

import attacks
import datasets
import run_contract
import utils
from run_contract import Outcome
from study.profiles import ABLATIONS, CIRCLE_WEIGHTS, profile_domains


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
    cost: float = 1.0  # training-image passes (an attack step on an attacked batch counts 0.8)
    stem: str = "imagenet"  # the model's stem: its cost per image (the CIFAR stem's is ~10x)
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
    # the small domains keep their default split (10%) unless a budget sizes theirs apart
    val_size = budget.get("small_val_size" if datasets.DOMAINS[dataset].small else "val_size")
    if val_size:
        flags += ["--val-size", str(val_size)]
    if budget.get("robust_val_samples"):  # PGD-10 validation of adversarial runs
        flags += ["--robust-val-samples", str(budget["robust_val_samples"])]
    if datasets.DOMAINS[dataset].augment["jitter"] and "color_jitter" in budget:  # natural images
        flags += ["--color-jitter", str(budget["color_jitter"])]
    return flags + common


class Matrix:
    """The runs declared so far, and how one is declared: the flags every run of this
    invocation shares, a profile's budgets, the paths runs read each other by."""

    def __init__(self, args, profile):
        self.args, self.profile, self.runs = args, profile, []
        self.common = ["--device", args.device]
        if args.no_download or profile.get("no_download"):
            self.common.append("--no-download")

    def weights(self, model):
        return run_contract.TrainFiles(os.path.join(self.args.checkpoints, model)).best

    def train(self, name, group, budget, dataset, extra=(), needs=(), adv_iters=0, seed=None,
              choice=None, **fields):
        """A train.py run on `budget` (a profile key, or the budget itself)."""
        b = self.profile[budget] if isinstance(budget, str) else budget
        images = b.get("train_subset") or datasets.DOMAINS[dataset].train_images
        seed = self.args.seed if seed is None else seed
        argv = (_train_flags(b, os.path.join(self.args.checkpoints, name), dataset,
                             self.args.data_root, self.common)
                + ["--seed", str(seed)] + FAST + list(extra))
        self.runs.append(Run(name, "train", argv, group, list(needs), {**fields, "seed": seed},
                             choice, cost=b["epochs"] * images * (1 + 0.8 * adv_iters * b.get("adv_prob", 1.0)),
                             stem=b.get("stem", "imagenet")))
        return self.runs[-1]

    def finetune(self, src, dst, model):
        """A new classifier on `model`'s frozen features, fitted on the target's small subset."""
        self.train(f"transfer_{src}_to_{dst}_finetune", "transfer", "finetune", dst,
                   ["--init-from", self.weights(model), "--freeze-features"],
                   needs=[model], source=src, target=dst, kind="finetune")

    def evaluate(self, name, model, dataset, group, components=None, extra=(), **fields):
        """An eval.py run of `model`'s best.pth: every component, or `components`."""
        e, args = self.profile["eval"], self.args
        argv = ["--checkpoint", self.weights(model), "--dataset", dataset,
                "--data-root", args.data_root, "--out", os.path.join(args.checkpoints, "eval", name),
                "--batch-size", str(e["batch_size"]), "--seed", str(args.seed),
                "--device", args.device, *extra]
        if args.no_download or self.profile.get("no_download"):
            argv.append("--no-download")
        if components:
            argv += ["--components"] + components
        if not components or "autoattack" in components:
            argv += ["--autoattack-samples", str(e["autoattack_samples"]),
                     "--autoattack-version", e["autoattack_version"]]
            if e.get("autoattack_steps"):  # fewer than the paper's 100: a smoke test only
                argv += ["--autoattack-steps", str(e["autoattack_steps"])]
        if not components or "attacks" in components:
            argv += ["--max-batches", str(e["max_batches"]),
                     "--sweep-max-batches", str(e["sweep_max_batches"]),
                     "--iter-sweep-max-batches", str(e["iter_sweep_max_batches"]),
                     "--umap-samples", str(e["umap_samples"]),
                     "--pgd-iters-list", e["pgd_iters_list"],
                     "--sweep-epsilons", e["sweep_epsilons"]]
        if not components or "corruptions" in components:
            argv += ["--corruption-samples", str(e["corruption_samples"])]
        if not components and e.get("grid_samples"):  # fewer than eval.py's 8: test-sized
            argv += ["--grid-samples", str(e["grid_samples"])]
        stem = next((r.stem for r in self.runs if r.name == model), "imagenet")
        self.runs.append(Run(name, "eval", argv, group, [model], {"model": model, **fields},
                             cost=_eval_cost(e, components, dataset), stem=stem))


FAST = ["--schedule", "onecycle", "--nesterov"]  # every run of the matrix
# (corruption, severity) pairs built: CIFAR-10-C's 14 x 5, MNIST-C's 15 at one severity each
CORRUPTION_CELLS = {"cifar10-c": 70, "mnist-c": 15}


def _eval_cost(e, components, dataset):
    """An evaluation's cost in training-image units: a forward pass ~0.3, an attack step ~0.8."""
    cost = 0.3 * 10000
    if not components or "autoattack" in components:
        # APGD-CE's 100 steps on every image, APGD-T's 9 x 100 on the ~third left
        cost += 0.8 * (e["autoattack_samples"] or 10000) * (100 + 300)
    if not components or "attacks" in components:
        cost += 0.8 * 12 * e["max_batches"] * e["batch_size"]
    if not components or "corruptions" in components:  # a forward pass per corrupted image
        grey_digits = datasets.DOMAINS[dataset].digit and not datasets.DOMAINS[dataset].colour
        cost += 0.3 * (e["corruption_samples"] or 10000) * CORRUPTION_CELLS[
            "mnist-c" if grey_digits else "cifar10-c"]
    if not components:  # sweeps over eps and PGD iterations, UMAP
        n_eps = len(e["sweep_epsilons"].split(","))
        iters = sum(int(k) for k in e["pgd_iters_list"].split(","))
        cost += 0.8 * e["batch_size"] * (e["sweep_max_batches"] * n_eps * 12
                                         + e["iter_sweep_max_batches"] * iters) + 10000
    # measured: the committed quick report's evaluations ran at 1.7x these units per second
    # relative to its training runs (AutoAttack stops attacking an image once it is wrong)
    return cost / 1.7


def ablations(m):
    """Every ablation variant (and the profile's extra ones) with every seed, on one dataset."""
    args, profile = m.args, m.profile
    dataset = profile["datasets"].get(args.ablation_dataset, args.ablation_dataset)
    for variant, extra in {**ABLATIONS, **profile.get("extra_ablations", {})}.items():
        for seed in args.seeds:
            why = profile.get("deliberate", {}).get(variant)
            m.train(f"ablation_{args.ablation_dataset}_{variant}_s{seed}", "ablation", "ablation",
                    dataset, extra, seed=seed, variant=variant,
                    **({"deliberate": why} if why else {}))


def digit_transfer(m, domains):
    """Each digit domain from scratch, then transfer between every ordered pair: direct
    evaluation; a new classifier on frozen features, fitted on a small labelled target
    subset; and, as the reference, the target trained from scratch on that same subset."""
    profile = m.profile
    target_only = {**profile["target_only"], "train_subset": profile["finetune"]["train_subset"],
                   "val_size": profile["finetune"].get("val_size"),
                   "small_val_size": profile["finetune"].get("small_val_size")}
    for d in domains:
        m.train(f"{d}_scratch", "digits", "digits" if datasets.DOMAINS[d].small else "digit", d,
                source=d, target=d, kind="in_domain")
    for d in domains:
        m.train(f"{d}_target_only", "transfer", target_only, d, target=d, kind="target_only")
    for src in domains:
        for dst in domains:
            if src != dst:
                m.evaluate(f"transfer_{src}_to_{dst}_direct", f"{src}_scratch", dst, "transfer",
                           components=["confusion"], source=src, target=dst, kind="direct")
                m.finetune(src, dst, f"{src}_scratch")
    src, dst = profile["framing_pair"]  # the same pair with the target's digits filling the frame
    m.evaluate(f"framing_{src}_to_{dst}_fill", f"{src}_scratch", dst, "transfer",
               components=["confusion"], extra=["--framing", "fill"], source=src, target=dst,
               kind="direct_fill")
    for dst in domains:  # declared either way: without weights they are "not run"
        run = m.train(f"transfer_imagenet_to_{dst}_finetune", "transfer", "finetune", dst,
                      ["--pretrained-weights", m.args.pretrained_weights or "<none>",
                       "--freeze-features"], source="imagenet", target=dst, kind="finetune")
        if not m.args.pretrained_weights:
            run.status, run.reason = Outcome.NOT_RUN, "no ImageNet weights given (--pretrained-weights PATH)"


def cifar10_models(m):
    """Every CIFAR-10 model on one budget: standard, FGSM / FGSM-RS / PGD adversarial
    training, and Circle Loss with and without PGD-AT at the weight its sweep chose.
    Returns the models' names."""
    budget, cifar = m.profile["cifar10"], m.profile["datasets"]["cifar10"]
    # a study in looks may add some models from a later look on (study/looks.py)
    later = {name: k for name, k in m.profile.get("looks", {}).get("from_look", {}).items()
             if "look" in m.profile and m.profile["look"] < k}
    sweep = {}
    for w in CIRCLE_WEIGHTS if not {"cifar10_circle", "cifar10_circle_pgd_at"} <= set(later) else ():
        sweep[w] = f"circle_sweep_w{w}"
        m.train(sweep[w], "circle_sweep", "circle_sweep", cifar, ["--circle-weight", w],
                weight=float(w))
    circle = Choice("--circle-weight", sweep)
    methods = {"cifar10_standard": (None, None), "cifar10_circle": (None, circle),
               "cifar10_fgsm_at": ("fgsm", None), "cifar10_fgsm_rs_at": ("fgsm_rs", None),
               "cifar10_pgd_at": ("pgd", None), "cifar10_circle_pgd_at": ("pgd", circle)}
    seeds = m.profile.get("model_seeds", [m.args.seed])
    names = []
    for method, (attack, choice) in methods.items():
        if method in later:
            continue
        # a published recipe (the full profile's) replaces the shared budget where it says
        b = {**budget, **m.profile.get("recipes", {}).get(method, {})}
        extra, iters = _adversarial_flags(b, attack)
        fields = dict(method=method, adversarial=attack is not None, attack=attack,
                      circle=choice is not None)
        # the claims' models get every seed (their intervals then include seed variance)
        for seed in seeds if method in m.profile.get("seeded_models", ()) else seeds[:1]:
            name = method if seed == seeds[0] else f"{method}_s{seed}"
            m.train(name, "cifar10", b, cifar, extra, adv_iters=iters, choice=choice,
                    seed=seed, model=name, **fields)
            names.append(name)
        if method in m.profile.get("equal_compute", ()) and "equal_compute" not in later:
            # the standard model's image-passes: the epochs this method affords at that cost
            epochs = max(1, round(budget["epochs"] / (1 + iters * b["adv_prob"])))
            name = f"{method}_equal_compute"
            m.train(name, "cifar10", {**b, "epochs": epochs}, cifar, extra, adv_iters=iters,
                    choice=choice, seed=seeds[0], model=name, equal_compute=True, **fields)
            names.append(name)
    return names


def _adversarial_flags(budget, attack):
    """(train.py flags, attack gradient steps per example) of a CIFAR-10 model's method."""
    extra = ["--stem", budget["stem"]] if budget.get("stem") else []
    extra += list(budget.get("extra", ()))
    if attack is None:
        return extra, 0
    extra += ["--adv-train", "--eps", "8/255", "--adv-prob", str(budget["adv_prob"]),
              "--attack", attack]
    if attacks.ATTACKS[attack].iterative:
        extra += ["--alpha", budget["alpha"], "--iters", str(budget["iters"])]
    return extra, attacks.ATTACKS[attack].gradient_steps(budget["iters"])


def robustness(m, models):
    """Every CIFAR-10 model under the same attacks (AutoAttack included); every component on
    the standard and PGD-trained models (their first seed)."""
    for name in models:
        full = name in ("cifar10_standard", "cifar10_pgd_at")
        m.evaluate(f"eval_{name}", name, m.profile["datasets"]["cifar10"], "robustness",
                   components=None if full else ["attacks", "autoattack", "corruptions"],
                   diagnostics=full)


def corruption_runs(m, domains):
    """The common corruptions beyond the CIFAR-10 models (their robustness evaluations score
    them): the augmentation ablation's two arms on every seed (CIFAR-10-C), and each greyscale
    digit domain's model on its own test split (MNIST-C)."""
    args = m.args
    dataset = m.profile["datasets"].get(args.ablation_dataset, args.ablation_dataset)
    for variant in ("baseline", "no_augment"):
        for seed in args.seeds:
            m.evaluate(f"corruptions_{args.ablation_dataset}_{variant}_s{seed}",
                       f"ablation_{args.ablation_dataset}_{variant}_s{seed}", dataset, "corruptions",
                       components=["corruptions"], kind="ablation", variant=variant, seed=seed)
    for d in domains:
        if not datasets.DOMAINS[d].colour:
            m.evaluate(f"corruptions_{d}_scratch", f"{d}_scratch", d, "corruptions",
                       components=["corruptions"], kind="digits", domain=d)


def build_matrix(args, profile):
    """The experiment matrix as an ordered list of runs (dependencies come first)."""
    m = Matrix(args, profile)
    domains = profile_domains(profile)
    ablations(m)
    digit_transfer(m, domains)
    models = cifar10_models(m)
    for dst in domains:  # natural-image features for digits: the standard model, frozen
        m.finetune("cifar10", dst, "cifar10_standard")
    robustness(m, models)
    corruption_runs(m, domains)
    _keep_only_weights_read(m.runs)
    return m.runs


def _keep_only_weights_read(runs):
    """Training runs whose weights no other run reads keep only their records on disk (a
    ResNet18's best.pth is ~43 MB; most runs of the matrix are read only through their
    final_metrics.json)."""
    read = {name for run in runs for name in run.needs}
    for run in runs:
        if run.script == "train" and run.name not in read:
            run.argv += ["--keep-weights", "none"]


def keeps_weights(run):
    """Whether a training run keeps its best.pth (another run reads it)."""
    return run.script == "train" and "--keep-weights" not in run.argv
