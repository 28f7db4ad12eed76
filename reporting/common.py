"""Shared by every section: the Study (runs, results, profile), how accuracies and
seed comparisons are computed, and how cells and tables are written."""

import math
import os
from dataclasses import dataclass, field

import numpy as np

import run_contract
import significance
import utils
from run_contract import Outcome
from significance import ALPHA


SHOWN = {Outcome.SKIPPED: "up to date"}  # a run whose outputs were already there for the same command


@dataclass
class Comparison:
    """One comparison a claim makes: `test` of other against reference (None where it could
    not be tested, `why` saying so), and the sign the claim expects of its effect. The claims
    (reporting/claims.py) judge them; a section may build its own claims' comparisons."""
    label: str
    expect: int
    test: significance.Test = None
    why: str = ""
    ran: bool = True  # False: a run it needs is missing ("not run"), so it is left out


# what a test across seeds grows with over a study's looks (significance.Test.grows): the
# ablations' seed schedule, or the seeded models'
ABLATION_SEEDS, MODEL_SEEDS = ("seeds", None), ("model_seeds", None)
ACROSS_SEEDS = (ABLATION_SEEDS[0], MODEL_SEEDS[0])


def across_model_seeds(reference, other):
    """The seed-paired t-test of two models' numbers, following the models' seed schedule."""
    return significance.paired(reference, other, grows=MODEL_SEEDS)


@dataclass
class Study:
    """Everything the report is rendered from."""
    runs: list
    results: dict
    profile_name: str = ""
    profile: dict = field(default_factory=dict)
    command: str = ""
    data_root: str = ""
    wall_time: float = 0.0
    per_image: dict = field(default_factory=dict)  # eval run -> {name: (indices, correct)}
    plans: list = field(default_factory=list)  # how each later look was planned (study/looks.py)

    def __post_init__(self):
        self.by_name = {r.name: r for r in self.runs}
        self.reading = None  # while minutes_read runs: the names of the runs read
        self.look = None  # at_look: the look this view shows

    def select(self, group=None, script=None, **fields):
        """The runs of `group` / `script` whose fields equal the given ones, in matrix order
        (at an earlier look, only those that had joined by then)."""
        return [r for r in self.runs
                if (group is None or r.group == group) and (script is None or r.script == script)
                and all(r.fields.get(k) == v for k, v in fields.items())
                and (self.look is None or r.fields.get("look", 1) <= self.look)]

    def at_look(self, look):
        """The study as it stood at an earlier look (1-based) of its profile's schedule: the runs
        that had joined by then (their `look` field), and each evaluation's growing samples cut to that look's size
        (each scores a prefix of one seeded order, so a look's sample starts the next one's).
        Per-seed numbers are read from the records as they are."""
        sizes = self.profile["look_samples"][look - 1]

        def cut(name, arrays):
            n = sizes.get(sample_class(name)) if sample_class(name) else None
            return arrays if n is None else (arrays[0][:n], arrays[1][:n])
        view = Study(self.runs, self.results, self.profile_name, self.profile, self.command,
                     self.data_root, self.wall_time,
                     {run: {name: cut(name, arrays) for name, arrays in outcomes.items()}
                      for run, outcomes in self.per_image.items()})
        view.look = look
        return view

    def split_size(self, run):
        """How many images the evaluation's split holds (its whole-split outcomes), or None."""
        clean = self.per_image.get(getattr(run, "name", run), {}).get("clean")
        return len(clean[0]) if clean is not None else None

    def result(self, run):
        """The numbers of a finished run (a Run or its name), else None."""
        run = self.by_name.get(run) if isinstance(run, str) else run
        if run is None or run.status not in run_contract.FINISHED:
            return None
        if self.reading is not None and run.name in self.results:
            self.reading.add(run.name)
        return self.results.get(run.name)

    def minutes_read(self, compute):
        """(compute(), the summed run minutes of every finished run it read, their names): what
        a claim's evidence cost (a run read by several claims counts for each)."""
        self.reading = set()
        try:
            value = compute()
            return value, sum(self.results[n].get("wall_time_s", 0) for n in self.reading) / 60, self.reading
        finally:
            self.reading = None

    def outcomes(self, run, name):
        """(indices, correct) of a finished evaluation's per-image outcomes `name`, or None
        (not recorded: an evaluation made before eval.py wrote them)."""
        run = self.by_name.get(run) if isinstance(run, str) else run
        if run is None or self.result(run) is None:
            return None
        return self.per_image.get(run.name, {}).get(name)

    @property
    def synthetic(self):
        return any(r.get("synthetic") for r in self.results.values())

    def title(self, text):
        """A figure title, marked where the numbers come from synthetic data."""
        return f"SYNTHETIC DATA: {text}" if self.synthetic else text

    def why(self, run):
        """The short outcome of a run that has no numbers: 'not run: ...', 'diverged: ...'."""
        run = self.by_name.get(run) if isinstance(run, str) else run
        if run is None:
            return "not in the matrix"
        return f"{run.status}: {short(run.reason)}" if run.reason else run.status


