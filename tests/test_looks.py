"""Claims judged over a study's looks: each test's history is the same comparison on the study
as it stood at each look, negligible verdicts come from the declared smallest effects, and
every claim says what it spent and why it stopped."""

import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest

from reporting import claims, common, evidence, looks
from run_contract import Outcome
from test_report import ablations, rec, trained


def _study(variant_accs, base_accs, look, seeds=(3, 5, 8)):
    runs, results = [], {}
    ablations(runs, results, "baseline", base_accs)
    ablations(runs, results, "no_augment", variant_accs)
    for run in runs:  # the look each seed joined at, as study/looks.py tags them
        run.fields["look"] = 1 + sum(run.fields["seed"] >= s for s in seeds[:-1])
    profile = {"looks": {"seeds": list(seeds), "images": [1024, 4096, 10000]}, "look": look,
               "look_samples": [{"attacks": 1024, "autoattack": 512, "corruptions": 1024},
                                {"attacks": 4096, "autoattack": 2048, "corruptions": 4096},
                                {"attacks": 10240, "autoattack": None, "corruptions": None}]}
    return common.Study(runs, results, "test", profile)


def _augmentation_claim(margin=0.01):
    declared = [c for c in claims.CLAIMS if "augmentation regularizes" in c.statement]
    return [claims.Claim(c.statement, c.family, c.metric, c.compares, margin=margin,
                         margin_why="test") for c in declared]


def test_a_study_in_looks_tests_each_look_on_its_own_seeds():
    rng = np.random.default_rng(0)
    base = 0.60 + rng.normal(0, 0.01, 8)
    study = _study(base - 0.02 + rng.normal(0, 0.004, 8), base, look=3)
    assert looks.taken(study) == 3
    assert [len(v.select("ablation")) for v in looks.views(study)] == [6, 10, 16]
    [verdict] = claims.judge(study, _augmentation_claim())
    h = verdict.units[0].hypothesis
    assert h.plan == (3, 5, 8) and len(h.looks) == 3
    assert verdict.verdict == "supported" and h.rejected_at in (1, 2, 3)
    assert f"decided at look {h.rejected_at}" in verdict.spending and "3 looks" in verdict.spending
    [row] = evidence.evidence_rows([verdict])  # the boundary it crossed, stricter than 0.05 before the cap
    level = float(row["boundary"].split()[2])
    assert row["boundary"].endswith(f"at look {h.rejected_at} of 3") and h.looks[h.rejected_at - 1].p <= level
    assert level < 0.05 if h.rejected_at < 3 else level <= 0.05


def test_a_first_look_keeps_the_later_looks_planned_and_spends_less_than_a_fixed_test():
    rng = np.random.default_rng(1)
    base = 0.60 + rng.normal(0, 0.01, 3)
    study = _study(base - 0.004 + rng.normal(0, 0.004, 3), base, look=1)
    [verdict] = claims.judge(study, _augmentation_claim())
    h = verdict.units[0].hypothesis
    assert h.plan == (3, 5, 8) and len(h.looks) == 1
    # the first look's boundary is far stricter than a one-shot test's 0.05
    assert h.level == 0.05 and h.looks[0].p > 1e-4 and not h.rejected_at


def test_an_interval_inside_the_smallest_effect_of_interest_is_negligible():
    rng = np.random.default_rng(2)
    base = 0.60 + rng.normal(0, 0.01, 8)
    study = _study(base + rng.normal(0, 0.002, 8), base, look=3)
    [verdict] = claims.judge(study, _augmentation_claim(margin=0.01))
    assert verdict.verdict == "negligible", verdict.evidence
    assert "smallest effect of interest" in verdict.evidence and "negligible at look" in verdict.spending
    # the same data with a margin the interval does not fit in stays inconclusive
    [strict] = claims.judge(study, _augmentation_claim(margin=0.0005))
    assert strict.verdict == "inconclusive"


