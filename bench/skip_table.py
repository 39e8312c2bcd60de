"""The README's tables of spike skipping: ``python -m bench.skip_table``.

Reads ``bench/results/spike_structure.json`` (the structure of real spike maps,
``python -m bench.spike_structure``) and the GPU file ``bench/results/spike_skipping-<device>.json``
(recorded by the spike-skipping benchmark of the earlier, serial kernels at the commit the file
names; the current kernels are measured by ``bench/test_bench_kernels.py``) and prints markdown
built from those numbers only.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: the VGG-16 layer inputs the structure table shows (module path -> conv name, counted from 1)
VGG_LAYERS = {
    "features.1": "conv2",
    "features.5": "conv3",
    "features.8": "conv4",
    "features.15": "conv6",
    "features.25": "conv9",
    "features.35": "conv12",
    "features.38": "conv13",
    "classifier": "fc",
}


def _row(model: str) -> dict:
    data = json.loads((RESULTS / "spike_structure.json").read_text())
    return next(r for r in data["results"] if r["model"] == model)


def structure_table(model: str = "vgg16") -> str:
    """Per layer input of the trained ``model`` (train mode): rate, silent words, maps, dead
    channels and the kernels' work factors."""
    row = _row(model)
    layers = {L["name"]: L for L in row["structure"]["trained"]["train"]}
    lines = [
        f"{model} after {row['steps']} NDSNN steps to {row['sparsity']:.0%} sparsity on "
        f"Fashion-MNIST (batch {row['batch']}, T = {row['T']}, test accuracy "
        f"{row['test_acc']:.1%}; train mode; `bench/results/spike_structure.json`):",
        "",
        "| input of | map | spike rate | silent 32-words | silent maps "
        "| dead channels | forward lanes run | weight-grad events |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in VGG_LAYERS.items():
        L = layers[name]
        c, h, w = L["input_shape"]
        lines.append(
            f"| {label} (`{name}`) | {c}×{h}×{w} | {L['rate']:.3f} | {L['silent_words32']:.2f} "
            f"| {L['silent_maps']:.2f} "
            f"| {L['dead_channels']:.2f} | {L['work']['forward']:.2f} "
            f"| {L['work']['weight_grad']:.3f} |"
        )
    return "\n".join(lines)


def gpu_table(device: str = "NVIDIA_H200") -> str:
    """Medians of the spike-skipping benchmark on the measured structure, in µs."""
    data = json.loads((RESULTS / f"spike_skipping-{device}.json").read_text())
    env = data["environment"]
    rows = [r for r in data["results"] if r["spikes"]["label"] == "measured"]
    first = rows[0]
    lines = [
        f"{env['device']}, torch {env['torch']}, Triton {env['triton']}, commit "
        f"{env['commit'][:7]}; B = {first['shape']['B']}, T = {first['shape']['T']}, density "
        f"{first['density']:g}, {first['dtype_triton']}; spikes synthesized with the measured "
        f"rate and silent maps of each layer; medians in µs "
        f"(`bench/results/spike_skipping-{device}.json`):",
        "",
        "| layer | rate | silent maps | activity pass | fwd, skipping (with pass) | fwd, no "
        "skipping | events pass | wgrad on events (with pass) | wgrad on positions | fwd+bwd | "
        "fwd+bwd before "
        "| cuDNN fp32 fwd+bwd | cuDNN bf16 fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = {k: v * 1000 for k, v in r["median_ms"].items()}
        s = r["spikes"]["synthesized"]
        cells = [
            m["spike_events_activity"],
            m["triton_fwd"],
            m["triton_fwd_noskip"],
            m["spike_events_wgrad"],
            m["triton_wgrad"],
            m["triton_wgrad_positions"],
            m["triton_fwd_bwd"],
            m["triton_fwd_bwd_baseline"],
            m["cudnn_fp32_fwd_bwd"],
            m["cudnn_bf16_fwd_bwd"],
        ]
        lines.append(
            f"| {r['layer'].removeprefix('vgg.')} | {s['rate']:.3f} | {s['silent_maps']:.2f} | "
            + " | ".join(f"{v:,.0f}" for v in cells)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(structure_table())
    print()
    print(gpu_table())
