"""Shared pytest setup for tests/ and bench/.

* Without CUDA, Triton runs in its interpreter (``TRITON_INTERPRET=1``, set before anything
  imports Triton), and cases marked ``gpu`` are skipped.
* ``NDSNN_CASE_TIMEOUT=<seconds>`` kills a test (and its process, with tracebacks) that runs
  longer: the one-shot GPU check's guard against a hung kernel.
* Every test starts on a fixed seed, and must leave process-wide state as it found it: the
  autouse fixture snapshots torch's and the library's settings and the environment before each
  test, restores them after it, and fails the test that changed them (see ``ndsnn_triton.testing``).
"""

import faulthandler
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Imported after the environment is set: it registers the ndsnn ops.
from ndsnn_triton.testing import capture_state, changed_settings, restore_state


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


#: seconds after which a hung test kills its pytest process with every thread's traceback
#: (``python -m bench.gpu_check`` sets it, so a hung GPU kernel cannot stall the whole check);
#: the tracebacks go to ``NDSNN_CASE_TIMEOUT_LOG`` (pytest captures stderr at the fd level)
CASE_TIMEOUT = float(os.environ.get("NDSNN_CASE_TIMEOUT", "0") or 0)


@pytest.fixture(autouse=True)
def _case_timeout(request):
    """With ``NDSNN_CASE_TIMEOUT`` set: dump tracebacks and exit if a test runs past it."""
    if CASE_TIMEOUT <= 0:
        yield
        return
    log_path = os.environ.get("NDSNN_CASE_TIMEOUT_LOG")
    with open(log_path, "a") if log_path else open(os.devnull, "w") as log:
        log.write(f"{request.node.nodeid}\n")
        log.flush()
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True, file=log)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _process_state_is_left_as_found(request):
    """Seed, then fail (after restoring it) a test that leaves process-wide state changed."""
    before = capture_state()
    torch.manual_seed(0)
    yield
    changed = changed_settings(before)
    restore_state(before)
    if changed:
        pytest.fail(
            f"{request.node.nodeid} left process-wide state changed (restored now): "
            + "; ".join(changed)
            + ". Change it inside a context manager (ndsnn_triton.testing.num_threads, "
            "ndsnn_triton.use_backend, ndsnn_triton.use_spike_check, monkeypatch.setenv, ...).",
            pytrace=False,
        )


@pytest.fixture
def no_tf32():
    """IEEE fp32 for the test: TF32 off for cuDNN convolutions and CUDA matmuls, restored after.

    (cuDNN fp32 convolutions use TF32 by default; tolerances of 1e-5 need it off.)"""
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(matmul_precision)