def test_a_one_look_study_is_judged_as_before_with_its_spending():
    runs, results = [], {}
    ablations(runs, results, "baseline", [0.60, 0.62, 0.61])
    ablations(runs, results, "no_augment", [0.55, 0.571, 0.559])
    runs.append(rec("unrelated", "cifar10", seed=0))
    results["unrelated"] = trained(0.5, wall_time_s=600.0)
    [verdict] = claims.judge(common.Study(runs, results), _augmentation_claim())
    assert verdict.verdict == "supported" and verdict.units[0].p_adjusted < 0.05
    # it read the six ablation runs (10 s each), not the unrelated one
    assert verdict.spending == "1 look; 3 seeds, paired; 1.0 min; decided at look 1"
    [row] = evidence.evidence_rows([verdict])
    assert row["boundary"] == "p <= 0.05 at look 1 of 1"  # one test, one look: the level itself


def test_a_claim_whose_tests_stopped_apart_says_how_many_stopped_each_way():
    def unit(stop):
        return SimpleNamespace(hypothesis=SimpleNamespace(stop=stop, looks=[None]),
                               test=SimpleNamespace(sample="2 seeds, paired"))
    [declared] = _augmentation_claim()
    mixed = claims.Verdict(declared, "inconclusive", [], [unit("futile at look 1"), unit(""), unit("")], 158.0)
    assert mixed.spending == "1 look; 2 seeds, paired; 158 min; futile at look 1 (1 of 3 tests), open (2 of 3 tests)"
    alike = claims.Verdict(declared, "inconclusive", [], [unit(""), unit("")], 5.6)
    assert alike.spending == "1 look; 2 seeds, paired; 5.6 min; open"


def test_each_look_adds_new_seeds_and_larger_samples_and_nothing_else(monkeypatch, capsys):

    import run_report_pipeline as pipeline
    from study import looks as study_looks

    profile = {**pipeline.PROFILES["smoke"], "looks": {"seeds": [2, 3], "images": [16, 48]}}
    monkeypatch.setitem(pipeline.PROFILES, "smoke", profile)
    args = pipeline.parse_args(["--profile", "smoke", "--look", "2"])
    first, second = study_looks.matrix(args, profile, 1), study_looks.matrix(args, profile, 2)
    added = study_looks.added(args, profile, 2)
    before = {(r.name, r.command) for r in first}
    assert not any((r.name, r.command) in before for r in added)
    assert {"ablation_cifar10_baseline_s2", "corruptions_cifar10_no_augment_s2"} <= {r.name for r in added}
    assert not any(r.name.endswith("_s2") for r in first)
    scored = {r.name: r.command for r in second}
    assert "--corruption-samples 48" in scored["eval_cifar10_circle"]
    assert "--autoattack-samples 24" in scored["eval_cifar10_circle"]
    assert "--max-batches 3" in scored["eval_cifar10_circle"]
    assert {r.name for r in first} <= set(scored)  # a look extends the one before
    joined = {r.name: r.fields["look"] for r in second}
    assert joined["ablation_cifar10_baseline_s2"] == 2 and joined["ablation_cifar10_baseline_s1"] == 1
    assert joined["eval_cifar10_circle"] == 1  # a larger sample, the same evaluation
    with pytest.raises(SystemExit, match="looks 1..2"):
        pipeline.parse_args(["--profile", "smoke", "--look", "3"])
    with pytest.raises(SystemExit, match="each look"):
        pipeline.parse_args(["--profile", "smoke", "--seeds", "0,1"])


def test_an_earlier_look_sees_each_growing_sample_cut_and_the_whole_split_whole():
    study = _study([0.6] * 8, [0.6] * 8, look=3)
    order = np.random.default_rng(0).permutation(10000)
    study.per_image["eval_x"] = {name: (order, np.ones(10000, bool)) for name in
                                 ("clean", "pgd", "autoattack", "corruption_fog_s5")}
    first = study.at_look(1)
    assert {name: len(index) for name, (index, _) in first.per_image["eval_x"].items()} == {
        "clean": 10000, "pgd": 1024, "autoattack": 512, "corruption_fog_s5": 1024}
    assert (first.per_image["eval_x"]["pgd"][0] == order[:1024]).all()  # a prefix of the same order
    assert len(study.at_look(2).per_image["eval_x"]["corruption_fog_s5"][0]) == 4096
    # what a per-image test plans: its growing sample, capped at the split; a whole split is fixed
    mcnemar = SimpleNamespace(sample="1,024 images, paired", grows=("attacks", 2007))
    assert looks.planned(study, mcnemar) == [1024, 2007, 2007]
    assert looks.planned(study, SimpleNamespace(sample="2,007 images, paired", grows=None)) is None
    assert looks.planned(study, SimpleNamespace(sample="5 seeds, paired", grows=None)) == [3, 5, 8]


