"""The one-shot GPU check (``python -m bench.gpu_check``): its help, its per-case timeout, and
its CPU dry run (collect every case, time nothing; ``--dry-run`` alone also compiles every kernel
for sm_90, which tests/test_aot_compile.py does for the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_help_documents_the_one_shot_run():
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for word in ("--dry-run", "--budget", "--case-timeout", "tests", "kernels", "steps", "report"):
        assert word in done.stdout


def test_step_budgets_fit_nine_minutes():
    assert sum(gpu_check.BUDGETS.values()) <= 9 * 60 - 20


def test_a_hung_case_is_named_skipped_and_the_rest_still_runs():
    hang = "tests/data/hang_cases.py::test_hangs"
    quick = "tests/data/hang_cases.py::test_quick"
    result = gpu_check.run_cases([hang, quick], budget=120, case_timeout=3, extra=[])
    assert result.timed_out_cases == [hang]
    assert not result.ok
    assert result.seconds < 60  # not the 60 s the hung case would take


def test_case_lists_name_the_trimmed_grids():
    kernels = gpu_check.kernel_cases()
    assert any("vgg16.conv2-d0.01-measured-bf16" in k for k in kernels)
    assert any("resnet19.b0.conv1-d0.01-measured-bf16" in k for k in kernels)
    assert len(kernels) == 126 + 3  # the default kernel grid and the LIF shapes
    steps = gpu_check.step_cases()
    assert len(steps) == 2 * 2 * 2 * 2  # models × configs × densities × kinds


def test_without_cuda_the_check_refuses_clearly(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "missing_prerequisites", lambda: [])
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform != "linux", reason="the bundled ptxas is a Linux binary")
def test_dry_run_collects_every_case():
    """Collection only: every kernel specialisation is compiled by tests/test_aot_compile.py."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--no-compile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "collect: ok" in done.stdout and "compile sm_90" not in done.stdout
