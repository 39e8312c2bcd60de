"""Plot recorded benchmarks: ``python -m bench.plot``.

Writes, from the files under ``bench/results/``:

* ``speedup_vs_density.png`` (``kernels-*.json``): per layer, forward+backward speedup of the
  Triton kernels over cuDNN bf16 (same run) against weight sparsity, one line per spike rate;
* ``step_time_vs_density.png`` (``step_times-*.json``): per model, the training-step time of each
  configuration against weight sparsity (ordinary and mask-update steps), and peak memory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(paths: list[Path], out: Path) -> Path:
    rows = []
    for path in paths:
        data = json.loads(path.read_text())
        device = data["environment"]["device"]
        rows += [dict(r, device=device) for r in data["results"] if "layer" in r]
    if not rows:
        raise SystemExit("no kernel benchmark rows found")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    cols = 4
    fig, axes = plt.subplots(
        -(-len(layers) // cols),
        cols,
        figsize=(4 * cols, 3.2 * -(-len(layers) // cols)),
        squeeze=False,
    )
    for ax, layer in zip(axes.flat, layers, strict=False):
        for rate in sorted({r["spike_rate"] for r in rows}):
            pts = sorted(
                (r["density"], r["speedup_fwd_bwd_vs_cudnn_bf16"])
                for r in rows
                if r["layer"] == layer and r["spike_rate"] == rate
            )
            ax.plot(
                [100 * (1 - d) for d, _ in pts],
                [s for _, s in pts],
                "o-",
                label=f"spikes {rate:.0%}",
            )
        ax.axhline(1.0, color="gray", ls="--")
        ax.set_title(layer)
        ax.set_xlabel("weight sparsity (%)")
        ax.set_ylabel("fwd+bwd speedup vs cuDNN bf16")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    fig.suptitle(f"Triton sparse kernels vs cuDNN bf16 ({rows[0]['device']}, B=64, T=5)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_steps(paths: list[Path], out: Path) -> Path:
    """Step time (ms) and peak memory (GiB) against weight sparsity, per model and configuration."""
    rows = []
    for path in paths:
        data = json.loads(path.read_text())
        rows += [r for r in data["results"] if r.get("kind") in ("train", "update")]
    if not rows:
        raise SystemExit("no step benchmark rows found")
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        for config in dict.fromkeys(r["config"] for r in rows):
            for kind, style in (("train", "o-"), ("update", "x--")):
                pts = sorted(
                    (r["density"], r["median_ms"], r.get("peak_memory_bytes"))
                    for r in rows
                    if r["model"] == model and r["config"] == config and r["kind"] == kind
                )
                if not pts:
                    continue
                xs = [100 * (1 - d) for d, _, _ in pts]
                axes[0, col].plot(xs, [ms for _, ms, _ in pts], style, label=f"{config} {kind}")
                if kind == "train" and all(p[2] for p in pts):
                    axes[1, col].plot(xs, [p[2] / 2**30 for p in pts], "o-", label=config)
        axes[0, col].set_title(f"{model}: one training step (B=64, T=5)")
        axes[0, col].set_ylabel("median ms")
        axes[1, col].set_ylabel("peak GPU memory (GiB)")
        for ax in axes[:, col]:
            ax.set_xlabel("weight sparsity (%)")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # no memory line without CUDA
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    results = Path(__file__).parent / "results"
    given = [Path(p) for p in sys.argv[1:]]
    kernels = [p for p in given if p.name.startswith("kernels-")] or sorted(
        results.glob("kernels-*.json")
    )
    steps = [p for p in given if p.name.startswith("step_times-")] or sorted(
        results.glob("step_times-*.json")
    )
    if not kernels and not steps:
        raise SystemExit("no recorded benchmark files under bench/results (run them on a GPU)")
    if kernels:
        print(plot(kernels, results / "speedup_vs_density.png"))
    if steps:
        print(plot_steps(steps, results / "step_time_vs_density.png"))
