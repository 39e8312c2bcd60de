"""The README's tables of the sparse kernels' speed: ``python -m bench.kernel_table``.

* :func:`predictions_table`: the time model's predictions for the kernel benchmark's cases at
  density 0.01 (``bench/results/kernel_predictions-H200.json``, ``ndsnn roofline --predictions``),
  written before a GPU measures the kernels;
* :func:`measured_table`: the measured medians of ``bench/results/kernels-<device>.json``
  (``python -m bench.gpu_check``) beside those predictions, once such a file exists.

Both print markdown built from those files only.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
GOAL = {"vgg16": 0.2, "resnet19": 0.3}


def _fmt(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def predictions_table(
    path: Path = RESULTS / "kernel_predictions-H200.json", density: float = 0.01
) -> str:
    """Predicted µs per launch of every benchmarked layer at ``density`` (bf16 compute), the sum,
    the dense cuDNN path (recorded H200 medians where the layer was measured, else the fit) and
    the ratio the goal is stated in."""
    doc = json.loads(path.read_text())
    rows = [r for r in doc["rows"] if r["density"] == density and r["dtype"] == "bfloat16"]
    gpu = doc["gpu"]["name"]
    lines = [
        f"Predicted on the {gpu} (model, not measurement: `{path.relative_to(RESULTS.parent.parent)}`, "
        f"t_dep {doc['model']['t_dep_us']} µs), density {density:g}, bf16 compute with fp32 "
        "weights, B 64, T 5, each layer's measured spike structure; µs:",
        "",
        "| model | layer | fwd | dgrad | wgrad + reduce | fwd+bwd | cuDNN bf16 fwd+bwd | ratio | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k = {name: v["us"] for name, v in r["kernels"].items()}
        lines.append(
            f"| {r['model']} | {r['layer']} | {_fmt(k['fwd'])} | {_fmt(k['dgrad'])} | "
            f"{_fmt(k['wgrad'] + k['reduce'])} | {_fmt(r['fwd_bwd_us'])} | "
            f"{_fmt(r['dense_fwd_bwd_us'])} | {r['ratio_to_dense']:.2f} | ≤ {GOAL[r['model']]} |"
        )
    return "\n".join(lines)


def measured_table(device: str = "NVIDIA_H200") -> str:
    """Measured medians of the kernel benchmark on ``device`` at density 0.01, measured
    structure, bf16 — beside the model's predictions of the same cases."""
    data = json.loads((RESULTS / f"kernels-{device}.json").read_text())
    env = data["environment"]
    rows = [
        r for r in data["results"]
        if r["density"] == 0.01 and r["spikes"]["label"] == "measured" and r["case"].endswith("bf16")
    ]  # fmt: skip
    lines = [
        f"{env['device']}, torch {env['torch']}, Triton {env['triton']}, commit "
        f"{env['commit'][:7]}; density 0.01, bf16, measured spike structure; medians in µs "
        f"(predicted) (`bench/results/kernels-{device}.json`):",
        "",
        "| layer | fwd | dgrad | wgrad | fwd+bwd / cuDNN bf16 | auto / cuDNN bf16 | CSR / fwd | roofline fraction fwd / dgrad / wgrad |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, p, f = r["median_ms"], r["predicted_us"], r["roofline_fraction"]
        cells = [f"{_fmt(m[k] * 1e3)} ({_fmt(p[k])})" for k in ("fwd", "dgrad", "wgrad")]
        lines.append(
            f"| {r['model']}.{r['layer']} | " + " | ".join(cells)
            + f" | {r['ratios']['fwd_bwd_vs_cudnn']:.2f} | {r['ratios']['auto_vs_cudnn']:.2f}"
            f" | {r['ratios']['csr_vs_fwd']:.1f} | "
            + " / ".join(f"{f[k]:.0%}" for k in ("fwd", "dgrad", "wgrad")) + " |"
        )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(predictions_table())
    for path in sorted(RESULTS.glob("kernels-*.json")):
        print()
        print(measured_table(path.stem.removeprefix("kernels-")))
