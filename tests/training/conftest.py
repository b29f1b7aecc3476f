"""Fixtures shared by the training tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """The tiny models are dominated by per-op overhead: one torch thread is several times faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
