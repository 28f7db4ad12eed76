"""The README is a map: every file, flag and name it mentions is the one the code uses."""

import os
import re

import eval as evaluate
import run_report_pipeline as pipeline
from study import profiles
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_every_file_and_folder_it_names_exists():
    named = set(re.findall(r"\b([\w/]+\.(?:py|md|txt))\b", README))
    named |= {m for m in re.findall(r"^([\w/]+/)\s", README, re.M)}  # the layout's folders
    named |= set(re.findall(r"\]\(([^)]+)\)", README))  # links
    named -= {"REPORT.md"}  # written by the pipeline, under report/
    assert len(named) > 15
    missing = sorted(n for n in named if not os.path.exists(os.path.join(ROOT, n)))
    assert not missing, missing


def _options(parser):
    return {s for action in parser._actions for s in action.option_strings}


def test_every_flag_it_names_is_a_flag_of_a_script():
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", README))
    known = (_options(train.build_parser()) | _options(evaluate.build_parser())
             | _options(pipeline.build_parser()))
    assert len(flags) > 15
    assert not sorted(flags - known), sorted(flags - known)


def test_the_names_of_the_to_add_table_are_the_codes():
    import attacks
    import datasets
    from reporting import claims

    assert "`attacks.ATTACKS`" in README and isinstance(attacks.ATTACKS["pgd"], attacks.Attack)
    assert "`datasets.DOMAINS`" in README and isinstance(datasets.DOMAINS["usps"], datasets.Domain)
    assert "`ABLATIONS`" in README and "baseline" in profiles.ABLATIONS
    assert "`PROFILES`" in README and set(pipeline.PROFILES) == {"smoke", "quick", "full"}
    assert "`CLAIMS`" in README and all(isinstance(c, claims.Claim) for c in claims.CLAIMS)
    assert "`Comparison`" in README and claims.Comparison
    for profile in pipeline.PROFILES:
        assert re.search(rf"`(--profile )?{profile}`", README), profile
    assert os.path.getsize(os.path.join(ROOT, "README.md")) < 10_000  # a map, not a manual


def test_the_findings_in_the_docs_are_the_committed_reports_word_for_word(tmp_path):
    import csv
    import shutil
    from reporting import evidence

    with open(os.path.join(ROOT, "report", "summary", "claims.csv")) as f:
        rows = list(csv.DictReader(f))
    doc = os.path.join(ROOT, "docs", "pipeline.md")
    with open(doc) as f:
        text = f.read()
    assert evidence.findings_in(text) == evidence.findings_block(rows)
    assert "docs/pipeline.md" in README
    # the pipeline's rewrite: another verdict reaches the block, the rest of the page stays
    copy = tmp_path / "pipeline.md"
    shutil.copyfile(doc, copy)
    changed = [{**rows[0], "verdict": "contradicted", "evidence": "-9.9 points"}] + rows[1:]
    assert evidence.sync_findings(str(copy), changed) and not evidence.sync_findings(str(copy), changed)
    new = copy.read_text()
    assert evidence.findings_in(new) == evidence.findings_block(changed)
    assert new.split(evidence.FINDINGS_START)[0] == text.split(evidence.FINDINGS_START)[0]
    assert new.split(evidence.FINDINGS_END)[1] == text.split(evidence.FINDINGS_END)[1]


def test_ci_runs_the_readmes_test_command():
    command = re.search(r"^DATA_ROOT=\S+ (python -m pytest [^#\n]*?)\s*(#|$)", README, re.M)
    assert command, "the README's setup block names the test command"
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert re.search(rf"^{re.escape(command.group(1))}$", ci, re.M), command.group(1)
