"""Processes sharing a machine divide the cores they may use: the pipeline's workers, and the
test suite's own workers under `pytest -n N` (tests/conftest.py)."""

import os

import pytest
import torch

import utils
from study import launchers


def test_parallel_runs_divide_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(utils, "usable_cpus", lambda: 8)  # e.g. a Slurm job's 8 of 64 cores
    assert launchers._threads_per_job(1) == 8
    assert launchers._threads_per_job(2) == 4
    assert launchers._threads_per_job(16) == 1  # never zero threads


def test_usable_cpus_is_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this OS")
    assert utils.usable_cpus() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)


def test_an_xdist_worker_runs_on_its_own_share_of_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if "PYTEST_XDIST_WORKER" not in os.environ or workers < 2 or not hasattr(os, "sched_getaffinity"):
        pytest.skip("runs under pytest -n N (N >= 2)")
    mine = len(os.sched_getaffinity(0))
    assert 1 <= mine <= max(1, (os.cpu_count() or 1) // workers)
    assert torch.get_num_threads() == mine
    assert os.environ["OMP_NUM_THREADS"] == str(mine)  # what the processes it starts get
    assert launchers._threads_per_job(1) == mine
