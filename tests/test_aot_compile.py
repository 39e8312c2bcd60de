"""Every Triton kernel, compiled for real NVIDIA targets (sm_80 and sm_90) with every
configuration its launcher chooses, on this CPU.

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

from ndsnn_triton.kernels import spike_conv as sc
from ndsnn_triton.kernels.aot import resource_table
from ndsnn_triton.kernels.launch import PLANS

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "bench" / "results" / "kernel_resources-sm_90.json"
REQUIRED_TARGETS = {"sm_80", "sm_90"}
#: what the suite compiles (sm_100 too with ``python -m ndsnn_triton.kernels.aot``: the suite's
#: time goes to the two generations the library is measured on)
TARGETS = ["80", "90"]
AOT_COMMAND = [sys.executable, "-m", "ndsnn_triton.kernels.aot", "--jobs", "2"]
#: most spilled bytes per thread a kernel with a register cap may have
CAPPED_SPILL_BYTES = 32


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """Run the AOT compiler once for the module: all targets the installed Triton supports."""
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out.parent / "triton-cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence 3.9's notice; plans pin fusion
    done = subprocess.run(
        [*AOT_COMMAND, "--out", str(out), "--targets", *TARGETS],
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


def _tile(kernel: str, c: dict) -> int:
    """Lanes of a specialisation's main tile (positions × samples, neurons, or inputs)."""
    if kernel in ("conv_fwd", "conv_dgrad"):
        return c["S"] * c["Q"]
    if kernel == "conv_wgrad":
        return c["TS"] * c["TQ"]
    if kernel in ("lif_fwd", "spike_prep"):
        return c["MAPS"] * c["HWB"]
    return c.get("BLOCK", c.get("RB", 1))


def test_every_tile_the_launchers_choose_is_compiled(compiled):
    """The odd shapes reach the small tiles the plans pick for small launches; every tile is a
    power of two within the plan's bound."""
    tiles: dict[str, set] = {}
    for r in compiled["results"]:
        tiles.setdefault(r["kernel"], set()).add(_tile(r["kernel"], r["config"]["constexprs"]))
    assert all(t > 0 and t & (t - 1) == 0 for sizes in tiles.values() for t in sizes), tiles
    for kernel in ("conv_fwd", "conv_dgrad"):
        assert min(tiles[kernel]) <= 2 and {32, sc.MAX_POSITIONS} <= tiles[kernel], tiles[kernel]
        assert max(tiles[kernel]) == sc.MAX_POSITIONS
    assert min(tiles["conv_wgrad"]) == 1 and max(tiles["conv_wgrad"]) == sc.WGRAD_TILE
    assert tiles["lif_fwd"] == {64, 128, 256, 512, 1024}
    assert tiles["lif_bwd"] == {64, 128, 256, 512}
    kept = {
        (r["kernel"], r["config"]["constexprs"].get("BLOCK_K", r["config"]["constexprs"].get("BLOCK_E")))
        for r in compiled["results"]
        if r["kernel"] in ("conv_fwd", "conv_dgrad", "conv_wgrad")
    }  # fmt: skip
    assert kept == {
        *((k, b) for k in ("conv_fwd", "conv_dgrad") for b in (sc.MIN_BLOCK_K, sc.MAX_BLOCK_K)),
        *(("conv_wgrad", b) for b in (sc.MIN_BLOCK_E, sc.MAX_BLOCK_E)),
    }


def test_no_spills_but_where_a_plan_caps_registers(compiled):
    """No kernel spills, except a capped one (the plan traded a few spilled bytes for
    occupancy), which spills at most :data:`CAPPED_SPILL_BYTES` per thread."""
    spilling = [
        f"{_label(r)}: {r['spill_stores']} B stored, {r['spill_loads']} B loaded"
        for r in compiled["results"]
        if r["ok"]
        and max(r["spill_stores"], r["spill_loads"])
        > (CAPPED_SPILL_BYTES if r["config"].get("maxnreg") else 0)
    ]
    assert not spilling, "kernels that spill registers:\n" + "\n".join(spilling[:20])


def test_every_config_fits_at_least_one_block_per_sm(compiled):
    low = [
        f"{_label(r)}: {r['blocks_per_sm']}"
        for r in compiled["results"]
        if r["ok"] and r["blocks_per_sm"] < 1
    ]
    assert not low, "configs that cannot place one block on an SM:\n" + "\n".join(low)


def test_conv_kernels_keep_the_occupancy_the_time_model_assumes(compiled):
    """The time model holds ``Calibration.occupancy`` of an SM's warps resident for an uncapped
    conv kernel and what the cap leaves room for otherwise: the compiled code must allow it."""
    from ndsnn_triton.kernels.perf_model import CALIBRATION

    for r in compiled["results"]:
        if not r["ok"] or r["kernel"] not in ("conv_fwd", "conv_dgrad", "conv_wgrad"):
            continue
        cap = r["config"].get("maxnreg")
        warps = r["threads_per_block"] // 32
        if cap is None:
            assert r["registers"] <= 64 and r["occupancy"] >= CALIBRATION.occupancy, _label(r)
        else:
            assert r["registers"] <= cap, _label(r)
            assert r["blocks_per_sm"] >= min(32, 65536 // (cap * warps * 32)), _label(r)
    wgrad = [r for r in compiled["results"] if r["kernel"] == "conv_wgrad" and r["ok"]]
    assert min(r["occupancy"] for r in wgrad) >= 0.5


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
