"""The autouse fixture of the root conftest.py fails a test that leaks process-wide state."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import ndsnn_triton
from ndsnn_triton.backend import aten_reference, aten_reference_enabled
from ndsnn_triton.testing import capture_state, changed_settings, num_threads, restore_state

ROOT = Path(__file__).resolve().parents[1]


def test_snapshot_names_and_restores_each_leaked_setting():
    before = capture_state()
    other = 1 if torch.get_num_threads() != 1 else 2
    try:
        torch.set_num_threads(other)
        torch.set_default_dtype(torch.float64)
        ndsnn_triton.set_backend("torch")
        ndsnn_triton.set_spike_check(False)
        os.environ["NDSNN_LEAK_PROBE"] = "1"
        changed = changed_settings(before)
    finally:
        restore_state(before)
    text = "\n".join(changed)
    for name in (
        "torch thread count",
        "torch default dtype",
        "ndsnn backend",
        "ndsnn binary-spike check",
        "NDSNN_LEAK_PROBE",
    ):
        assert name in text, text
    assert len(changed) == 5, changed
    assert changed_settings(before) == []
    assert torch.get_default_dtype() == torch.float32 and "NDSNN_LEAK_PROBE" not in os.environ


def test_scoped_helpers_leave_nothing_behind():
    before = capture_state()
    with num_threads(1), ndsnn_triton.use_spike_check(False), aten_reference():
        assert torch.get_num_threads() == 1
        assert not ndsnn_triton.spike_check_enabled() and aten_reference_enabled()
    assert changed_settings(before) == []


def test_fixture_fails_the_test_that_leaks_the_thread_count(tmp_path):
    """An inner pytest run with the project's conftest: the leaking test errors, naming the
    setting; the next test sees the original thread count again."""
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leak.py").write_text(
        textwrap.dedent(
            """
            import torch

            START = torch.get_num_threads()

            def test_a_leaks():
                torch.set_num_threads(1 if START != 1 else 2)

            def test_b_sees_the_original_count():
                assert torch.get_num_threads() == START
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leak.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 passed, 1 error" in out, out
    assert "test_leak.py::test_a_leaks left process-wide state changed" in out, out
    assert "torch thread count (torch.set_num_threads)" in out, out
