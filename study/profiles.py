"""The study's profiles: the budgets of every experiment group per profile (smoke, quick,
full), the ablation variants, and the Circle Loss weights the sweep tries. Data only;
study/plan.py builds the matrix of runs from it."""

import datasets

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

# What the real-data profiles share: every domain DOMAINS declares, three seeds.
REAL_DATA = {
    "datasets": {"cifar10": "cifar10", "mnist": "mnist", "svhn": "svhn"},
    "digit_domains": "all",
    "framing_pair": ("mnist", "usps"),
    "seeds": [0, 1, 2],
}

PROFILES = {
    # Tiny budgets on a synthetic CIFAR-10 stand-in and two small real digit domains:
    # exercises the whole chain, and every outcome a run can have, in ~3 minutes on one core.
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
        # 64 images in 4 steps per epoch (the one-cycle schedule needs 3 in all, and the
        # equal-compute runs get one epoch), validation on 50, the small digit domains' too
        # (other profiles leave them their 10%: USPS's 729 cost ~5 s here); 128 digits in 4
        # steps
        "cifar10": {"epochs": 2, "train_subset": 64, "batch_size": 16, "lr": 0.02,
                    "iters": 2, "alpha": "4/255", "adv_prob": 0.5, "robust_val_samples": 16,
                    "val_size": 50},
        "equal_compute": ("cifar10_fgsm_rs_at", "cifar10_pgd_at"),
        "ablation": {"epochs": 1, "train_subset": 64, "batch_size": 16, "lr": 0.02,
                     "val_size": 50},
        "circle_sweep": {"epochs": 1, "train_subset": 64, "batch_size": 16, "lr": 0.02,
                         "val_size": 50},
        "digit": {"epochs": 1, "train_subset": 128, "batch_size": 32, "lr": 0.02},
        "digits": {"epochs": 1, "train_subset": 128, "batch_size": 32, "lr": 0.02,
                   "small_val_size": 50},
        "finetune": {"epochs": 2, "train_subset": 64, "batch_size": 16, "lr": 0.05,
                     "val_size": 50, "small_val_size": 50},
        "target_only": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "eval": {"max_batches": 1, "sweep_max_batches": 1, "iter_sweep_max_batches": 1,
                 "batch_size": 16, "umap_samples": 200, "pgd_iters_list": "1,2,5",
                 "sweep_epsilons": "0,2/255,8/255,32/255", "autoattack_samples": 8,
                 "autoattack_version": "fast", "autoattack_steps": 10, "grid_samples": 4,
                 "corruption_samples": 16},
    },
    # Real data sized for a 2-core CPU, run over sessions (the pipeline resumes from disk):
    # `--plan` estimates ~9 h on the 2-core AMX Xeon (~380 images/s), ~2.5 h on the
    # AVX-512/bf16 EPYC (~1,400 images/s), where the earlier one-seed budgets took 87 min.
    # Every CIFAR-10 model, standard or adversarially trained, has one budget, so the cost of
    # adversarial training is not confounded with the schedule. Adversarial training attacks
    # every batch (FGSM with a random start at step 10/255, or a 2-step PGD whose step
    # reaches the eps-ball's surface); the short schedules drop the colour jitter.
    "quick": {
        **REAL_DATA,
        "cifar10": {"epochs": 8, "train_subset": None, "batch_size": 128, "lr": 0.2,
                    "iters": 2, "alpha": "10/255", "adv_prob": 1.0, "color_jitter": 0.0},
        "model_seeds": [0, 1, 2],
        "seeded_models": ("cifar10_standard", "cifar10_fgsm_rs_at", "cifar10_pgd_at"),
        "equal_compute": ("cifar10_fgsm_rs_at", "cifar10_pgd_at"),
        # the study in looks (study/looks.py, docs/pipeline.md): look 1 is the minimum design,
        # within 120 minutes on the 2-core AVX-512/bf16 EPYC by --plan; look 2 takes the claims
        # still open to their caps (ablation seeds, model seeds, attacked and corrupted images,
        # AutoAttack's sample), those most likely decided per minute first while --budget
        # lasts, and adds the models look 1 leaves out (Circle Loss, FGSM-AT, the
        # equal-compute pair). Two looks, not three: a budget the size of the fixed design
        # covers look 1 and part of one more, and O'Brien-Fleming spending tests a middle look
        # far more strictly than the cap. A CIFAR-10 model's seed costs 5-40 times an ablation
        # seed (15-38 min against 3-4 on the 2-core AVX2 EPYC), so the models stop at the fixed
        # design's 3 seeds
        "looks": {"seeds": [3, 8], "model_seeds": [2, 3], "images": [1024, 10000],
                  "autoattack": [500, 1000], "corruptions": [1000, 2000],
                  "from_look": {"cifar10_circle": 2, "cifar10_circle_pgd_at": 2,
                                "cifar10_fgsm_at": 2, "equal_compute": 2}},
        # a regime where regularization can show: 2,000 images trained to fit them. Measured
        # (baseline, seed 0, 2-core Xeon): 10,000 x 8 epochs left it at 58.9% train accuracy
        # for 57.6% test, nothing to regularize; 2,000 x 40 fits 87.0% of its images clean for
        # 52.9% test (no augmentation: 100% / 45.7%; dropout 0.3: 74.5% / 48.8%). The sweep
        # only ranks weights, so 4 epochs on 10,000 do there
        "ablation": {"epochs": 40, "train_subset": 2000, "batch_size": 128, "lr": 0.1,
                     "color_jitter": 0.0, "val_size": 1000},
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
                 # 500 images (the seeded order's first): AutoAttack is most of an evaluation's
                 # cost, and 14 models are evaluated; sampling SE ~2 points at 28%
                 "autoattack_samples": 500, "autoattack_version": "fast",
                 # per corruption and severity, from the MDE table in docs/evaluation.md: a
                 # cell's interval at most +-3.1 points, a family's drop resolved to ~2
                 "corruption_samples": 1000},
    },
    # The study's long schedules, for GPUs (--device cuda --jobs N, or --launcher slurm).
    "full": {
        **REAL_DATA,
        # the CIFAR stem (3x3 stride 1, no max-pool: layer4 at 4x4) of the published CIFAR-10
        # ResNet-18s, three seeds of the models the claims compare, and the published recipes
        # of the entries the robustness table stands beside
        "cifar10": {"epochs": 80, "train_subset": None, "batch_size": 128, "lr": 0.1,
                    "iters": 7, "alpha": "2/255", "adv_prob": 1.0, "stem": "cifar"},
        "model_seeds": [0, 1, 2],
        "seeded_models": ("cifar10_standard", "cifar10_fgsm_rs_at", "cifar10_pgd_at"),
        "equal_compute": ("cifar10_fgsm_rs_at", "cifar10_pgd_at"),
        "recipes": {
            # Wong et al. 2020: FGSM from a random start, step 10/255 (train.py's default, 1.25
            # eps), 15 epochs, cyclic lr to 0.2
            "cifar10_fgsm_rs_at": {"epochs": 15, "lr": 0.2},
            # Rice et al. 2020: PGD-10 (step 2/255), 200 epochs, lr 0.1 decayed x0.1 at 50% and
            # 75%, the checkpoint with the best PGD-10 validation accuracy (robust early stopping)
            "cifar10_pgd_at": {"epochs": 200, "lr": 0.1, "iters": 10, "alpha": "2/255",
                               "extra": ["--schedule", "multistep", "--select-by", "robust"]},
        },
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
                 "autoattack_samples": 0, "autoattack_version": "standard",
                 "corruption_samples": 0},
    },
}


def profile_domains(profile):
    """The profile's transfer domains: every digit domain datasets.DOMAINS declares, or, for
    "smoke-sized", those small enough (or bundled) for a test-sized run."""
    return datasets.digit_domains(smoke=profile["digit_domains"] == "smoke-sized")
