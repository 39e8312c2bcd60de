"""`ndsnn report --model module.path:factory` and `ndsnn_triton.profiler.report(model, ...)`: the
cost report of any model (a plain torch CNN, a small spiking model from the library's layers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import ndsnn_triton.profiler
from ndsnn_triton.cli import main
from ndsnn_triton.models import build_model

FACTORY = "tests.test_report_model:tiny_cnn"
METHODS = ("dense", "static", "set", "rigl", "ndsnn", "lth")
FAST = ["--sparsities", "0.9", "0.99", "--epochs", "10", "--rewind-epoch", "2"]
FAST_OPTIONS = {"sparsities": (0.9,), "epochs": 10, "rewind_epoch": 2}
ROOT = Path(__file__).resolve().parents[1]


class TinyCNN(nn.Module):
    """conv 3→w (3×3, pad 1) → ReLU → maxpool 2 → conv w→2w (3×3, stride 2, pad 1) → ReLU →
    global average pool → linear 2w→classes."""

    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.head = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.head(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def tiny_cnn(width: int = 4, num_classes: int = 10) -> TinyCNN:
    """The factory `ndsnn report --model tests.test_report_model:tiny_cnn` calls."""
    return TinyCNN(width, num_classes)


def not_a_model() -> list[int]:
    """A factory that returns something else (tests/test_bad_inputs.py)."""
    return [1, 2, 3]


def no_weight_layer() -> nn.Module:
    """A model without a single weight layer (tests/test_bad_inputs.py)."""
    return nn.Sequential(nn.Flatten(), nn.ReLU())


def tiny_cnn_macs(width: int, size: int = 32, classes: int = 10) -> list[int]:
    """MACs per sample of each layer, by hand: Cout·Cin·kh·kw·Hout·Wout, in·out."""
    pooled = size // 2
    out2 = (pooled + 2 - 3) // 2 + 1
    return [
        width * 3 * 9 * size * size,
        2 * width * width * 9 * out2 * out2,
        2 * width * classes,
    ]


def _png_text(path: Path, key: str | None = None) -> str:
    """A PNG's text chunks (the plot's title and caption), or the one named ``key``."""
    with Image.open(path) as image:
        info = {k: v for k, v in image.info.items() if isinstance(v, str)}
    return info[key] if key else " ".join(info.values())


def test_hand_count_of_the_tiny_cnn():
    assert tiny_cnn_macs(8) == [221_184, 73_728, 160]


def test_cli_reports_a_plain_torch_cnn_from_its_factory(tmp_path, capsys):
    out = tmp_path / "report"
    kwargs = ["--model", FACTORY, "--model-kwargs", '{"width": 8}', "--out", str(out)]
    assert main(["report", *kwargs, *FAST]) == 0
    printed = capsys.readouterr().out
    assert "No published NDSNN/LTH claim exists for tiny_cnn" in printed
    report = json.loads((out / "report.json").read_text())
    layers = report["layers"]["tiny_cnn"]
    assert [layer["name"] for layer in layers] == ["conv1", "conv2", "fc"]
    assert [layer["macs"] for layer in layers] == tiny_cnn_macs(8)
    assert [layer["timesteps"] for layer in layers] == [1, 1, 1]
    assert [layer["input_grad"] for layer in layers] == [False, True, True]
    assert not any(layer["spike_input"] for layer in layers)
    assert all(layer["maskable"] for layer in layers)  # made maskable for the sparse methods
    costs = {(r["method"], r["sparsity"], r["convention"]): r for r in report["method_costs"]}
    for convention in ("snn", "rigl"):
        assert costs[("dense", 0.0, convention)]["x_dense"] == pytest.approx(1.0)
        for method in METHODS[1:]:
            for sparsity in (0.9, 0.99):
                assert costs[(method, sparsity, convention)]["flops"] > 0
    assert {r["paper_ratio"] for r in report["claim_check"]} == {None}
    assert not any(r["within_tolerance"] for r in report["claim_check"])
    assert report["paper"] == {
        "ratios": {},
        "tolerance_points": 3.0,
        "no_published_claim": ["tiny_cnn"],
    }
    assert "vgg_below_resnet_settings" not in report["verdict"]
    assert report["models"]["tiny_cnn"]["factory"] == FACTORY
    assert report["models"]["tiny_cnn"]["kwargs"] == {"width": 8}
    a = report["assumptions"]
    assert a["T"] == 1 and a["input_shape"] == "[B, 3, 32, 32]" and "image_size" not in a
    md = (out / "report.md").read_text()
    assert "## Model: tiny_cnn" in md and "| `conv2` | conv | 16×8×3×3 | 1,152 | 73,728 |" in md
    assert "No published NDSNN/LTH claim exists for tiny_cnn" in md
    for method in METHODS:
        assert f"| tiny_cnn | {method} |" in md
    for name in ("VGG", "ResNet", "vgg16", "resnet19", "31.35", "40.89"):
        assert name not in md, name
    figures = report["figures"]
    assert figures == [
        "cumulative_cost.png",
        "density.png",
        "layers_tiny_cnn.png",
        "ratio_vs_sparsity.png",
    ]
    for figure in figures:
        text = _png_text(out / figure)
        assert "VGG" not in text and "ResNet" not in text, figure
    assert _png_text(out / "layers_tiny_cnn.png", "Title").startswith("tiny_cnn: ")
    shown = json.loads((out / "layers_tiny_cnn.json").read_text())["display_names"]
    assert shown == ["conv1", "conv2", "fc"]
    assert (out / "claim_check.csv").exists() and (out / "method_costs.csv").exists()


def test_python_api_reports_a_small_spiking_model_and_leaves_it_alone(tmp_path):
    model = build_model("small", T=3, image_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = ndsnn_triton.profiler.report(
        model, out=tmp_path, input_shape=(1, 8, 8), **FAST_OPTIONS
    )
    assert json.loads(json.dumps(report)) == json.loads((tmp_path / "report.json").read_text())
    layers = report["layers"]["SmallSpikingCNN"]
    # the direct-coding stem runs once on the static image, every later layer T = 3 times
    assert [layer["timesteps"] for layer in layers] == [1, 3, 3, 3]
    assert [layer["spike_input"] for layer in layers] == [False, True, True, True]
    assert report["assumptions"]["T"] == 3
    assert report["models"]["SmallSpikingCNN"]["converted_to_masked"] is False
    assert {r["method"] for r in report["method_costs"]} == set(METHODS)
    assert (tmp_path / "layers_SmallSpikingCNN.png").exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_time_first_input_runs_every_layer_t_times(tmp_path):
    """A model fed [T, B, C, H, W]: ``time_steps`` builds that input; the stem then runs T times."""
    model = build_model("small", T=2, image_size=8)
    report = ndsnn_triton.profiler.report_model(
        model, tmp_path, name="seq", input_shape="1,8,8", time_steps=2, **FAST_OPTIONS
    )
    assert [layer["timesteps"] for layer in report["layers"]["seq"]] == [2, 2, 2, 2]
    assert report["assumptions"]["input_shape"] == "[T=2, B, 1, 8, 8]"


def test_python_api_rejects_unknown_options_before_writing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['epoch'\]"):
        ndsnn_triton.profiler.report(tiny_cnn(), out=out, epoch=3)
    with pytest.raises(ValueError, match="T is the model's own"):
        ndsnn_triton.profiler.report(tiny_cnn(), out=out, T=3)
    assert not out.exists()


def test_console_script_imports_a_factory_from_the_working_directory(tmp_path):
    """`ndsnn report --model mymod:factory` run where mymod.py lies (a console script does not
    put the working directory on sys.path)."""
    script = shutil.which("ndsnn", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the ndsnn console script is not installed")
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n\n"
        "def mlp(hidden=16):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 2))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = ["report", "--model", "mynets:mlp", "--input-shape", "3,2,2", "--out", "r", *FAST]
    done = subprocess.run(
        [script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [layer["macs"] for layer in report["layers"]["mlp"]] == [12 * 16, 16 * 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model-kwargs", "{}"], "--model-kwargs applies only with --model"),
        (["--time-first", "4"], "--time-first applies only with --model"),
        (["--model", FACTORY, "--T", "4"], "with --model, --T"),
        (["--model", FACTORY, "--classes", "100"], "with --model, --classes"),
        (["--model", FACTORY, "--models", "vgg16"], "not allowed with argument"),
    ],
)
def test_options_of_the_other_kind_of_model_are_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as err:
        main(["report", "--out", str(out), *extra])
    assert message in str(err.value.code) + capsys.readouterr().err
    assert not out.exists()
