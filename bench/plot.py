"""Plot recorded kernel benchmarks: ``python -m bench.plot [bench/results/kernels-*.json]``.

Writes ``bench/results/speedup_vs_density.png``: per layer, forward+backward speedup of the Triton
kernels over cuDNN bf16 (same run) against weight density, one line per spike rate.
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


if __name__ == "__main__":
    results = Path(__file__).parent / "results"
    given = [Path(p) for p in sys.argv[1:]] or sorted(results.glob("kernels-*.json"))
    print(plot(given, results / "speedup_vs_density.png"))
