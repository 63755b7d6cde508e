import pytest
import torch

# One thread per test process: a small torch job slows down several-fold when it competes for cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from fairdistill.data import load_dataset

    return load_dataset("digits-fg")


@pytest.fixture(scope="session")
def digits16():
    """digits-fg upsampled to 16 px: IDC's factor-2 tiles of 8 px (tiles of the 8-px original would be 4 px)."""
    from fairdistill.data import load_dataset

    return load_dataset("digits-fg", image_size=16)


@pytest.fixture(scope="session")
def cpu():
    return torch.device("cpu")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Decoded-data caches of the tests go to a temporary folder, never the user's ~/.cache."""
    import os

    old = os.environ.get("FAIRDISTILL_CACHE")
    os.environ["FAIRDISTILL_CACHE"] = str(tmp_path_factory.mktemp("fairdistill-cache"))
    yield
    if old is None:
        os.environ.pop("FAIRDISTILL_CACHE", None)
    else:
        os.environ["FAIRDISTILL_CACHE"] = old
