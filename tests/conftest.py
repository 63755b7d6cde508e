import pytest
import torch

# One thread per test process: a small torch job slows down several-fold when it competes for cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from fairdistill.data import load_dataset

    return load_dataset("digits-fg")


@pytest.fixture(scope="session")
def cpu():
    return torch.device("cpu")
