"""The progress display: tqdm bar on a terminal, plain throttled lines elsewhere."""

from __future__ import annotations

import io

import pytest

from ndsnn_triton.cli import main
from ndsnn_triton.train import load_dataset
from ndsnn_triton.train.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(total: int = 10, start: int = 0, interval: float = 10.0):
    stream, clock = io.StringIO(), FakeClock()
    return Progress(total, start, stream=stream, interval=interval, clock=clock), stream, clock


def test_plain_lines_without_carriage_returns():
    progress, stream, clock = plain(interval=0.0)
    clock.now += 7.0
    progress.update(7, "train epoch 1/2")
    out = stream.getvalue()
    assert "\r" not in out and "\033" not in out
    assert out.endswith("\n") and out.count("\n") == 1
    assert "7/10" in out and "70.0%" in out and "train epoch 1/2" in out
    assert "1.00it/s" in out and "elapsed 00:07" in out and "ETA 00:03" in out


def test_plain_lines_are_throttled_and_the_last_one_is_written():
    progress, stream, clock = plain(interval=10.0)
    clock.now += 1.0
    progress.update(1, "train")  # the first update is written at once
    clock.now += 1.0
    progress.update(2, "train")  # within the interval: nothing
    assert stream.getvalue().count("\n") == 1
    clock.now += 10.0
    progress.update(3, "train")
    clock.now += 1.0
    progress.update(10, "train")  # completion is written regardless of the interval
    progress.close()  # nothing new to report
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/10", "3/10", "10/10"]
    assert "100.0%" in lines[-1]


def test_close_reports_unwritten_steps():
    progress, stream, clock = plain()
    with progress:
        progress.update(1, "train")
        clock.now += 1.0
        progress.update(4, "train")  # throttled; written by close (e.g. stopped early)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "4/10" in lines[-1]
    progress.close()  # idempotent
    assert len(stream.getvalue().splitlines()) == 2


def test_resumed_run_counts_from_start():
    progress, stream, clock = plain(start=5, interval=0.0)
    clock.now += 1.0
    progress.update(6, "train epoch 2/2")
    out = stream.getvalue()
    assert "6/10" in out and "60.0%" in out
    assert "1.00it/s" in out  # the rate counts only the steps run now, not the 5 resumed


def test_terminal_gets_a_tqdm_bar():
    stream = Terminal()
    with Progress(10, 5, stream=stream) as progress:
        assert "5/10" in stream.getvalue()  # resumed: the bar starts at 5
        for done in range(6, 11):
            progress.update(done, "train epoch 1/1")
    out = stream.getvalue()
    assert "\r" in out and "|" in out and "10/10" in out and "step/s" in out
    assert "train epoch 1/1" in out and "100%" in out


def test_disabled_writes_nothing():
    for stream in (io.StringIO(), Terminal()):
        with Progress(10, enabled=False, stream=stream, interval=0.0) as progress:
            progress.update(3, "train")
            progress.update(10, "train")
        assert stream.getvalue() == ""


@pytest.fixture(scope="module")
def digits():
    """Loads scikit-learn (which sets KMP_* variables on import) before the per-test state check."""
    return load_dataset("digits")


def test_cli_train_progress_and_no_progress(digits, tmp_path, capsys):
    args = ["train", "--method", "set", "--sparsity", "0.8", "--epochs", "1", "--T", "2"]
    args += ["--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "step 2/" in err and "train epoch 1/1" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "it/s" not in capsys.readouterr().err
