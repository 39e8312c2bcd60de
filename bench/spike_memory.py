"""Record spike memory of VGG-16 and ResNet-19: ``python -m bench.spike_memory [--batch 8]``.

Counts bytes on real tensors (see :mod:`ndsnn_triton.profiler.memory`): what autograd saves for one
training forward with the ndsnn ops (int8 spike inputs, fused LIF keeping only h) against the eager
reference path (float inputs, LIF unrolled under autograd, and a saved copy of each masked weight
``weight * mask``), and the LIF-to-layer spike hand-off of an inference forward, float against
compact int8. Each model is measured at two batch sizes; the difference divided by the batch
difference is the per-sample cost (what grows with the batch), which separates it from
batch-independent items such as the reference path's masked-weight copies. Byte counts depend on
shapes only, so the CPU measurement holds on any device. Writes ``bench/results/spike_memory.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.environment import environment
from bench.memory import fit
from ndsnn_triton.models import build_model
from ndsnn_triton.profiler.memory import spike_memory

OUT = Path(__file__).parent / "results" / "spike_memory.json"


def _totals(m: dict) -> dict[str, int]:
    return {
        "train_saved_ndsnn": m["train_saved"]["ndsnn"]["total"],
        "train_saved_aten_reference": m["train_saved"]["aten_reference"]["total"],
        "saved_spike_inputs_int8": m["saved_spike_inputs"]["int8"],
        "inference_handoff_float": m["inference_handoff"]["float"],
        "inference_handoff_compact": m["inference_handoff"]["compact"],
    }


def measure(batches: tuple[int, int], T: int, seed: int = 0) -> list[dict]:
    """Per model: the full counts at each batch size and the per-sample slope of the totals."""
    rows = []
    for name in ("vgg16", "resnet19"):
        torch.manual_seed(seed)
        model = build_model(name, num_classes=10, T=T)
        runs = [spike_memory(model, torch.rand(b, 3, 32, 32)) for b in batches]
        per_sample, _ = fit({b: _totals(r) for b, r in zip(batches, runs, strict=True)})
        rows.append(
            {
                "model": name,
                "T": T,
                "batches": list(batches),
                "measured": runs,
                "per_sample_bytes": per_sample,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs=2, default=(4, 8))
    parser.add_argument("--T", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = measure(tuple(args.batches), args.T)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment(), "results": rows}, indent=1))
    for r in rows:
        s = {k: v / 2**20 for k, v in r["per_sample_bytes"].items()}
        print(
            f"{r['model']} per sample (T={r['T']}): saved for backward {s['train_saved_ndsnn']:.2f} "
            f"MiB (eager reference {s['train_saved_aten_reference']:.2f}); inference spike "
            f"hand-off {s['inference_handoff_compact']:.2f} MiB compact vs "
            f"{s['inference_handoff_float']:.2f} float"
        )
    return args.out


if __name__ == "__main__":
    main()
