"""Suite-wide settings shared by every test module."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors that gain nothing from a second thread, and on a busy 2-core
    machine two OpenMP threads spin-wait for each other (measured 10-30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
