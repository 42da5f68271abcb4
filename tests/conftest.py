"""pytest configuration: seeding, and the gpu and triton markers."""

import pytest
import torch

from fastconv import backends


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    triton_runs = has_cuda or backends._triton_interpret()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_triton = pytest.mark.skip(
        reason="Triton tests run under TRITON_INTERPRET=1 in their own process: make test does that"
    )
    for item in items:
        if not has_cuda and item.get_closest_marker("gpu"):
            item.add_marker(skip_gpu)
        if not triton_runs and item.get_closest_marker("triton"):
            item.add_marker(skip_triton)
