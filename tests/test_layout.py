"""The house's import rules: every import in the project's code (function-level ones
included) is one its line in the README's "Who imports whom" block allows."""

import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("models", "study", "reporting", "benchmarks", "corruptions")


def allowed():
    """{module or package: the project modules it may import}, from the README's block."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Who imports whom.*?```\n(.*?)```", readme, re.S).group(1)
    rules = {}
    for line in block.strip().splitlines():
        left, right = (side.strip() for side in line.split("->"))
        deps = set() if right == "nothing of the project" else set(right.split(", "))
        for name in left.split(", "):
            rules[name] = deps
    return rules


def project_modules():
    """{owner (a top-level module, or its package): [source files]}."""
    owners = {os.path.splitext(f)[0]: [os.path.join(ROOT, f)]
              for f in os.listdir(ROOT) if f.endswith(".py")}
    for package in PACKAGES:
        folder = os.path.join(ROOT, package)
        owners[package] = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py")]
    return owners


def imports(path, names):
    """The project modules `path` imports anywhere in it, itself excluded."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & names


def test_every_import_is_one_the_house_allows():
    rules, owners = allowed(), project_modules()
    assert set(rules) == set(owners), "every module has a line in the README's block, and only they"
    names = set(owners)
    broken = {}
    for owner, files in owners.items():
        for path in files:
            extra = imports(path, names) - rules[owner] - {owner}
            if extra:
                broken[os.path.relpath(path, ROOT)] = sorted(extra)
    assert not broken, broken


def test_the_rules_catch_a_forbidden_import(tmp_path):
    bad = tmp_path / "metrics.py"
    bad.write_text("def f():\n    import train  # the bottom layer reaching up\n")
    assert imports(str(bad), set(project_modules())) - allowed()["metrics"] == {"train"}


def test_nothing_imports_the_pipeline_or_eval():
    rules = allowed()
    assert not any({"run_report_pipeline", "eval"} & deps for deps in rules.values())
    assert "eval" not in rules["train"] and "train" not in rules["eval"]


def test_train_starts_without_scikit_learn_metrics():
    # sklearn.metrics costs ~1.7 s of every process's start (train.py, each pipeline worker);
    # only evaluation's per-class report needs it, so it is imported there
    code = "import sys, train; print('sklearn.metrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