def test_a_later_look_extends_only_what_the_open_claims_read(monkeypatch):
    import run_report_pipeline as pipeline
    from study import looks as study_looks

    profile = {**pipeline.PROFILES["smoke"], "looks": {"seeds": [2, 3], "images": [16, 48],
                                                        "from_look": {"cifar10_fgsm_at": 2}}}
    monkeypatch.setitem(pipeline.PROFILES, "smoke", profile)
    args = pipeline.parse_args(["--profile", "smoke", "--look", "2"])
    judged = []

    def open_claims(look, runs):  # the claims still open read the baseline and the circle model
        judged.append((look, {r.name for r in runs}))
        return [claims.Open("a", {"ablation_cifar10_baseline_s0", "ablation_cifar10_baseline_s1"}, 0.5),
                claims.Open("b", {"eval_cifar10_circle"}, math.nan)]
    runs = {r.name: r for r in study_looks.pruned(args, profile, 2, open_claims)}
    first = {r.name: r for r in study_looks.matrix(args, profile, 1)}
    full = {r.name: r for r in study_looks.matrix(args, profile, 2)}
    assert judged == [(1, set(first))]  # look 2 is planned from look 1 as it ran
    assert "ablation_cifar10_baseline_s2" in runs and "ablation_cifar10_dropout_s2" not in runs
    assert runs["eval_cifar10_circle"].command == full["eval_cifar10_circle"].command  # re-run larger
    assert runs["eval_cifar10_pgd_at"].command == first["eval_cifar10_pgd_at"].command  # as it ran
    assert "cifar10_fgsm_at" in runs and "cifar10_fgsm_at" not in first  # the schedule adds it now
    for run in runs.values():  # and everything a kept run reads is there
        assert all(need in runs for need in run.needs_all), run.name


def test_a_budget_leaves_out_the_runs_past_it_and_says_so(tmp_path):
    import run_contract
    import run_report_pipeline as pipeline
    from study import estimate, plan

    args = pipeline.parse_args(["--profile", "smoke", "--checkpoints", str(tmp_path)])
    runs = plan.build_matrix(args, pipeline.PROFILES["smoke"])
    rates = {stem: 1e-3 for stem in {r.stem for r in runs}}
    runnable = [r for r in runs if r.status != Outcome.NOT_RUN]
    allowed = sum(r.cost * 1e-3 for r in runnable[:10]) / 60 + 1e-9  # the first ten fit
    planned, cut = estimate.cut_to_budget(runs, rates, allowed)
    assert cut == [r.name for r in runnable[10:]] and planned <= allowed
    assert all(r.status == Outcome.NOT_RUN and r.reason.startswith(f"{run_contract.BUDGET}: --budget")
               for r in runnable[10:])
    # runs that took twice their estimate here make the rest cost twice theirs: half as many fit
    again = plan.build_matrix(args, pipeline.PROFILES["smoke"])
    took = {r.name: 2 * r.cost * 1e-3 for r in runnable[:2]}
    factor, done = estimate.calibration(again, rates, took)
    assert done == 2 and factor == pytest.approx(2.0)
    assert estimate.calibration(again, rates, {}) == (1.0, 0)
    _, halved = estimate.cut_to_budget(again, rates, allowed, factor)
    assert len(halved) > len(cut)
    # a claim whose tests were still open when the budget ended says so
    runs_, results = [], {}
    ablations(runs_, results, "baseline", [0.60, 0.62, 0.61])
    ablations(runs_, results, "no_augment", [0.590, 0.600, 0.609])  # promising, not yet decided
    runs_.append(rec("cut", "ablation", status="not run", reason="budget: --budget 5 min would be passed",
                     variant="dropout", seed=0))
    profile = {"looks": {"seeds": [3, 5], "images": [1024, 4096]}, "look": 1,
               "look_samples": [{"attacks": 1024, "autoattack": 500, "corruptions": 1000},
                                {"attacks": 4096, "autoattack": 1000, "corruptions": 4000}]}
    for r in runs_:
        r.fields["look"] = 1
    [verdict] = claims.judge(common.Study(runs_, results, "test", profile), _augmentation_claim())
    assert verdict.spending.endswith("; budget") and verdict.verdict == "inconclusive", verdict.spending