def sample_class(name):
    """Which growing sample an evaluation's per-image outcomes `name` belong to (study/looks.py
    scales each per look), None for the whole split."""
    if name == "clean":
        return None
    if name.startswith("corruption_"):
        return "corruptions"
    return "autoattack" if name.startswith("autoattack") else "attacks"


# ----------------------------------------------------------------------------- numbers

def accuracy(result):
    """(accuracy, [low, high]) of a train.py or eval.py result, or None."""
    if not result:
        return None
    if "clean_accuracy" in result:
        return result["clean_accuracy"], result["clean_accuracy_ci95"]
    return result["test_accuracy"], result["test_accuracy_ci95"]


def measure(result, key):
    """(value, 95% interval or None) of an eval.py result's key, or None if absent."""
    if not result or result.get(key) is None:
        return None
    return result[key], result.get(f"{key}_ci95")


def below(a, b):
    """a's 95% interval lies wholly below b's: a difference the sample size can see."""
    return bool(a and b and a[1] and b[1] and a[1][1] < b[1][0])


def seed_summary(values):
    """(n, mean, sample std or nan) of per-seed values."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return 0, math.nan, math.nan
    return len(values), float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def seed_difference(reference, other):
    """Difference of means (other - reference) of two {seed: value} dicts, over the seeds
    both have, and whether it exceeds the seed-to-seed spread: significance.paired (same
    seed: same split and data order) at ALPHA, uncorrected (the claims correct)."""
    seeds = sorted(set(reference) & set(other))
    if not seeds:
        return None
    diff = float(np.mean([other[s] - reference[s] for s in seeds]))
    test = significance.paired([reference[s] for s in seeds], [other[s] for s in seeds])
    if test is None:
        return {"diff": diff, "p": None, "exceeds": False}
    return {"diff": diff, "p": test.p, "exceeds": test.p < ALPHA}


def pm(value, ci95=None):
    """'27.3 ± 2.7' (half the 95% interval, in points), '27.3' without one, 'not run'."""
    if value is None:
        return Outcome.NOT_RUN
    if not ci95:
        return f"{100 * value:.1f}"
    return utils.plus_minus(value, ci95)


def cell(result, key):
    """pm() of an eval.py result's key, or 'not run' where the number is absent."""
    value = measure(result, key)
    return pm(*value) if value else Outcome.NOT_RUN


def pct(value, digits=2):
    return Outcome.NOT_RUN if value is None else f"{100 * value:.{digits}f}"


def short(reason):
    """The first clause of a failure reason, for table cells (the full text is in 'Runs and
    commands' and metrics_summary.json)."""
    reason = reason or "not selected or not reached"
    for cut in (": tried", ". "):
        if cut in reason:
            reason = reason.split(cut)[0]
    return reason if len(reason) <= 90 else reason[:87] + "..."


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(report_dir, rel, alt, missing_why):
    """A markdown image link if the file exists, else a line saying why it does not."""
    if os.path.exists(os.path.join(report_dir, rel)):
        return f"![{alt}]({rel})"
    return f"*Figure `{rel}` not drawn: {missing_why}.*"


# ----------------------------------------------------------------------------- ablations
