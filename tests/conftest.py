import contextlib
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the real datasets under $DATA_ROOT")
    config.addinivalue_line("markers", "slow: 30 s or more at one thread on a 2-core CPU, or needs "
                                       "the smoke profile's run; -m 'not slow' leaves them out")
    _pin_this_worker()


def _pin_this_worker():
    """Under pytest-xdist (`-n N`), give each worker its own share of the cores, before any
    test runs: its torch threads, and every process it starts, stay there. Workers then never
    oversubscribe a core (two OpenMP pools spin-waiting on the same cores slow each other
    10-20x), and each test runs at a known thread count: the share's size."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores, index = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw"))
    # more workers than cores (-n 4 on 2): one core each, shared round robin
    share = cores[index::workers] if workers <= len(cores) else [cores[index % len(cores)]]
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))  # processes the tests start
    torch.set_num_threads(len(share))


# The order files go out to the workers (`--dist loadfile` hands a worker the next file, in
# the order collected, as it starts the last test of its current one; pytest.ini turns off
# xdist's reordering by test count). Longest first (`--durations=0`, 2-core AVX2 EPYC,
# 2026-12-03: pipeline ~250 s, train ~177, full profile ~101, distributed ~50, report ~28,
# eval ~64, datasets ~23): a long file handed out late keeps one worker busy while the other
# has finished. test_eval.py, left at its place in the alphabet, ended the run alone: 399 s
# against 379 s on the other worker, where this order gives 390 and 389 (a simulation from
# those durations). It comes after distributed and report because it needs the shared
# digits model (~55 s to train, at the start of test_train.py): under `-m "not slow"` the
# pipeline and full-profile files take seconds, and those two keep the other worker busy
# until the model is there. The rest as collected.
FIRST_FILES = ("test_pipeline.py", "test_train.py", "test_full_profile.py",
               "test_distributed.py", "test_report.py", "test_eval.py", "test_datasets.py")


def pytest_collection_modifyitems(items):
    """FIRST_FILES first; within a file, the tests that need the shared trained model
    (`digits_model`) first: the worker that trains it then does so at its start, before any
    other worker can reach a test that would wait for it. Tests of the smoke run are slow."""
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    order = {}  # files as collected
    for item in items:
        order.setdefault(item.path, len(order))
        if "smoke" in item.fixturenames:  # the smoke profile's run: ~3 min on one core
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[item.path],
                                 "digits_model" not in item.fixturenames))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def torch_threads():
    """`with torch_threads(n):` runs a block at n torch threads and restores the count: runs
    whose numbers a test compares must use the same count (it changes the order of sums)."""
    @contextlib.contextmanager
    def at(n):
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    return at


@pytest.fixture(scope="session")
def data_root():
    """The folder with the real .npz datasets, from $DATA_ROOT; tests needing it skip without."""
    root = os.environ.get("DATA_ROOT")
    if not root:
        pytest.skip("DATA_ROOT is not set: real-data tests need e.g. DATA_ROOT=../shared/data")
    if not os.path.isdir(root):
        pytest.skip(f"DATA_ROOT={root} is not a folder")
    return root


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """The README's first run (`train.py --dataset digits --demo`): a small model trained on
    the real (bundled) scikit-learn digits, 40-75 s at one thread by CPU kind. Its own test
    and every test that needs a trained model read this one run. Under pytest-xdist the
    workers share it (each worker is a session of its own): the first that needs it trains
    it in the folder their temporary folders share, while any other waits for it, then
    reads it. Every worker trains at one thread, so whichever trains it, the model is the
    same."""
    import run_contract
    import train
    import utils

    from learning_cases import argv

    if os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.getbasetemp().parent / "digits_run"
    else:
        out = tmp_path_factory.mktemp("digits_run")
    files = run_contract.TrainFiles(str(out))
    with _exclusive(f"{out}.lock"):
        if not os.path.exists(files.final):
            train.main(argv("digits_demo") + ["--out-dir", str(out)])
    final = utils.load_json(files.final)
    return utils.model_from_checkpoint(utils.load_checkpoint(files.best)), final, out


@contextlib.contextmanager
def _exclusive(lock_path):
    """Held by one process at a time (an advisory lock on `lock_path`)."""
    import fcntl

    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