def test_a_budget_extends_the_claims_most_likely_decided_per_minute_and_a_look_is_planned_once(tmp_path, capsys):
    """`select` ranks the open claims by chance per second of what they add (a run two claims
    share counted once), leaves out what the budget does not reach, and puts the claims with
    nothing tested and the joining models last; `chooser` records the plan, a resumed look
    runs what it recorded, and a claim left out stays out of every later look."""
    from study import looks as study_looks

    seconds = {"a1": 60, "a2": 60, "b1": 30, "c1": 10, "d1": 10, "j1": 50, "j2": 50}
    open_ = [claims.Open("A", set(), 0.9), claims.Open("B", set(), 0.5), claims.Open("C", set(), 0.2),
             claims.Open("D", set(), math.nan)]
    extend = {"A": frozenset({"a1", "a2"}), "B": frozenset({"b1"}), "C": frozenset({"a1", "c1"}),
              "D": frozenset({"d1"})}
    joins = [frozenset({"j1", "j2"})]
    chosen, rows = study_looks.select(open_, extend, joins, seconds, left=150)
    assert chosen == [extend["B"], extend["A"]]  # 0.5 / 30 s first, then 0.9 / 120 s; C's 10 s more do not fit
    assert [(r.get("claim"), r["minutes"], r["extended"]) for r in rows] == [
        ("B", 0.5, True), ("A", 2.0, True), ("C", round(10 / 60, 1), False), ("D", round(10 / 60, 1), False),
        (None, round(100 / 60, 1), False)]
    assert rows[0]["runs"] == ["b1"] and rows[-1]["runs"] == ["j1", "j2"]
    everything, _ = study_looks.select(open_, extend, joins, dict.fromkeys(seconds), left=math.inf)  # no budget: all
    assert set().union(*everything) == set(seconds)

    full = {n: SimpleNamespace(name=n, command=f"{n} --larger") for n in seconds}
    before = {n: SimpleNamespace(name=n, command=n) for n in seconds}
    planning = lambda: (open_, extend, joins)  # noqa: E731
    # look 1 took 30 s where 60 s were estimated (a1's); 180 - 30 s left, as above
    choose = study_looks.chooser(str(tmp_path), budget=3.0, estimate=lambda run: seconds[run.name],
                                 took=lambda runs: {"a1": 30.0}, unfinished=lambda runs: [], persist=True)
    assert choose(2, planning, full, before) == chosen
    plan = study_looks.recorded(str(tmp_path), 2)
    said = capsys.readouterr().out  # the plan, one line per claim and joining block
    assert f"2 of 4 open claims extended, 0 of 1 joining models, within --budget 3 min (0 spent) ({tmp_path}" in said
    assert re.search(r"extended +chance 0\.50 +0\.5 min +B\n", said) and re.search(r"left out +chance +- .*D\n", said)
    assert re.search(r"left out +chance +- +1\.7 min +joining: j1, j2\n", said)
    # --plan sees the same plan, and is told it was not recorded
    study_looks.chooser(str(tmp_path / "preview"), budget=3.0, estimate=lambda run: seconds[run.name],
                        took=lambda runs: {"a1": 30.0})(2, planning, full, before)
    assert "(not recorded: only a run of the look records its plan)" in capsys.readouterr().out
    assert not os.path.exists(study_looks.plan_path(str(tmp_path / "preview"), 2))
    # runs that took half their estimate make the look's costs half theirs (everything fits
    # now), while the plan keeps the estimate unscaled: the check that look 1 cost what --plan said
    halved = study_looks.chooser(str(tmp_path / "halved"), budget=3.0, estimate=lambda run: seconds[run.name],
                                 took=lambda runs: {"a1": 30.0}, persist=True, factor=0.5)
    assert set(halved(2, planning, full, before)) == {*extend.values(), *joins}
    scaled = study_looks.recorded(str(tmp_path / "halved"), 2)
    assert (scaled["spent_minutes"], scaled["estimated_minutes"], scaled["calibration"]) == (0.5, 1.0, 0.5)
    assert [r["minutes"] for r in scaled["rows"]][:2] == [0.2, 1.0]  # B's 30 s and A's 120 s, halved
    # a plain pipeline run (no --look) now resumes look 2; a fresh folder starts at look 1
    import run_report_pipeline as pipeline
    assert pipeline.parse_args(["--profile", "quick", "--checkpoints", str(tmp_path)]).look == 2
    assert pipeline.parse_args(["--profile", "quick", "--checkpoints", str(tmp_path / "new")]).look == 1
    assert plan["budget_minutes"] == 3.0 and [r["extended"] for r in plan["rows"]] == [True, True, False, False, False]
    assert (plan["spent_minutes"], plan["estimated_minutes"], plan["budget_why"]) == (0.5, 1.0, "--budget")
    # resumed with other costs (a budget now mostly spent) and look 1 judged otherwise (its
    # records replaced by look 2's runs): the look runs what it planned, judging nothing
    again = study_looks.chooser(str(tmp_path), budget=2.5, estimate=lambda run: 1e6, took=lambda runs: {"a1": 140.0})
    assert set(again(2, lambda: pytest.fail("a planned look re-judged"), full, before)) == set(chosen)
    # look 3 never extends what look 2 left out, whatever it could afford
    later = study_looks.chooser(str(tmp_path), budget=None, estimate=None)
    assert set(later(3, planning, full, before)) == {extend["A"], extend["B"], *joins}
    # after a planned look: what its plan counted before it, plus the runs it ran (their
    # records replaced those of the runs they re-ran), not the look before's runs again
    runs_ = {n: SimpleNamespace(name=n) for n in ("x", "y", "z")}
    previous = {"rows": [{"runs": ["x"], "extended": True}, {"runs": ["y"], "extended": False}],
                "spent_minutes": 2.0, "estimated_minutes": 1.0}
    assert study_looks._spent(previous, runs_, lambda rs: {r.name: 30.0 for r in rs}, lambda r: 60.0) == (150.0, 120.0)
    assert study_looks._spent(None, runs_, lambda rs: {r.name: 30.0 for r in rs}, None) == (90.0, None)
    # a look is never planned on part of the look before
    early = study_looks.chooser(str(tmp_path / "early"), unfinished=lambda runs: ["x_s2"], persist=True)
    with pytest.raises(SystemExit, match="look 1's runs have not finished \\(x_s2\\): run look 1"):
        early(2, planning, full, before)
    assert not os.path.exists(study_looks.plan_path(str(tmp_path / "early"), 2))


