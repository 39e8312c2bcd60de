"""README.md stays true: its code runs, and CI runs exactly its test command line."""

import re
from pathlib import Path

import pytest

import ndsnn_triton

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quick_start_has_two_command_lines_and_ci_runs_the_test_line():
    lines = [b.strip() for b in _blocks("bash")[:2]]
    assert lines[0].startswith('pip install -e ".[dev]" && ndsnn ')
    assert lines[1] == 'pip install -e ".[dev]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[1] in ci, ".ci/run must run the README's test command line verbatim"
    assert any(line.strip() == "pip install torch==2.13.0" for line in ci)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_blocks_run(index):
    block = _blocks("python")[index]
    if "spikingjelly" in block:
        pytest.importorskip("spikingjelly.activation_based")
    # The examples show process-wide switches (set_backend): scope them to this test.
    with (
        ndsnn_triton.use_backend(ndsnn_triton.get_backend()),
        ndsnn_triton.use_spike_check(ndsnn_triton.spike_check_enabled()),
    ):
        exec(compile(block, f"README.md python block {index}", "exec"), {})
