"""Which code the report's runs came from: each commit that produced runs, and which files of
the code a run's numbers come from differ between it and the report's own commit."""

import subprocess

import utils

# The code a run's numbers come from (figures and records included).
RUN_CODE = ("train.py", "eval.py", "corruption_eval.py", "models", "corruptions", "datasets.py",
            "losses.py", "attacks.py", "metrics.py", "utils.py", "plots.py", "run_contract.py",
            "requirements.txt")


def changed_since(commit, paths=RUN_CODE, root=None):
    """{file: (lines added, lines removed)} for the files under `paths` that differ between
    `commit` and HEAD, or None where git cannot tell (no repository, an unknown commit, or one
    recorded as -dirty, whose uncommitted changes nobody kept)."""
    if commit.endswith("-dirty"):
        return None
    try:
        out = subprocess.run(["git", "diff", "--numstat", commit, "HEAD", "--", *paths],
                             cwd=root or utils.PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rows = (line.split("\t") for line in out.stdout.splitlines())
    return {name: (added, removed) for added, removed, name in rows}


def _differs(commit):
    changed = changed_since(commit)
    if changed is None:
        return "not checkable" + (": uncommitted changes" if commit.endswith("-dirty") else "")
    if not changed:
        return "run code as at this report's commit"
    return "run code differs in " + ", ".join(f"`{name}` (+{a} -{r} lines)"
                                               for name, (a, r) in sorted(changed.items()))


def provenance_lines(env, commits):
    """The Provenance section's first lines: the report's commit, then each commit that
    produced runs ({commit: number of runs}) with what `git diff` says of its run code."""
    return ["## Provenance", "",
            f"- git commit of this report: `{env['git_commit']}`; commits that produced the runs "
            f"(and what `git diff` says of the code runs come from, {', '.join(RUN_CODE)}, "
            "against the report's commit): "
            + "; ".join(f"`{c}` ({n} runs; {_differs(c)})" for c, n in sorted(commits.items()))]