def test_a_claim_a_look_left_out_says_budget_and_the_report_shows_how_each_look_was_planned():
    runs, results = [], {}
    ablations(runs, results, "baseline", [0.60, 0.62, 0.61])
    ablations(runs, results, "no_augment", [0.590, 0.600, 0.609])  # promising, not yet decided
    profile = {"looks": {"seeds": [3, 8], "images": [1024, 10000]}, "look": 2,
               "look_samples": [{"attacks": 1024, "autoattack": 500, "corruptions": 1000},
                                {"attacks": 10000, "autoattack": 2000, "corruptions": 5000}]}
    for r in runs:
        r.fields["look"] = 1
    [claim] = _augmentation_claim()
    plans = [{"look": 2, "budget_minutes": 10, "spent_minutes": 9.5, "estimated_minutes": 8.0,
              "rows": [{"claim": claim.statement, "chance": 0.4, "runs": ["abl_baseline_3"], "minutes": 3.3,
                        "extended": False},
                       {"claim": "another", "chance": 0.9, "runs": ["abl_baseline_0"], "minutes": 0.1,
                        "extended": True},
                       {"joining": ["cifar10_circle", "eval_cifar10_circle"], "chance": None,
                        "runs": ["cifar10_circle", "eval_cifar10_circle"], "minutes": 20.0, "extended": False}]}]
    study = common.Study(runs, results, "test", profile, plans=plans)
    [verdict] = claims.judge(study, [claim])
    assert verdict.spending.endswith("; budget") and verdict.verdict == "inconclusive", verdict.spending
    md = "\n".join(looks.plans_section(study, [verdict]))
    # its runs' recorded time (abl_baseline_0's 10 s; the left-out claim's run counts nothing)
    # on top of what look 1 had spent
    assert abs(looks.look_minutes(study, plans[0]) - 10 / 60) < 1e-9
    assert ("Look 2 (budget 10 min (--budget); 10 min of run time by look 1 (1.19x the 8 min `--plan` estimated for "
            "those runs here then), its own runs 0 min so far, 10 min in all)") in md
    assert "left out (budget)" in md and "| extended |" in md
    assert "| claim 1: " + claim.statement in md and "40%" in md and "`eval_cifar10_circle`" in md
    assert looks.plans_section(common.Study(runs, results, "test", profile), [verdict]) == []
    # a plan whose costs were scaled by what look 1 took against its estimate says so
    scaled = common.Study(runs, results, "test", profile, plans=[{**plans[0], "calibration": 1.19}])
    assert ("(1.19x the 8 min `--plan` estimated for those runs here then; the minutes below are "
            "estimates scaled by it)") in "\n".join(looks.plans_section(scaled, [verdict]))
    # a claim whose models the plan left out is "not run", and says it was the budget
    [circle] = [c for c in claims.CLAIMS if c.statement.startswith("Circle Loss")]
    left = {"claim": circle.statement, "chance": None, "runs": ["cifar10_circle"], "minutes": 20.0, "extended": False}
    unreached = common.Study(runs, results, "test", profile, plans=[{**plans[0], "rows": [*plans[0]["rows"], left]}])
    [none] = claims.judge(unreached, [circle])
    assert none.verdict == Outcome.NOT_RUN and none.spending == "left out by the budget"
    assert none.evidence.startswith("not run: needs both models evaluated: the budget left it out")
    [elsewhere] = claims.judge(study, [circle])  # missing for another reason: says only that
    assert elsewhere.evidence == "not run: needs both models evaluated" and elsewhere.spending == "-"
    assert "Over all 2 looks" in looks.run_time_text(study) and "**10 min**" in looks.run_time_text(study)
    assert looks.run_time_text(common.Study(runs, results, "test", profile)) == ""


