"""Real training of every method: accuracy, GPU time and measured spike rates per method.

``python -m bench.train_methods --dataset fashion-mnist --epochs 20`` trains VGG-16 and ResNet-19
(32×32 input; Fashion-MNIST is zero-padded to 32×32) with dense, static, SET, RigL, NDSNN and LTH at
each sparsity through ``ndsnn train``, one run folder per case under ``--runs``. After each run it
records the final and best test accuracy, the training wall time (GPU seconds on CUDA), the mean
per-layer input spike rates the trainer logged, the run's FLOPs under the ``snn`` and ``rigl``
conventions from its logged schedule and measured rates (``ndsnn profile``), and, after each NDSNN
run, the NDSNN/LTH FLOP ratio recomputed with the run's measured rates instead of the assumed 0.1.
Results go to ``--out`` (default ``bench/results/training-<device>.json``), rewritten after every
run; a case whose run folder already holds ``metrics.json`` is not trained again, so a long sweep
can be run in pieces (``--max-steps`` bounds each run; an interrupted run resumes).

CIFAR-10/100 or TinyImageNet runs are the same command with ``--dataset cifar10 --data-root DIR``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.environment import environment
from ndsnn_triton.cli import main as ndsnn
from ndsnn_triton.profiler.claim import PAPER_RATIO, Assumptions, claim_check, setup_model
from ndsnn_triton.profiler.run_profile import mean_spike_rates, profile_run

METHODS = ("dense", "static", "set", "rigl", "ndsnn", "lth")


def _run_args(args: argparse.Namespace, model: str, method: str, sparsity: float, run: Path):
    cmd = [
        "train",
        "--model", model, "--method", method, "--dataset", args.dataset,
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--T", str(args.T),
        "--lr", str(args.lr), "--seed", str(args.seed), "--out", str(run), "--no-progress",
        "--log-every", str(args.log_every), "--eval-every", str(args.eval_every),
    ]  # fmt: skip
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    if method != "dense":
        cmd += ["--sparsity", str(sparsity)]
    if method == "lth":
        cmd += ["--rewind-epoch", str(args.rewind_epoch)]
        if args.lth_rounds:
            cmd += ["--rounds", str(args.lth_rounds)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.device:
        cmd += ["--device", args.device]
    if (run / "checkpoint.pt").exists():
        cmd += ["--resume"]
    return cmd


def _row(model: str, method: str, sparsity: float, run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    rates = mean_spike_rates(run)
    profile = profile_run(run)
    return {
        "model": model,
        "method": method,
        "sparsity": 0.0 if method == "dense" else sparsity,
        "run": str(run),
        "test_acc": metrics["test_acc"],
        "best_test_acc": metrics["best_test_acc"],
        "wall_time_s": metrics["wall_time_s"],
        "device": metrics["device"],
        "steps": metrics["steps"],
        "final_density": metrics["density"],
        "mean_spike_rate": sum(rates.values()) / len(rates),
        "spike_rates": rates,
        "flops": {c: v["measured_schedule_flops"] for c, v in profile["conventions"].items()},
    }


def _claim_with_rates(model: str, sparsity: float, rates: dict[str, float], a: Assumptions):
    """NDSNN/LTH FLOPs (snn) under each protocol with the run's measured spike rates."""
    a = Assumptions(**{**asdict(a), "spike_rate": rates})
    rows = claim_check([setup_model(model, a)], a, (sparsity,), conventions=("snn",))
    return [
        {"protocol": r.protocol, "distribution": r.distribution, "ratio": r.ratio} for r in rows
    ]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet19"])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.99, 0.9])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--T", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rewind-epoch", type=int, default=1, help="LTH rewind epoch (default 1)")
    p.add_argument("--lth-rounds", type=int, default=None, help="LTH rounds (default: derived)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each run after N iterations")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations")
    p.add_argument("--device", default=None)
    p.add_argument("--runs", type=Path, default=Path("runs/train_methods"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    env = environment()
    out = args.out or Path(__file__).parent / "results" / (
        f"training-{env['device'].replace(' ', '_')}.json"
    )
    cases = [
        (model, method, s)
        for model in args.models
        for method in args.methods
        for s in (args.sparsities[:1] if method == "dense" else args.sparsities)
    ]
    rows: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    for model, method, sparsity in cases:
        run = args.runs / model / (method if method == "dense" else f"{method}-{sparsity:g}")
        if not (run / "metrics.json").exists():
            code = ndsnn(_run_args(args, model, method, sparsity, run))
            if code:
                raise SystemExit(f"train_methods: ndsnn train failed for {model}/{method}")
        if not (run / "metrics.json").exists():  # stopped by --max-steps before the end
            continue
        rows.append(_row(model, method, sparsity, run))
        if method == "ndsnn" and model in PAPER_RATIO:
            a = Assumptions(T=args.T)
            claims.append(
                {
                    "model": model,
                    "sparsity": sparsity,
                    "spike_rates_from": str(run),
                    "assumptions": a.describe() | {"spike_rate": "measured per layer"},
                    "ratios": _claim_with_rates(model, sparsity, rows[-1]["spike_rates"], a),
                }
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "environment": env,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "cuda": torch.cuda.is_available(),
            "results": rows,
            "claim_with_measured_rates": claims,
        }
        out.write_text(json.dumps(document, indent=1))
    return out


if __name__ == "__main__":
    print(main())
