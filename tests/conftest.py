"""Test setup: Triton runs in its interpreter when there is no GPU (set before any import of it)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Imported after the environment is set: it registers the ndsnn ops.
import ndsnn_triton


@pytest.fixture(autouse=True)
def _torch_backend_and_seed():
    """Each test starts on the default backend with a fixed seed."""
    previous = ndsnn_triton.get_backend()
    torch.manual_seed(0)
    yield
    ndsnn_triton.set_backend(previous)
