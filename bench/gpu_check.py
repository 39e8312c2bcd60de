"""One-shot GPU check: everything a first run on a GPU must do, in one command, within ~9 minutes.

``python -m bench.gpu_check`` on one H100/H200 (no network needed) runs, in order, each step in its
own pytest or CLI process with a time budget:

1. ``tests``: the kernel, dispatch and host-synchronisation tests on CUDA (``tests/test_kernels*.py``,
   ``test_launch_plans.py``, ``test_compact_spikes.py``, ``test_dispatch.py``,
   ``test_host_sync.py``): the Triton kernels against their references on the real compiler;
2. ``kernels``: the kernel benchmark's default grid — every VGG-16 and ResNet-19 spike layer
   shape at densities 0.1, 0.05, 0.01 with the measured spike structure (bf16; fp32 at 0.01) and
   the synthetic sweeps, cuDNN and torch.sparse CSR measured in the same run, the model's
   predictions and the launch counts beside — and the LIF shapes →
   ``bench/results/kernels-<device>.json``, ``lif-<device>.json``;
3. ``steps``: the training-step benchmark of VGG-16 and ResNet-19 (B = 64, T = 5) in bf16 AMP on
   backends ``auto`` and ``dense`` at densities 1 and 0.01, ordinary and mask-update steps →
   ``bench/results/step_times-<device>.json``;
4. ``report``: ``ndsnn report --step-times`` with those step times → ``bench/results/report-<device>/``;
5. ``plots``: ``python -m bench.plot`` → ``bench/results/*.png``.

Every case runs under a per-case timeout (``NDSNN_CASE_TIMEOUT``, read by the root
``conftest.py``): a hung kernel kills its process with a traceback, the check names the case,
skips it and goes on with the step's remaining cases. A step out of budget is stopped the same
way; later steps still run while the total budget lasts. Results are merged into their files after
every case, so what was measured before a failure is kept. The exit status is 0 only if every
step passed.

``--dry-run`` (CPU, used in CI): checks the prerequisites, collects every case of every step
(so a renamed case fails here, not on the GPU) and compiles every kernel specialisation for
``sm_90`` ahead of time; it times nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: modules the steps import beyond torch and triton (the GPU machine has no network: carry wheels)
PREREQUISITES = ("pytest", "pytest_benchmark", "matplotlib", "tqdm", "numpy", "hypothesis")
GPU_TESTS = [
    "tests/test_spike_skipping.py",
    "tests/test_kernels.py",
    "tests/test_kernels_gpu.py",
    "tests/test_kernel_fuzz.py",
    "tests/test_launch_plans.py",
    "tests/test_compact_spikes.py",
    "tests/test_dispatch.py",
    "tests/test_host_sync.py",
]
#: seconds per step (sums to 520 s: ~8.7 min, leaving room for process start-up); the kernel
#: grid first (its cases compile each kernel specialisation once), the training steps after
BUDGETS = {"tests": 100, "kernels": 300, "steps": 80, "report": 25, "plots": 15}
STEP_DENSITIES = (1.0, 0.01)
STEP_CONFIGS = ("auto_bf16", "dense_bf16")


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    timed_out_cases: list[str] = field(default_factory=list)


def kernel_cases() -> list[str]:
    """Node ids of the kernel benchmark's default grid and its LIF cases."""
    from bench import test_bench_kernels as kb

    conv = [f"bench/test_bench_kernels.py::test_conv_layer[{case.id}]" for case in kb.CONV_CASES]
    lif = [f"bench/test_bench_kernels.py::test_lif[{i}]" for i in ("c64m32", "c128m16", "c512m4")]
    return conv + lif


def step_cases() -> list[str]:
    """Node ids of the training-step benchmark cases the check runs."""
    from bench import test_bench_step as sb

    return [
        f"bench/test_bench_step.py::test_training_step[{model}-{config}-{density}-{kind}]"
        for model in sb.MODELS
        for config in STEP_CONFIGS
        for density in STEP_DENSITIES
        for kind in sb.KINDS
        if density in sb.DENSITIES
    ]


def missing_prerequisites() -> list[str]:
    return [m for m in PREREQUISITES if importlib.util.find_spec(m) is None]


# ----------------------------------------------------------------------------- running pytest


