"""The ndsnn command: version, the one-step smoke run, argument errors."""

import json
import subprocess
import sys

import pytest

from ndsnn_triton import __version__
from ndsnn_triton.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_step_reports_density_and_spike_rates(capsys):
    assert (
        main(
            [
                "step",
                "--model",
                "resnet19",
                "--batch",
                "2",
                "--T",
                "2",
                "--density",
                "0.2",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["prunable_weights"] == 12_619_968
    assert result["density"] == pytest.approx(0.2, abs=1e-3)
    layers = result["layers"]
    assert len(layers) == 22
    assert layers[0]["name"] == "encoder.conv" and layers[0]["input_rate"] == 1.0  # analog image
    for layer in layers:
        assert layer["density"] == pytest.approx(0.2, abs=0.01)
        assert 0.0 <= layer["input_rate"] <= 1.0
    assert any(0 < layer["input_rate"] < 1 for layer in layers if layer["spike_input"])


def test_step_table_output(capsys):
    assert main(["step", "--model", "vgg16", "--batch", "1", "--T", "1"]) == 0
    out = capsys.readouterr().out
    assert "features.38" in out and "14,715,584 prunable weights" in out


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["step", "--density", "1.5"])
    assert exit_info.value.code == 2
    assert "(0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["step", "--model", "alexnet"])


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "ndsnn_triton.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_roofline_writes_the_model_table(tmp_path, capsys):
    out = tmp_path / "docs" / "roofline.md"
    predictions = tmp_path / "predictions.json"
    argv = ["roofline", "--out", str(out), "--gpu", "H100", "--predictions", str(predictions)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert "model, not measurement" in text and "H100 SXM" in text and "H200 SXM" not in text
    doc = json.loads(predictions.read_text())
    assert doc["gpu"]["name"] == "H100 SXM" and doc["rows"]
    assert main(["roofline", "--dtype", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "model, not measurement" in printed and "float32" in printed
