"""The README's table of CPU benchmark medians: ``python -m bench.cpu_table``.

Reads ``bench/results/{conv_ops,lif_ops,train_step,report_pipeline}-cpu.json`` (written by
``pytest bench --benchmark-only`` on a machine without CUDA) and prints markdown: CPU numbers,
labelled as such, with the machine they were measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONV_COLUMNS = ("ref_fwd", "dense_fwd", "csr_fwd", "ref_fwd_bwd", "dense_fwd_bwd")


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}-cpu.json").read_text())


def _ms(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def cpu_table() -> str:
    """Markdown tables of the CPU results (medians in ms)."""
    conv = _load("conv_ops")
    env = conv["environment"]
    by_case = {(r["layer"], r["density"], r["impl"]): r["median_ms"] for r in conv["results"]}
    shape = conv["results"][0]["shape"]
    lines = [
        f"CPU medians in ms ({env['cpu_model']}, {env['torch_threads']} threads, torch "
        f"{env['torch']}; B·T = {shape['B'] * shape['T']}, spike rate "
        f"{conv['results'][0]['spike_rate']:g}; `bench/results/*-cpu.json`):",
        "",
        "| layer | density | reference fwd | dense `F.conv2d` fwd | CSR fwd | reference fwd+bwd | dense fwd+bwd |",
        "|---|---|---|---|---|---|---|",
    ]
    layers = dict.fromkeys(r["layer"] for r in conv["results"])
    densities = sorted({r["density"] for r in conv["results"]}, reverse=True)
    for layer in layers:
        for d in densities:
            cells = [_ms(by_case[(layer, d, c)]) for c in CONV_COLUMNS]
            lines.append(f"| {layer} | {d:g} | " + " | ".join(cells) + " |")
    lif = _load("lif_ops")["results"]
    steps = _load("train_step")["results"]
    report = _load("report_pipeline")["results"][0]
    lines += ["", "| other CPU case | median ms |", "|---|---|"]
    for r in lif:
        s = r["shape"]
        label = {
            "ref_fwd_bwd": "LIF op, torch path",
            "eager_autograd_fwd_bwd": "LIF eager loop under autograd",
        }
        lines.append(
            f"| {label.get(r['impl'], r['impl'])}, fwd+bwd, T={s['T']} B={s['B']} "
            f"[{s['C']}, {s['H']}, {s['W']}] | {_ms(r['median_ms'])} |"
        )
    kinds = {"train": "training step", "update": "mask-update step", "rebuild": "index rebuild"}
    for r in steps:
        lines.append(
            f"| {r['model']} model, {kinds.get(r['kind'], r['kind'])}, density {r['density']:.2g}, "
            f"B={r['batch']} T={r['T']}, {r['config']} | {_ms(r['median_ms'])} |"
        )
    lines.append(f"| `ndsnn report` pipeline (defaults) | {_ms(report['median_ms'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(cpu_table())
