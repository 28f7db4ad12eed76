"""The run contract: file names and outcomes spelled in one module, one owner per run."""

import ast
import glob
import json
import os
import socket
import subprocess
import sys

import pytest

import run_contract
import train
from learning_cases import TINY
from run_contract import Outcome

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILE_NAMES = (run_contract.CONFIG, run_contract.BEST, run_contract.LAST, run_contract.FINAL,
              run_contract.DIVERGED, run_contract.LOCK, run_contract.PIPELINE_LOCK,
              run_contract.HISTORY, run_contract.HISTORY + ".json", run_contract.HISTORY + ".csv",
              run_contract.EVAL_SUFFIX, run_contract.EVAL_SUFFIX.lstrip("."))


def _code_files():
    """The project's Python code that reads or writes runs (tests aside)."""
    paths = [p for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
             if not any(part in p for part in (os.sep + "tests" + os.sep, os.sep + ".venv",
                                                "site-packages"))]
    return [p for p in paths if os.path.basename(p) != "run_contract.py"]


def _strings(tree):
    """Every string constant in the code, docstrings aside (they may name files in prose)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_run_file_names_are_spelled_only_in_the_contract():
    found = []
    for path in _code_files():
        tree = ast.parse(open(path).read())
        for node in _strings(tree):
            if any(node.value == name or node.value.endswith(("/" + name, os.sep + name))
                   for name in FILE_NAMES):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "run file names outside run_contract.py:\n" + "\n".join(found)


def test_outcomes_are_compared_only_through_the_enum():
    words = {o.value for o in Outcome}
    found = []
    for path in _code_files():
        for node in ast.walk(ast.parse(open(path).read())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            items = [e for o in operands for e in (o.elts if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o])]
            if any(isinstance(e, ast.Constant) and e.value in words for e in items):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not found, "outcome strings compared outside run_contract.Outcome:\n" + "\n".join(found)


def test_the_accuracy_record_is_one_shape():
    entry = run_contract.accuracy("test_accuracy", 3, 4)
    assert set(entry) == {"test_accuracy", "test_accuracy_n", "test_accuracy_ci95"}
    assert entry["test_accuracy"] == 0.75 and entry["test_accuracy_n"] == 4
    low, high = entry["test_accuracy_ci95"]
    assert 0 < low < 0.75 < high < 1
    assert json.loads(json.dumps(Outcome.NOT_RUN)) == "not run"  # records hold plain words


def _tiny(out):
    return [*TINY, "--epochs", "1", "--out-dir", str(out), "--keep-weights", "none", "--seed", "0"]


def test_a_second_writer_refuses_at_once_and_a_dead_owner_never_blocks(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / run_contract.LOCK
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(),
                                    "command": "train.py --out-dir run"}))
        with pytest.raises(run_contract.Busy, match=f"process {owner.pid} on {socket.gethostname()} "
                                                    r"\(train.py --out-dir run\)"):
            train.main(_tiny(out))
        assert json.loads(lock.read_text())["pid"] == owner.pid  # left to its owner
        assert not (out / run_contract.CONFIG).exists()  # nothing of the run was touched
    finally:
        owner.kill()
        owner.wait()
    # the owner was killed: its lock is taken over, the run goes ahead, and the lock goes with it
    final = train.main(_tiny(out))
    assert final["epochs"] == 1 and "was left by process" in capsys.readouterr().out
    assert not lock.exists() and (out / run_contract.FINAL).exists()


def test_an_owner_on_another_host_is_named_with_how_to_clear_it(tmp_path):
    path = tmp_path / run_contract.LOCK
    path.write_text(json.dumps({"pid": 1, "host": "node-17", "command": "train.py"}))
    with pytest.raises(run_contract.Busy, match=f"node-17.*delete {path}"):
        with run_contract.Owner(str(path), "run folder x"):
            pass
    with run_contract.Owner(str(tmp_path / "free.lock"), "run folder y") as held:
        assert json.loads(open(held.path).read())["pid"] == os.getpid()
    assert not (tmp_path / "free.lock").exists()