def test_a_claim_tested_across_seeds_gets_new_seeds_and_one_tested_on_images_larger_samples():
    from study import looks as study_looks

    def run(name, needs=()):
        return SimpleNamespace(name=name, needs_all=list(needs))
    before = {n: run(n) for n in ("eval_x", "eval_x_s1", "x", "x_s1")}
    full = [run("x"), run("x_s1"), run("x_s2"), run("eval_x", ["x"]), run("eval_x_s1", ["x_s1"]),
            run("eval_x_s2", ["x_s2"])]
    reads = {"eval_x", "eval_x_s1"}
    assert study_looks.blocks(full, reads, before, seeds_only=True) == {"eval_x_s2", "x_s2"}
    assert study_looks.blocks(full, reads, before) == {"eval_x", "eval_x_s1", "eval_x_s2", "x", "x_s1", "x_s2"}


def test_the_calibration_prices_each_run_done_by_the_command_it_ran(monkeypatch):
    """A run done at look 1 whose look-2 command differs (a larger sample) and that look 2 did
    not re-run is priced by look 1's command: by look 2's it reads as faster than it was."""
    import run_report_pipeline as pipeline

    def run(name, cost):
        return SimpleNamespace(name=name, cost=cost, stem="imagenet", status=Outcome.PENDING)
    matrices = {1: [run("a", 1000.0), run("b", 1000.0)], 2: [run("a", 4000.0), run("b", 1000.0)]}
    took = {1: {"a": 2.0, "b": 2.0}, 2: {"b": 2.0}}  # "a" stayed as it ran at look 1
    monkeypatch.setattr(pipeline.looks, "matrix", lambda args, profile, k: matrices[k])
    monkeypatch.setattr(pipeline, "_took", lambda runs: took[1 if runs is matrices[1] else 2])
    args = SimpleNamespace(look=2)
    # both ran 2 s against an estimate of 1 s each
    assert pipeline._calibration(args, {}, {"imagenet": 1e-3}) == pytest.approx(2.0)
    assert pipeline._calibration(args, {}, None) == 1.0  # no rates measured: nothing to scale
