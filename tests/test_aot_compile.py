"""Every Triton kernel, compiled for real NVIDIA targets (sm_80, sm_90, sm_100 where the
installed Triton supports it) with every configuration its launcher chooses, on this CPU.

The compiler runs in a subprocess without ``TRITON_INTERPRET`` (the suite sets it on CPU, and the
interpreter replaces ``@triton.jit`` functions). Configurations come from the launchers' own plan
functions (:data:`ndsnn_triton.kernels.launch.PLANS`) over the VGG-16 / ResNet-19 launch sites at
B = 64, T = 5 and odd shapes (:mod:`ndsnn_triton.kernels.aot`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ndsnn_triton.kernels.aot import resource_table
from ndsnn_triton.kernels.launch import PLANS

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "bench" / "results" / "kernel_resources-sm_90.json"
REQUIRED_TARGETS = {"sm_80", "sm_90"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """Run the AOT compiler once for the module: all targets the installed Triton supports."""
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out.parent / "triton-cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence 3.9's notice; plans pin fusion
    done = subprocess.run(
        [sys.executable, "-m", "ndsnn_triton.kernels.aot", "--jobs", "2", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if not out.exists():
        pytest.fail(f"the AOT compiler did not run:\n{done.stdout}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def _label(r: dict) -> str:
    return f"{r['kernel']} on {r['target']} with {r['config']}"


def test_required_targets_are_compiled(compiled):
    assert set(compiled["targets"]) >= REQUIRED_TARGETS, compiled["targets"]


def test_every_specialization_compiles(compiled):
    failed = [f"{_label(r)}: {r['error']}" for r in compiled["results"] if not r["ok"]]
    assert not failed, "kernels that do not compile:\n" + "\n".join(failed[:20])


def test_every_kernel_and_target_is_covered(compiled):
    seen = {(r["kernel"], r["target"]) for r in compiled["results"]}
    missing = {(k, t) for k in PLANS for t in compiled["targets"]} - seen
    assert not missing, f"plans never compiled: {sorted(missing)}"


def test_every_block_size_the_launchers_choose_is_compiled(compiled):
    """The odd shapes reach the small blocks the plans pick for small launches."""
    blocks: dict[str, set] = {}
    for r in compiled["results"]:
        c = r["config"]["constexprs"]
        blocks.setdefault(r["kernel"], set()).add(c.get("BLOCK_P", c.get("BLOCK")))
    assert all(b > 0 and b & (b - 1) == 0 for sizes in blocks.values() for b in sizes), blocks
    assert blocks["conv_fwd"] == {16, 32, 64, 128}
    assert blocks["conv_dgrad"] == {16, 32, 64, 128}
    assert blocks["conv_wgrad"] == {64}  # events per tile: fixed
    assert blocks["conv_wgrad_positions"] == {16, 32, 64}
    assert blocks["spike_events"] >= {16, 128}
    assert blocks["lif_fwd"] == blocks["lif_bwd"] == {64, 128, 256, 512}


def test_no_spills(compiled):
    spilling = [
        f"{_label(r)}: {r['spill_stores']} B stored, {r['spill_loads']} B loaded"
        for r in compiled["results"]
        if r["ok"] and (r["spill_stores"] or r["spill_loads"])
    ]
    assert not spilling, "kernels that spill registers:\n" + "\n".join(spilling[:20])


def test_every_config_fits_at_least_one_block_per_sm(compiled):
    low = [
        f"{_label(r)}: {r['blocks_per_sm']}"
        for r in compiled["results"]
        if r["ok"] and r["blocks_per_sm"] < 1
    ]
    assert not low, "configs that cannot place one block on an SM:\n" + "\n".join(low)


def test_weight_gradient_reaches_half_occupancy(compiled):
    """The weight gradient's tile was sized for >= 50 % occupancy without spills."""
    wgrad = [r for r in compiled["results"] if r["kernel"] == "conv_wgrad" and r["ok"]]
    assert wgrad
    assert min(r["occupancy"] for r in wgrad) >= 0.5, max(r["registers"] for r in wgrad)


def test_lif_arithmetic_is_ieee_and_unfused(compiled):
    """The LIF kernels divide with IEEE rounding and never contract into FMAs, on every target:
    the numerics do not depend on the GPU or on Triton's fusion default."""
    for r in compiled["results"]:
        if not r["ok"] or not r["kernel"].startswith("lif"):
            continue
        ops = r["ptx_ops"]
        assert ops["div.full.f32"] == ops["div.approx.f32"] == ops["rcp.approx.f32"] == 0, _label(r)
        assert ops["fma.rn.f32"] == 0, _label(r)
        needs_division = r["kernel"] == "lif_bwd" or r["config"]["constexprs"]["DECAY_INPUT"]
        needs_division |= not r["config"]["constexprs"].get("RESET0", True)
        assert (ops["div.rn.f32"] > 0) == needs_division, _label(r)


def _resources(rows) -> dict:
    """Registers, spill stores and occupancy per (kernel, configuration)."""
    return {
        (r["kernel"], json.dumps(r["config"], sort_keys=True)): (
            r["registers"],
            r["spill_stores"],
            r["occupancy"],
        )
        for r in rows
    }


def test_committed_resource_report_is_current(compiled):
    """bench/results/kernel_resources-sm_90.json (and the README table made from it) matches
    what this Triton compiles today."""
    report = json.loads(RESOURCES.read_text())
    if report["triton"] != compiled["triton"]:
        pytest.skip(f"report made with Triton {report['triton']}, this is {compiled['triton']}")
    fresh = _resources(r for r in compiled["results"] if r["target"] == "sm_90" and r["ok"])
    recorded = _resources(report["specializations"])
    assert recorded == fresh, "regenerate: python -m ndsnn_triton.kernels.aot --resources ..."
    readme = (ROOT / "README.md").read_text()
    assert resource_table(report) in readme, "README's kernel resource table is out of date"
