"""Kernel launches of one ordinary training step of VGG-16 and ResNet-19, counted on a CPU.

``python -m bench.step_launches`` (about a minute, no GPU; ``TRITON_INTERPRET=1`` is set for it)
writes ``bench/results/step_launches.json``: per model, path and T, the launches of one step
(forward over T with the loss, backward, fused SGD, mask re-application, neuron reset) by phase,
component and name (:mod:`ndsnn_triton.profiler.step_launches`). Paths: ``sparse`` = the ``ndsnn``
ops on backend ``triton`` at density 0.01 (what ``auto`` runs where it picks the sparse kernels),
``dense`` = backend ``dense`` at density 1 (cuDNN/cuBLAS on the masked dense weight, the
fused LIF). Both in bf16 autocast, B = 2 (launch counts do not depend on the batch), 32×32
images (the small model: 8×8).

The budget the file is checked against (``tests/test_step_launches.py``): no count grows with T
(the convolutions and the LIF run all T steps in one launch each), and per step

* the convolution/linear work takes at most 5 launches per masked layer (forward, its replay in
  the backward where the layer's segment recomputes, input gradient, weight gradient, its reduce;
  every spike input comes from a library LIF, so no fallback pass runs);
* the LIF work at most 5 per LIF layer (forward, replay, backward, and the one-value rest
  potential of the forward and of the replay).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: CPU tensors

import torch

import ndsnn_triton
from bench.environment import environment
from bench.test_bench_step import StepCase
from ndsnn_triton.nn import LIF, masked_layers, reset_net, temporal_cross_entropy
from ndsnn_triton.profiler.step_launches import StepLaunches, count_step_launches

RESULT = Path(__file__).resolve().parent / "results" / "step_launches.json"
MODELS = ("vgg16", "resnet19")
#: path -> (backend, overall density)
PATHS = {"sparse": ("triton", 0.01), "dense": ("dense", 1.0)}
TS = (2, 4)
BATCH = 2


class LaunchCase(StepCase):
    """The step benchmark's case (a static sparse method, one batch) with the trainer's fused
    SGD, run in bf16 autocast, phase by phase."""

    def __init__(self, model: str, T: int, density: float) -> None:
        super().__init__(model, density, "train", "cpu", BATCH, T)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True
        )
        self.sparsifier.set_optimizer(self.optimizer)
        self._loss: torch.Tensor | None = None

    def phases(self) -> dict[str, Any]:
        """The trainer's ordinary step, phase by phase."""

        def forward() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                self._loss = temporal_cross_entropy(self.model(self.x), self.y)

        def backward() -> None:
            self.optimizer.zero_grad(set_to_none=True)
            self._loss.backward()

        return {
            "forward": forward,
            "backward": backward,
            "optimizer": self.optimizer.step,
            "masks": self.sparsifier.step,
            "reset": lambda: reset_net(self.model),
        }

    def count(self, backend: str, run_triton: bool = False) -> StepLaunches:
        """One warm-up step (counted the same way, its count dropped), then the launches of the
        next one."""
        with ndsnn_triton.use_backend(backend), ndsnn_triton.use_spike_check(False):
            count_step_launches(self.phases(), run_triton=run_triton)
            return count_step_launches(self.phases(), run_triton=run_triton)

    def layer_counts(self) -> dict[str, int]:
        """Masked layers, of them spike-input ones, and LIF layers of the model."""
        layers = [m for _, m in masked_layers(self.model)]
        return {
            "masked_layers": len(layers),
            "spike_input_layers": sum(m.spike_input for m in layers),
            "lif_layers": sum(isinstance(m, LIF) for m in self.model.modules()),
        }


def budget(layers: dict[str, int]) -> dict[str, int]:
    """The stated per-step budget of the convolution/linear and the LIF work (module docstring).
    Every spike input of the models comes from a library LIF: no fallback pass is budgeted, and
    ``tests/test_step_launches.py`` checks that none runs."""
    return {"conv/linear": 5 * layers["masked_layers"], "LIF": 5 * layers["lif_layers"]}


def row(model: str, path: str, T: int) -> dict[str, Any]:
    backend, density = PATHS[path]
    case = LaunchCase(model, T, density)
    counted = case.count(backend)
    layers = case.layer_counts()
    return {
        "case": f"{model}/{path}/T{T}",
        "model": model,
        "path": path,
        "backend": backend,
        "density": density,
        "T": T,
        "batch": BATCH,
        **layers,
        "budget": budget(layers),
        **counted.to_dict(),
    }


def readme_table(results: list[dict[str, Any]]) -> str:
    """README's Markdown table: per model and path, launches of one step by component (at the
    smallest T recorded; every T records the same) and the stated budget."""
    first_t = min(r["T"] for r in results)
    rows = [r for r in results if r["T"] == first_t]
    components = ["conv/linear", "LIF", "BatchNorm", "pooling", "loss", "optimizer", "other"]
    head = ["model", "path", "launches per step", *components, "budget conv/linear; LIF"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["model"], r["path"], str(r["total"])]
        cells += [str(r["components"].get(c, 0)) for c in components]
        cells.append(f"{r['budget']['conv/linear']}; {r['budget']['LIF']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else RESULT
    rows = [row(m, p, T) for m in MODELS for p in PATHS for T in TS]
    doc = {"environment": environment("cpu"), "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(f"{r['case']:>22}: {r['total']:4d} launches  {r['components']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
