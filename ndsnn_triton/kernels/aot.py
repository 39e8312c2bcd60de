"""Ahead-of-time compilation of every Triton kernel for real NVIDIA targets, on any machine.

The Triton interpreter accepts code the real compiler rejects and says nothing about registers,
spills or shared memory. This module compiles, with ``triton.compile`` down to PTX and cubin
(the ``ptxas`` bundled in the ``triton`` wheel; no GPU needed), every specialisation the
launchers choose:

1. :func:`launch_sites` traces VGG-16 and ResNet-19 (forward and backward, CIFAR 32×32) and
   records every ``ndsnn::`` op call with its shapes, scaled to batch B (default 64, T = 5), plus
   a set of odd shapes (channels not a multiple of 16, 1×1 maps, batch 1, stride and dilation 2,
   5×5 and 1×3 kernels, tiny linear layers);
2. :func:`launches` turns each site into the launchers' own plans
   (:data:`ndsnn_triton.kernels.launch.PLANS`) over weight dtypes fp32/bf16/fp16, spike inputs
   float/int8/uint8/bool, bias or not, LIF variants, and densities 1, 0.1 and 0.01;
3. :func:`compile_launch` compiles one distinct specialisation for one target and reads its
   resources (``ptxas -v``: registers, spill stores/loads, shared memory, stack) and the
   occupancy they allow (:func:`occupancy`).

``python -m ndsnn_triton.kernels.aot --targets 80 90 100 --out results.json`` runs it all (in a
process without ``TRITON_INTERPRET``, which replaces ``@triton.jit`` functions by interpreted
ones). :mod:`tests.test_aot_compile` runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ndsnn_triton.kernels import launch as launch_mod
from ndsnn_triton.kernels import spike_prep as _prep  # noqa: F401  (registers its plan)
from ndsnn_triton.kernels.launch import KernelLaunch

#: weight / activation dtypes the kernels take
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: compact spike dtypes a forward or weight-gradient input may come in
SPIKE_DTYPES = (torch.int8, torch.uint8, torch.bool)
DENSITIES = (1.0, 0.1, 0.01)


@dataclass(frozen=True)
class SMLimits:
    """Per-SM limits that bound occupancy (NVIDIA CUDA C Programming Guide, compute capability
    table). ``shared_bytes`` is the largest shared-memory carve-out, ``reserved_shared`` the
    1 KB the driver keeps per block."""

    name: str
    registers: int
    max_threads: int
    max_blocks: int
    shared_bytes: int
    reserved_shared: int = 1024
    register_granularity: int = 256  # registers are allocated per warp in units of 256


SM_LIMITS = {
    80: SMLimits("A100 (sm_80)", 65_536, 2_048, 32, 164 * 1024),
    90: SMLimits("H100/H200 (sm_90)", 65_536, 2_048, 32, 228 * 1024),
    100: SMLimits("B200 (sm_100)", 65_536, 2_048, 32, 228 * 1024),
}


@dataclass(frozen=True)
class LaunchSite:
    """One ``ndsnn::`` op call of a model or odd-shape case, scaled to the benchmark batch."""

    model: str
    layer: str
    op: str  # conv_fwd, conv_dgrad, conv_wgrad, lif_fwd, lif_bwd
    x_shape: tuple[int, ...]  # conv: [N, C, H, W]; lif: [T, ...]
    w_shape: tuple[int, ...] = ()
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    spike_input: bool = True
    has_bias: bool = False


@dataclass
class CompileResult:
    """One specialisation compiled for one target, and what ``ptxas`` reported."""

    kernel: str
    config: dict[str, Any]
    target: str
    ok: bool
    error: str = ""
    seconds: float = 0.0
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack_bytes: int = 0
    shared_static: int = 0
    shared_dynamic: int = 0
    threads_per_block: int = 0
    blocks_per_sm: int = 0
    occupancy: float = 0.0
    limited_by: str = ""
    #: counts of floating-point instructions in the PTX whose precision matters (see PTX_OPS)
    ptx_ops: dict[str, int] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)


#: PTX instructions counted per kernel: IEEE division, approximate division / reciprocal /
#: exponential, and fused multiply-adds (absent when floating-point fusion is off)
PTX_OPS = {
    "div.rn.f32": r"\bdiv\.rn(?:\.ftz)?\.f32",
    "div.full.f32": r"\bdiv\.full(?:\.ftz)?\.f32",
    "div.approx.f32": r"\bdiv\.approx(?:\.ftz)?\.f32",
    "rcp.approx.f32": r"\brcp\.approx(?:\.ftz)?\.f32",
    "ex2.approx.f32": r"\bex2\.approx(?:\.ftz)?\.f32",
    "fma.rn.f32": r"\bfma\.rn(?:\.ftz)?\.f32",
}


def count_ptx_ops(ptx: str) -> dict[str, int]:
    """How often each instruction of :data:`PTX_OPS` occurs in ``ptx``."""
    return {name: len(re.findall(pattern, ptx)) for name, pattern in PTX_OPS.items()}


# ----------------------------------------------------------------------------- launch sites


def _trace_model(name: str, batch: int, T: int) -> list[LaunchSite]:
    """Every ``ndsnn::`` op call of one training step of ``name`` at batch 1, scaled to ``batch``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import ndsnn_triton
    from ndsnn_triton.models import build_model
    from ndsnn_triton.nn import masked_layers

    model = build_model(name, num_classes=10, T=T)
    layer_of_mask = {id(layer.mask): lname for lname, layer in masked_layers(model)}
    calls: list[tuple[str, tuple]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "ndsnn":
                calls.append((func._opname, args))
            return func(*args, **(kwargs or {}))

    x = torch.rand(1, 3, 32, 32)
    with ndsnn_triton.use_backend("torch"), Record():
        out = model(x)
        out.float().sum().backward()
    sites = []
    lif_count = 0
    for op, args in calls:
        site = _site_from_call(name, op, args, layer_of_mask, batch, lif_count)
        if op == "lif_multistep":
            lif_count += 1
        sites.extend(site)
    return sites


def _scale_batch(shape: Iterable[int], batch: int, dim: int) -> tuple[int, ...]:
    out = list(shape)
    out[dim] *= batch
    return tuple(out)


def _site_from_call(
    model: str, op: str, args: tuple, layer_of_mask: dict, batch: int, lif_index: int
) -> list[LaunchSite]:
    if op in ("masked_conv2d", "masked_conv2d_input_grad", "masked_conv2d_weight_grad"):
        mask = args[2]
        layer = layer_of_mask.get(id(mask), "?")
        if op == "masked_conv2d":
            x, w, _, bias, stride, padding, dilation, _groups, spike, _ = args[:10]
            x_shape, kind, has_bias = x.shape, "conv_fwd", bias is not None
        elif op == "masked_conv2d_input_grad":
            _, w, _, input_size, stride, padding, dilation, _groups = args
            x_shape, kind, spike, has_bias = input_size, "conv_dgrad", True, False
        else:
            _, x, _, stride, padding, dilation, _groups, _dense, spike = args[:9]
            has_bias = bool(args[10]) if len(args) > 10 else False
            w = mask
            x_shape, kind = x.shape, "conv_wgrad"
        return [
            LaunchSite(
                model, layer, kind, _scale_batch(x_shape, batch, 0), tuple(w.shape),
                tuple(stride), tuple(padding), tuple(dilation), bool(spike), has_bias,
            )
        ]  # fmt: skip
    if op in ("masked_linear", "masked_linear_input_grad", "masked_linear_weight_grad"):
        mask = args[2]
        layer = layer_of_mask.get(id(mask), "?")
        w_shape = (*mask.shape, 1, 1)
        if op == "masked_linear":
            x, _, _, bias, spike, _ = args[:6]
            return [
                LaunchSite(model, layer, "conv_fwd", _scale_batch((*x.shape, 1, 1), batch, 0),
                           w_shape, spike_input=bool(spike), has_bias=bias is not None)
            ]  # fmt: skip
        if op == "masked_linear_input_grad":
            grad_out = args[0]
            x_shape = (grad_out.shape[0], mask.shape[1], 1, 1)
            return [
                LaunchSite(model, layer, "conv_dgrad", _scale_batch(x_shape, batch, 0), w_shape)
            ]
        _, x, _, _dense, spike = args[:5]
        has_bias = bool(args[6]) if len(args) > 6 else False
        return [
            LaunchSite(model, layer, "conv_wgrad", _scale_batch((*x.shape, 1, 1), batch, 0),
                       w_shape, spike_input=bool(spike), has_bias=has_bias)
        ]  # fmt: skip
    if op == "lif_multistep":
        return [
            LaunchSite(model, f"lif{lif_index}", "lif_fwd", _scale_batch(args[0].shape, batch, 1))
        ]
    if op == "lif_multistep_backward":
        return [LaunchSite(model, "lif", "lif_bwd", _scale_batch(args[2].shape, batch, 1))]
    if op == "spike_prep":
        return [LaunchSite(model, "prep", "spike_prep", _scale_batch(args[0].shape, batch, 0))]
    raise ValueError(f"unexpected ndsnn op {op!r} while tracing {model}")


def odd_sites() -> list[LaunchSite]:
    """Shapes the models do not reach: odd channel counts, 1×1 maps, batch 1, stride/dilation 2,
    non-square and 5×5 kernels, tiny linear layers, and tiny LIF layers."""
    conv = [
        # (x_shape, w_shape, stride, padding, dilation)
        ((1, 3, 5, 7), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((2, 17, 1, 1), (33, 17, 1, 1), (1, 1), (0, 0), (1, 1)),
        ((3, 13, 9, 9), (7, 13, 5, 5), (2, 2), (2, 2), (1, 1)),
        ((4, 6, 11, 8), (10, 6, 1, 3), (1, 2), (0, 1), (1, 1)),
        ((2, 8, 12, 12), (8, 8, 3, 3), (1, 1), (2, 2), (2, 2)),
        ((5, 24, 4, 4), (40, 24, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((1, 10, 1, 1), (3, 10, 1, 1), (1, 1), (0, 0), (1, 1)),
        # mid-sized launches, where the plans pick the middle block sizes
        ((64, 8, 8, 8), (5, 8, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((16, 4, 8, 8), (9, 4, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((16, 9, 8, 8), (4, 9, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((2, 3, 4, 4), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    ]
    sites = []
    for i, (xs, ws, s, p, d) in enumerate(conv):
        for op in ("conv_fwd", "conv_dgrad", "conv_wgrad"):
            for bias in (False, True) if op == "conv_fwd" else (False,):
                sites.append(LaunchSite("odd", f"conv{i}", op, xs, ws, s, p, d, True, bias))
    lif_shapes = [(1, 1), (3, 7, 5), (5, 2, 100), (2, 3, 40, 40), (2, 40_000), (2, 70_000)]
    for i, shape in enumerate(lif_shapes):
        sites.append(LaunchSite("odd", f"lif{i}", "lif_fwd", shape))
        sites.append(LaunchSite("odd", f"lif{i}", "lif_bwd", shape))
    # the fallback pass over spike inputs no LIF described: maps with and without activity
    prep_shapes = [(320, 64, 32, 32), (320, 512, 4, 4), (320, 512, 1, 1), (3, 5, 7, 7), (6, 9)]
    for i, shape in enumerate(prep_shapes):
        sites.append(LaunchSite("odd", f"prep{i}", "spike_prep", shape))
    return sites


def launch_sites(batch: int = 64, T: int = 5, models: Iterable[str] = ("vgg16", "resnet19")):
    """Every launch site of the models (one training step, batch ``batch``) and the odd shapes."""
    sites = []
    for name in models:
        sites.extend(_trace_model(name, batch, T))
    return _dedupe(sites) + odd_sites()


def _dedupe(sites: list[LaunchSite]) -> list[LaunchSite]:
    seen, out = set(), []
    for s in sites:
        key = (s.model, s.layer, s.op, s.x_shape, s.w_shape, s.has_bias)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


# ----------------------------------------------------------------------------- launches


def _cap(w_shape: tuple[int, ...], density: float) -> int:
    return max(1, round(math.prod(w_shape) * density))


#: ``(weight, compute)`` dtypes a layer runs in: the weight's own, and bf16/fp16 reading fp32
#: master weights (mixed precision, as under autocast)
WEIGHT_COMPUTE = (
    (torch.float32, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.float32, torch.float16),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
)
#: what the models' own layers are compiled with: fp32, and bf16 autocast over fp32 master
#: weights; the other combinations differ only in pointer types and are compiled on the odd
#: shapes, which reach every tile the plans choose
MODEL_WEIGHT_COMPUTE = WEIGHT_COMPUTE[:2]
MODEL_FLOAT_DTYPES = (torch.float32, torch.bfloat16)


def launches(site: LaunchSite, densities: Iterable[float] = DENSITIES) -> Iterator[KernelLaunch]:
    """The plans the launchers make for ``site``: on a model's layer, the configurations the
    library runs there (fp32 and bf16 over fp32 weights, the layer's bias, spikes with their
    companion, the models' neuron); on the odd shapes, every dtype combination the launchers
    accept and every other variant (no activity, the other bias setting, a float input, LIF
    numerics, no companion)."""
    plans = launch_mod.PLANS
    geo = (site.x_shape, site.w_shape, site.stride, site.padding, site.dilation)
    caps = [_cap(site.w_shape, d) for d in densities]
    odd = site.model == "odd"
    weight_compute = WEIGHT_COMPUTE if odd else MODEL_WEIGHT_COMPUTE
    float_dtypes = FLOAT_DTYPES if odd else MODEL_FLOAT_DTYPES
    if site.op == "conv_fwd":
        for w_dtype, y_dtype in weight_compute:
            # spikes come with their companion (int8 copy and activity); analog input as is
            x_dtype = torch.int8 if site.spike_input else y_dtype
            for cap in caps:
                yield plans["conv_fwd"](*geo, x_dtype, w_dtype, y_dtype, site.has_bias, True, cap)
        f32 = torch.float32
        for cap in caps if odd else ():  # the other bias setting, no activity, a float input
            yield plans["conv_fwd"](*geo, torch.int8, f32, f32, not site.has_bias, False, cap)
            yield plans["conv_fwd"](*geo, f32, f32, f32, site.has_bias, False, cap)
    elif site.op == "conv_dgrad":
        for w_dtype, dy_dtype in weight_compute:
            for cap in caps:
                yield plans["conv_dgrad"](*geo, dy_dtype, w_dtype, cap)
    elif site.op == "conv_wgrad":
        for w_dtype, dy_dtype in weight_compute:
            # binary spikes are saved as int8; analog input (the stem) as it is
            x_dtype = torch.int8 if site.spike_input else dy_dtype
            for bias in (False, True) if odd else (site.has_bias,):
                for cap in caps:
                    launch = plans["conv_wgrad"](*geo, cap, dy_dtype, x_dtype, bias)
                    yield launch
                    yield plans["wgrad_reduce"](
                        site.w_shape, launch.values["CHUNKS"], w_dtype, bias
                    )
    elif site.op == "lif_fwd":
        # the models' own neuron (LTH-SNN's) in training and in inference on every model
        # shape; no companion and the other numerics on the odd shapes
        natural = math.prod(site.x_shape[3:]) if len(site.x_shape) >= 4 else 1
        for dtype in float_dtypes:
            for int8_spikes in (False, True):
                for map_size in (0, natural) if odd else (natural,):
                    for v0_scalar in (False, True):
                        yield plans["lif_fwd"](
                            site.x_shape, dtype, int8_spikes, True, 0.0, map_size, v0_scalar
                        )
        numerics = ((False, 0.0), (True, None), (False, None), (True, -0.5), (False, -0.5))
        for decay_input, v_reset in numerics if odd else ():
            yield plans["lif_fwd"](
                site.x_shape, torch.float32, False, decay_input, v_reset, natural
            )
    elif site.op == "lif_bwd":
        for dtype in float_dtypes:
            variants = (
                [(v, d, f) for v in (0.0, None) for d in (False, True) for f in ("atan", "sigmoid")]
                if odd
                else [(0.0, True, "atan")]
            )
            for v_reset, detach, surrogate in variants:
                yield plans["lif_bwd"](site.x_shape, dtype, v_reset, detach, surrogate, True)
            yield plans["lif_bwd"](site.x_shape, dtype, 0.0, True, "atan", False)
    elif site.op == "spike_prep":
        for dtype in (*float_dtypes, *SPIKE_DTYPES):
            yield plans["spike_prep"](site.x_shape, dtype, True)
        yield plans["spike_prep"](site.x_shape, torch.float32, False)
    else:
        raise ValueError(f"unknown launch site op {site.op!r}")


def distinct_specializations(
    sites: Iterable[LaunchSite],
) -> dict[tuple, tuple[KernelLaunch, list[str]]]:
    """Distinct compile specialisations over ``sites``: key -> (one launch, the sites using it)."""
    specs: dict[tuple, tuple[KernelLaunch, list[str]]] = {}
    for site in sites:
        label = f"{site.model}.{site.layer}.{site.op}"
        for launch in launches(site):
            key = launch.specialization()
            if key not in specs:
                specs[key] = (launch, [])
            if label not in specs[key][1]:
                specs[key][1].append(label)
    return specs


# ----------------------------------------------------------------------------- compiling


def config_of(launch: KernelLaunch) -> dict[str, Any]:
    """A launch's compile-time configuration, JSON-ready."""
    return {
        "constexprs": dict(launch.constexprs),
        "pointers": {k: str(v).removeprefix("torch.") for k, v in launch.pointers.items()},
        **launch.options(),
    }


def _ptxas_report(ptx: str, arch: int, fp_fusion: bool) -> str:
    """``ptxas -v`` on ``ptx`` for ``sm_<arch>``, with the ptxas Triton itself uses there."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [ptxas, "-v", f"--gpu-name=sm_{arch}{suffix}", str(src), "-o", str(Path(tmp) / "k.o")]
        if not fp_fusion:
            cmd.insert(1, "--fmad=false")
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def parse_ptxas(report: str) -> dict[str, int]:
    """Registers, spill stores/loads (bytes), stack frame and static shared memory from
    ``ptxas -v`` output."""

    def grab(pattern: str) -> int:
        m = re.search(pattern, report)
        return int(m.group(1)) if m else 0

    return {
        "registers": grab(r"Used (\d+) registers"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "stack_bytes": grab(r"(\d+) bytes stack frame"),
        "shared_static": grab(r"(\d+) bytes smem"),
    }


def occupancy(
    registers: int, threads: int, shared: int, limits: SMLimits
) -> tuple[int, float, str]:
    """``(blocks per SM, occupancy, limiting resource)`` for a block of ``threads`` threads using
    ``registers`` per thread and ``shared`` bytes of shared memory (static + dynamic)."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers, 1) * 32 / limits.register_granularity)
    per_warp *= limits.register_granularity
    bounds = {
        "registers": limits.registers // (per_warp * warps),
        "threads": limits.max_threads // threads,
        "blocks": limits.max_blocks,
    }
    if shared:
        bounds["shared memory"] = limits.shared_bytes // (shared + limits.reserved_shared)
    limit = min(bounds, key=lambda k: (bounds[k], k != "threads"))
    blocks = bounds[limit]
    return blocks, blocks * threads / limits.max_threads, limit


def _compile_with_ptxas_log(src: Any, arch: int, options: dict) -> tuple[Any, str | None]:
    """``triton.compile`` for ``sm_<arch>``, and the ``ptxas -v`` report of the very ptxas run
    that built its cubin (Triton prints it when ``knobs.nvidia.dump_ptxas_log`` is on; None
    where this Triton has no such switch)."""
    import contextlib
    import io

    import triton
    from triton.backends.compiler import GPUTarget

    knobs = getattr(triton, "knobs", None)
    nvidia = getattr(knobs, "nvidia", None)
    if nvidia is None or not hasattr(nvidia, "dump_ptxas_log"):
        return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options), None
    out = io.StringIO()
    # a cached kernel would skip ptxas and print nothing: compile afresh (a second ptxas run on
    # the PTX alone can allocate registers differently from Triton's own)
    compilation = getattr(knobs, "compilation", None)
    previous = (nvidia.dump_ptxas_log, getattr(compilation, "always_compile", None))
    nvidia.dump_ptxas_log = True
    if compilation is not None:
        compilation.always_compile = True
    try:
        with contextlib.redirect_stdout(out):
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    finally:
        nvidia.dump_ptxas_log = previous[0]
        if compilation is not None:
            compilation.always_compile = previous[1]
    log = out.getvalue()
    return compiled, log if "registers" in log else None


def compile_launch(launch: KernelLaunch, arch: int) -> CompileResult:
    """Compile one specialisation for ``sm_<arch>`` and read its resources (never raises: a
    failure is returned with the compiler's message)."""
    from triton.compiler import ASTSource

    result = CompileResult(launch.name, config_of(launch), f"sm_{arch}", ok=False)
    start = time.perf_counter()
    try:
        src = ASTSource(
            fn=launch.kernel, signature=launch.signature(), constexprs=dict(launch.constexprs)
        )
        compiled, log = _compile_with_ptxas_log(src, arch, launch.options())
        if log is None:  # a Triton without the log switch: run ptxas -v once more on the PTX
            log = _ptxas_report(compiled.asm["ptx"], arch, launch.enable_fp_fusion)
        report = parse_ptxas(log)
    except Exception as exc:  # a compile error is the result being reported
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
        result.seconds = time.perf_counter() - start
        return result
    result.ok = True
    result.seconds = time.perf_counter() - start
    for k, v in report.items():
        setattr(result, k, v)
    result.shared_dynamic = int(compiled.metadata.shared)
    result.ptx_ops = count_ptx_ops(compiled.asm["ptx"])
    result.threads_per_block = launch.threads_per_block
    limits = SM_LIMITS.get(arch, SM_LIMITS[90])
    shared = max(result.shared_static, result.shared_dynamic)
    result.blocks_per_sm, result.occupancy, result.limited_by = occupancy(
        result.registers, result.threads_per_block, shared, limits
    )
    return result


def _compile_job(job: tuple[tuple, int]) -> CompileResult:
    key, arch = job
    launch, sites = _SPECS[key]
    result = compile_launch(launch, arch)
    result.sites = sites
    return result


_SPECS: dict[tuple, tuple[KernelLaunch, list[str]]] = {}


def compile_all(
    targets: Iterable[int], batch: int = 64, T: int = 5, jobs: int = 1
) -> list[CompileResult]:
    """Compile every distinct specialisation of every launch site for every target."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "ndsnn_triton.kernels.aot: unset TRITON_INTERPRET (the interpreter replaces the "
            "@triton.jit kernels, which cannot be compiled then)"
        )
    _SPECS.clear()
    _SPECS.update(distinct_specializations(launch_sites(batch, T)))
    work = [(key, arch) for arch in targets for key in _SPECS]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            return list(pool.map(_compile_job, work, chunksize=8))
    return [_compile_job(job) for job in work]


def supported_targets() -> list[int]:
    """The compute capabilities the installed Triton can compile for, of 80, 90, 100."""
    from triton.backends.nvidia.compiler import CUDABackend

    out = []
    for arch in (80, 90, 100):
        try:
            from triton.backends.compiler import GPUTarget

            CUDABackend(GPUTarget("cuda", arch, 32))
            out.append(arch)
        except Exception:
            continue
    return out


# ----------------------------------------------------------------------------- resource report


def resource_report(results: list[CompileResult], target: str = "sm_90") -> dict[str, Any]:
    """Per-specialisation resources on ``target`` and a per-kernel summary (the README table)."""
    import triton

    rows = [r for r in results if r.target == target and r.ok]
    kernels: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = kernels.setdefault(
            r.kernel,
            {"specializations": 0, "registers": [], "spills": [], "shared_bytes": [],
             "threads_per_block": set(), "occupancy": [], "lowest": None},
        )  # fmt: skip
        k["specializations"] += 1
        k["registers"].append(r.registers)
        k["spills"].append(r.spill_stores)
        k["shared_bytes"].append(max(r.shared_static, r.shared_dynamic))
        k["threads_per_block"].add(r.threads_per_block)
        k["occupancy"].append(r.occupancy)
        if k["lowest"] is None or r.occupancy < k["lowest"]["occupancy"]:
            k["lowest"] = {
                "occupancy": r.occupancy,
                "limited_by": r.limited_by,
                "threads_per_block": r.threads_per_block,
                "registers": r.registers,
                "config": r.config["constexprs"],
            }
    summary = {
        name: {
            "specializations": k["specializations"],
            "registers_min": min(k["registers"]),
            "registers_max": max(k["registers"]),
            "spill_stores_max": max(k["spills"]),
            "spilling": sum(1 for b in k["spills"] if b),
            "shared_bytes_max": max(k["shared_bytes"]),
            "threads_per_block": sorted(k["threads_per_block"]),
            "occupancy_min": min(k["occupancy"]),
            "occupancy_max": max(k["occupancy"]),
            "lowest_occupancy_config": k["lowest"],
        }
        for name, k in sorted(kernels.items())
    }
    limits = SM_LIMITS[int(target.removeprefix("sm_"))]
    return {
        "target": target,
        "sm_limits": asdict(limits),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "summary": summary,
        "specializations": [
            {k: v for k, v in asdict(r).items() if k not in ("target", "ok", "error", "seconds")}
            for r in rows
        ],
    }


def _spills(kernel: dict[str, Any]) -> str:
    if not kernel["spilling"]:
        return "0 B"
    return f"≤ {kernel['spill_stores_max']} B in {kernel['spilling']}"


def resource_table(report: dict[str, Any]) -> str:
    """The README's markdown table of a :func:`resource_report`."""
    lines = [
        "| kernel | specialisations | registers / thread | spills | shared memory | "
        "threads / block | occupancy | lowest: limited by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, k in report["summary"].items():
        low = k["lowest_occupancy_config"]
        threads = ", ".join(str(t) for t in k["threads_per_block"])
        lines.append(
            f"| `{name}` | {k['specializations']} | {k['registers_min']}–{k['registers_max']} | "
            f"{_spills(k)} | {k['shared_bytes_max']} B | {threads} | "
            f"{k['occupancy_min']:.0%}–{k['occupancy_max']:.0%} | {low['limited_by']} "
            f"({low['threads_per_block']} threads, {low['registers']} registers) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ndsnn_triton.kernels.aot",
        description="Compile every Triton kernel specialisation the launchers choose for real "
        "NVIDIA targets (no GPU needed) and report registers, spills, shared memory, occupancy.",
    )
    parser.add_argument("--targets", type=int, nargs="+", default=None, help="e.g. 80 90 100")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--T", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of all results")
    parser.add_argument(
        "--resources",
        type=Path,
        default=None,
        help="also write the sm_90 resource report (e.g. bench/results/kernel_resources-sm_90.json)",
    )
    args = parser.parse_args(argv)
    targets = args.targets or supported_targets()
    start = time.perf_counter()
    results = compile_all(targets, args.batch, args.T, args.jobs)
    import triton

    payload = {
        "triton": triton.__version__,
        "torch": torch.__version__,
        "batch": args.batch,
        "T": args.T,
        "targets": [f"sm_{t}" for t in targets],
        "seconds": round(time.perf_counter() - start, 1),
        "results": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    if args.resources is not None and 90 in targets:
        args.resources.parent.mkdir(parents=True, exist_ok=True)
        args.resources.write_text(json.dumps(resource_report(results, "sm_90"), indent=1) + "\n")
    failed = [r for r in results if not r.ok]
    print(
        f"compiled {len(results) - len(failed)}/{len(results)} kernel specialisations for "
        f"{', '.join(payload['targets'])} in {payload['seconds']} s -> {args.out}"
    )
    for r in failed[:20]:
        print(f"FAILED {r.kernel} {r.target} {r.config}: {r.error.splitlines()[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
