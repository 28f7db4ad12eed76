import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the real datasets under $DATA_ROOT")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


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
    """A small model trained on the real (bundled) scikit-learn digits: ~15 s on 2 cores."""
    import train
    import utils

    from learning_cases import argv

    out = tmp_path_factory.mktemp("digits_run")
    final = train.main(argv("digits_3_epochs") + ["--out-dir", str(out)])
    ckpt = utils.load_checkpoint(os.path.join(out, "best.pth"))
    return utils.model_from_checkpoint(ckpt), final, out