def _pytest(args: list[str], timeout: float, case_timeout: float) -> tuple[int, str, bool, str]:
    """Run pytest in a child process: ``(returncode, output, killed_for_time, timeout_log)``;
    the log holds the tracebacks of a case the per-case timeout killed."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        env = dict(
            os.environ, NDSNN_CASE_TIMEOUT=str(case_timeout), NDSNN_CASE_TIMEOUT_LOG=log.name
        )
        cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *args]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1)
            )
            code, out, killed = done.returncode, done.stdout + done.stderr, False
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            code, killed = -9, True
        return code, out, killed, log.read()


_OUTCOME = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", re.M)
_STARTED = re.compile(r"^(\S+::\S+) ", re.M)


def run_cases(
    nodeids: list[str], budget: float, case_timeout: float, extra: list[str]
) -> StepResult:
    """Run ``nodeids`` within ``budget`` seconds; a case past ``case_timeout`` is named, skipped,
    and the remaining cases run in a fresh process."""
    start = time.monotonic()
    skip: list[str] = []  # cases finished or hung: deselected when the rest runs again
    timed_out, failures = [], []
    while True:
        left = budget - (time.monotonic() - start)
        if left <= 5:
            failures.append("out of time budget")
            break
        deselect = [arg for n in skip for arg in ("--deselect", n)]
        code, out, killed, log = _pytest([*extra, *nodeids, *deselect], left, case_timeout)
        done = dict(_OUTCOME.findall(out))
        failures += [n for n, outcome in done.items() if outcome in ("FAILED", "ERROR")]
        unfinished = [n for n in _STARTED.findall(out) if n not in done]
        if not killed and "Timeout (" not in log:
            if code not in (0, 1, 5):  # not: all passed, some failed, none collected
                failures.append(f"pytest exited with {code}: {out[-1500:]}")
            break
        if not unfinished:  # killed before any case started: nothing to skip
            failures.append(f"pytest was stopped before running a case: {out[-1500:]}")
            break
        timed_out.append(unfinished[-1])
        print(f"[gpu_check] {unfinished[-1]} ran past {case_timeout:.0f} s:\n{log[:2500]}")
        skip += [*done, unfinished[-1]]
    ok = not failures and not timed_out
    detail = "; ".join(failures[:10]) or ("" if ok else "see output")
    return StepResult("", ok, time.monotonic() - start, detail, timed_out)


def run_command(cmd: list[str], budget: float) -> StepResult:
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return StepResult("", False, time.monotonic() - start, f"timed out after {budget:.0f} s")
    tail = (done.stdout + done.stderr)[-2000:]
    return StepResult(
        "", done.returncode == 0, time.monotonic() - start, "" if done.returncode == 0 else tail
    )


# ----------------------------------------------------------------------------- the check


def device_tag() -> str:
    import torch

    return torch.cuda.get_device_name().replace(" ", "_")


def gpu_run(total_budget: float, case_timeout: float) -> list[StepResult]:
    """The steps on the GPU, each within its budget and the total that is left."""
    start = time.monotonic()

    def left(step: str) -> float:
        return min(BUDGETS[step], total_budget - (time.monotonic() - start))

    results = []

    def record(name: str, result: StepResult) -> None:
        result.name = name
        results.append(result)
        status = "ok" if result.ok else "FAILED"
        print(f"[gpu_check] {name}: {status} in {result.seconds:.0f} s {result.detail}".rstrip())
        for case in result.timed_out_cases:
            print(f"[gpu_check]   timed out (skipped): {case}")

    tag = device_tag()
    record("tests", run_cases(GPU_TESTS, left("tests"), case_timeout, ["-x"]))
    record(
        "kernels", run_cases(kernel_cases(), left("kernels"), case_timeout, ["--benchmark-only"])
    )
    record("steps", run_cases(step_cases(), left("steps"), case_timeout, ["--benchmark-only"]))
    step_file = RESULTS / f"step_times-{tag}.json"
    if step_file.exists():
        report = [
            sys.executable, "-c", "from ndsnn_triton.cli import main; raise SystemExit(main())",
            "report", "--step-times", str(step_file), "--out", str(RESULTS / f"report-{tag}"),
        ]  # fmt: skip
        record("report", run_command(report, left("report")))
    else:
        record("report", StepResult("", False, 0.0, f"no {step_file.name}: the steps step failed"))
    record("plots", run_command([sys.executable, "-m", "bench.plot"], left("plots")))
    return results


def dry_run(jobs: int, compile_kernels: bool = True) -> list[StepResult]:
    """Prerequisites, case collection and ahead-of-time compilation for sm_90; no timing."""
    results = []
    start = time.monotonic()
    ids = GPU_TESTS + kernel_cases() + step_cases()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    collected = done.returncode == 0
    detail = f"{len(kernel_cases())} kernel and {len(step_cases())} step cases"
    if not collected:
        detail = done.stdout[-2000:] + done.stderr[-2000:]
    results.append(StepResult("collect", collected, time.monotonic() - start, detail))
    if not compile_kernels:
        return _print_dry(results)
    start = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = RESULTS / ".gpu_check_dry_run_aot.json"
    done = subprocess.run(
        [sys.executable, "-m", "ndsnn_triton.kernels.aot", "--targets", "90", "--jobs", str(jobs), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    ok = done.returncode == 0
    summary = (
        done.stdout.strip().splitlines()[-1:] if ok else [done.stdout[-2000:], done.stderr[-2000:]]
    )
    out.unlink(missing_ok=True)
    results.append(StepResult("compile sm_90", ok, time.monotonic() - start, " ".join(summary)))
    return _print_dry(results)


def _print_dry(results: list[StepResult]) -> list[StepResult]:
    for r in results:
        print(
            f"[gpu_check --dry-run] {r.name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f} s {r.detail}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Step budgets: "
        + ", ".join(f"{k} {v} s" for k, v in BUDGETS.items())
        + ".\nOn the GPU machine (no network), from a fresh checkout, with torch and triton "
        "installed:\n  pip install --no-index --find-links wheels --no-build-isolation --no-deps -e .\n"
        "  pip install --no-index --find-links wheels <missing: "
        + ", ".join(PREREQUISITES)
        + ">\n  python -m bench.gpu_check\nthen commit what it writes under bench/results/.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="on any machine: check prerequisites, collect every case, compile every kernel for sm_90; no timing",
    )
    parser.add_argument(
        "--budget", type=float, default=540.0, help="total seconds for all steps (default 540)"
    )
    parser.add_argument(
        "--case-timeout", type=float, default=90.0, help="seconds before a single case is killed"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="with --dry-run: collect only (the suite's AOT test compiles every kernel anyway)",
    )
    args = parser.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        print(f"[gpu_check] missing modules: {', '.join(missing)}; install (or carry) their wheels")
        return 2
    if args.dry_run:
        results = dry_run(args.jobs, compile_kernels=not args.no_compile)
    else:
        import torch

        if not torch.cuda.is_available():
            print("[gpu_check] no CUDA device: run on a GPU machine, or use --dry-run here")
            return 2
        results = gpu_run(args.budget, args.case_timeout)
        summary = RESULTS / f"gpu_check-{device_tag()}.json"
        summary.write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
        print(f"[gpu_check] summary -> {summary}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
