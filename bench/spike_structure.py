"""Record the structure of real spikes: ``python -m bench.spike_structure --out FILE``.

For each model (VGG-16, ResNet-19, the small CNN) trained with NDSNN at 99 % sparsity on
Fashion-MNIST (padded to 32×32, T = 4, torch backend, CPU, one torch thread per process), measure
with :class:`~ndsnn_triton.profiler.spike_structure.SpikeStructureMonitor` each spike layer's input
at initialisation and after training, in train mode (forward + backward of real training batches,
gradients *not* applied, so the measured state is exactly the checkpoint's) and in eval mode
(test batches): spike rate, silent 32-element words, silent (sample, channel) maps, silent
(sample block, channel) pairs at the forward kernel's block, dead channels, and the kernels'
work factors. Writes the JSON file and one plot per model next to it.

Training is budgeted by *process CPU time* (``time.process_time``), so other work sharing the cores
does not shorten it: each big model's worker times a few steps, then trains exactly as many steps
as the budget allows on a random subset of the training set that makes those steps one epoch, so
NDSNN's schedule (density 1 → 0.01) runs over exactly those steps. The small model trains for
``--small-epochs`` epochs on a subset sized to its budget, evaluated after each epoch (convergence
is read off that history). Runs (initial and final ``state_dict`` with masks, the trainer's logs
and ``run.json``) go to ``--runs``; ``--reuse`` measures existing runs again without retraining.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "spike_structure.json"
MODELS = ("vgg16", "resnet19", "small")
DATASET = "fashion-mnist"
SPARSITY = 0.99
T = 4
SEED = 0
BATCH = {"vgg16": 32, "resnet19": 32, "small": 32}
TRAIN_MEASURE_BATCHES = 4  # training batches (forward + backward, no update) per train-mode probe
EVAL_MEASURE_BATCHES = 8  # test batches per eval-mode probe
SAFETY = 0.85  # fraction of the estimated remaining budget spent on training steps


class BenchError(ValueError):
    """A bad option combination or a run folder that cannot be used."""


def _build(name: str, image_size: int, in_channels: int) -> torch.nn.Module:
    """The model ``name`` for 10 classes at T = 4 (ResNet-19 takes no image size)."""
    from ndsnn_triton.models import build_model

    kwargs: dict[str, Any] = {"num_classes": 10, "T": T, "in_channels": in_channels}
    if name != "resnet19":
        kwargs["image_size"] = image_size
    return build_model(name, **kwargs)


def _subset(data, train_idx: torch.Tensor, test_count: int):
    """A :class:`DataSet` with the training images ``train_idx`` and the first ``test_count`` test
    images (normalisation statistics of the full training set kept)."""
    from ndsnn_triton.train import DataSet, ImageSplit

    train = ImageSplit(data.train.images[train_idx], data.train.labels[train_idx])
    test = ImageSplit(data.test.images[:test_count], data.test.labels[:test_count])
    return DataSet(data.name, train, test, data.num_classes, data.mean, data.std, data.augment)


def _time_steps(model: torch.nn.Module, data, batch: int, steps: int) -> tuple[float, float]:
    """Process CPU seconds of one training step (forward over T, backward, SGD) and of one eval
    forward, on a copy of ``model`` (one warm-up step not counted)."""
    from ndsnn_triton.nn import reset_net
    from ndsnn_triton.train import BatchLoader
    from ndsnn_triton.train.trainer import forward_backward

    probe = copy.deepcopy(model)
    opt = torch.optim.SGD(probe.parameters(), lr=0.01, momentum=0.9)
    loader = BatchLoader(data, "train", batch, True, SEED)
    it = loader.epoch(0)
    probe.train()
    times = []
    for _ in range(steps + 1):
        x, y = next(it)
        t0 = time.process_time()
        forward_backward(probe, probe, opt, x, y, False, False)
        opt.step()
        reset_net(probe)
        times.append(time.process_time() - t0)
    probe.eval()
    x, _ = next(it)
    t0 = time.process_time()
    with torch.no_grad():
        probe(x)
    reset_net(probe)
    eval_s = time.process_time() - t0
    return sum(times[1:]) / steps, eval_s


def _train_accuracy(run: Path, last_fraction: float = 0.1) -> float | None:
    """Training accuracy (train mode, on the batches as they were trained) over the last
    ``last_fraction`` of the logged steps, from the trainer's ``log.jsonl``."""
    path = run / "log.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    last = records[-1]["step"]
    cut = last - max(1, int(last_fraction * (last + 1)))
    keep = [r for r in records if r["step"] > cut] or records[-1:]
    return sum(r["acc"] for r in keep) / len(keep)


def train_worker(name: str, runs: Path, cpu_minutes: float, small_epochs: int) -> dict[str, Any]:
    """Train ``name`` in this process within ``cpu_minutes`` of process CPU time; writes
    ``runs/name/{init.pt, final.pt, run.json}`` and the trainer's files. Returns ``run.json``."""
    from ndsnn_triton.backend import use_backend
    from ndsnn_triton.sparse import build_method
    from ndsnn_triton.train import TrainConfig, Trainer, load_dataset

    torch.set_num_threads(1)
    budget = cpu_minutes * 60.0
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    for stale in ("checkpoint.pt", "checkpoint.prev.pt", "run.json", "final.pt"):
        (run / stale).unlink(missing_ok=True)
    batch = BATCH[name]
    with use_backend("torch"):
        data = load_dataset(DATASET)
        torch.manual_seed(SEED)
        model = _build(name, data.image_size, data.in_channels)
        torch.save({"model": model.state_dict()}, run / "init.pt")
        step_s, eval_s = _time_steps(model, data, batch, 2)
        spent = time.process_time()
        epochs = small_epochs if name == "small" else 1
        # Final test evaluation (every epoch for the small model) gets ~8 % of the budget.
        test_count = int(0.08 * budget / epochs / (eval_s / batch))
        test_count = max(256, min(len(data.test), test_count // batch * batch))
        evals = epochs * math.ceil(test_count / batch) * eval_s
        steps_total = int(SAFETY * (budget - spent - evals) / step_s)
        steps_per_epoch = max(8, steps_total // epochs)
        generator = torch.Generator().manual_seed(SEED)
        train_idx = torch.randperm(len(data.train), generator=generator)
        train_idx = train_idx[: min(len(data.train), steps_per_epoch * batch)]
        steps_per_epoch = math.ceil(len(train_idx) / batch)
        steps = steps_per_epoch * epochs
        subset = _subset(data, train_idx, test_count)
        delta_t = max(1, steps // 40)
        method = build_method("ndsnn", density=1.0 - SPARSITY, seed=SEED, delta_t=delta_t)
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch,
            seed=SEED,
            log_every=max(1, steps // 200),
            progress=False,
        )
        run_info = {"model": name, "T": T}
        trainer = Trainer(model, method, subset, config, run, "cpu", run_info)
        t0 = time.process_time()
        metrics = trainer.fit()
        train_cpu = time.process_time() - t0
        torch.save({"model": model.state_dict()}, run / "final.pt")
    record = {
        "model": name,
        "dataset": DATASET,
        "method": "ndsnn",
        "method_config": method.config(),
        "sparsity": SPARSITY,
        "T": T,
        "batch": batch,
        "seed": SEED,
        "steps": steps,
        "epochs": epochs,
        "train_samples": len(train_idx),
        "epochs_of_full_train_set": steps * batch / len(data.train),
        "test_samples": test_count,
        "cpu_budget_s": budget,
        "calibration": {"train_step_cpu_s": step_s, "eval_batch_cpu_s": eval_s},
        "cpu_s_train": train_cpu,
        "cpu_s_total": time.process_time(),
        "train_acc": _train_accuracy(run),
        "test_acc": metrics["test_acc"],
        "best_test_acc": metrics["best_test_acc"],
        "eval_history": [
            {k: r[k] for k in ("step", "epoch", "test_acc", "test_loss", "density")}
            for r in trainer.eval_history
        ],
        "final_density": metrics["density"],
        "torch_threads": torch.get_num_threads(),
    }
    (run / "run.json").write_text(json.dumps(record, indent=1))
    return record


def _probe_batches(
    data, split: str, batch: int, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of ``split``: training batches shuffled as epoch 0 of a
    loader seeded ``SEED + 1`` (the same batches at init and after training), test batches in
    order."""
    from ndsnn_triton.train import BatchLoader

    loader = BatchLoader(data, split, batch, split == "train", SEED + 1)
    batches = []
    for x, y in loader.epoch(0):
        batches.append((x, y))
        if len(batches) == count:
            break
    return batches


def measure_worker(name: str, runs: Path) -> dict[str, Any]:
    """Measure the spike structure of run ``runs/name`` at init and after training, in train and
    eval mode; writes ``runs/name/structure.json`` and returns it."""
    from ndsnn_triton.backend import use_backend
    from ndsnn_triton.profiler.spike_structure import spike_structure
    from ndsnn_triton.train import load_dataset

    torch.set_num_threads(1)
    run = runs / name
    info = json.loads((run / "run.json").read_text())
    t0 = time.process_time()
    out: dict[str, Any] = {}
    with use_backend("torch"):
        data = load_dataset(DATASET)
        train_batches = _probe_batches(data, "train", info["batch"], TRAIN_MEASURE_BATCHES)
        test_batches = _probe_batches(data, "test", info["batch"], EVAL_MEASURE_BATCHES)
        model = _build(name, data.image_size, data.in_channels)
        for stage, file in (("init", "init.pt"), ("trained", "final.pt")):
            state = torch.load(run / file, map_location="cpu", weights_only=True)["model"]
            out[stage] = {}
            # Reload before each probe: a train-mode forward moves batch-norm running statistics.
            for mode, batches in (("eval", test_batches), ("train", train_batches)):
                model.load_state_dict(state)
                out[stage][mode] = spike_structure(model, batches, train=mode == "train")
    record = {
        "probe": {
            "train": f"{TRAIN_MEASURE_BATCHES} training-set batches (shuffled, seed {SEED + 1}), train "
            "mode, forward + backward, gradients not applied",
            "eval": f"the first {EVAL_MEASURE_BATCHES} test batches, eval mode, no gradients",
            "batch": info["batch"],
        },
        "structure": out,
        "cpu_s_measure": time.process_time() - t0,
    }
    (run / "structure.json").write_text(json.dumps(record, indent=1))
    return record


def _spawn(flag: str, models: list[str], args: argparse.Namespace) -> None:
    """Run ``--flag MODEL`` for each model in its own process, ``args.jobs`` at a time (logs in
    ``runs/MODEL.{flag}.log``); ``SystemExit`` naming the failed ones."""
    args.runs.mkdir(parents=True, exist_ok=True)
    pending = list(models)
    running: list[tuple[str, subprocess.Popen, Any]] = []
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            model = pending.pop(0)
            log = open(args.runs / f"{model}.{flag}.log", "w")  # noqa: SIM115 - closed below
            cmd = [
                sys.executable,
                "-m",
                "bench.spike_structure",
                f"--{flag}",
                model,
                "--runs",
                str(args.runs),
                "--cpu-minutes",
                str(args.cpu_minutes),
                "--small-cpu-minutes",
                str(args.small_cpu_minutes),
                "--small-epochs",
                str(args.small_epochs),
            ]
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running.append((model, proc, log))
        time.sleep(1.0)
        for item in list(running):
            model, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode:
                    failed.append(model)
    if failed:
        raise SystemExit(
            f"bench.spike_structure: --{flag} failed for {', '.join(failed)} "
            f"(see {args.runs}/<model>.{flag}.log)"
        )


def rederive_forward(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a recorded result file) with each layer's forward work factor, and its lane count,
    derived from its recorded map counts by the current forward rule
    (:mod:`ndsnn_triton.kernels.work`: the live (sample, channel) maps where the forward skips
    silent maps, every map elsewhere); fields of measures the monitor no longer takes dropped.
    The primary counts are untouched."""
    from ndsnn_triton.kernels.work import forward_skips_silent_maps

    for row in doc["results"]:
        for modes in row["structure"].values():
            for layers in modes.values():
                for layer in layers:
                    counts = layer["counts"]
                    _, oh, ow = layer["output_shape"]
                    maps = counts["maps"]
                    if forward_skips_silent_maps(oh * ow):
                        maps -= counts["silent_maps"]
                    counts["lanes"] = maps * oh * ow
                    layer["work"]["forward"] = counts["lanes"] / counts["dense"]
                    for key in ("sample_block", "silent_sample_blocks"):
                        layer.pop(key, None)
                    for key in ("silent_sample_blocks", "sample_blocks"):
                        counts.pop(key, None)
    return doc


def result_row(name: str, runs: Path) -> dict[str, Any]:
    """The result row of model ``name``: its ``run.json`` and ``structure.json`` together."""
    run = runs / name
    info = json.loads((run / "run.json").read_text())
    structure = json.loads((run / "structure.json").read_text())
    return {"case": name, **info, "torch_threads_per_process": 1, **structure}


FIELDS = (
    ("rate", "spike rate", "tab:blue", "o", "-"),
    ("silent_words32", "silent 32-element words", "tab:orange", "s", "-"),
    ("silent_maps", "silent (sample, channel) maps", "tab:green", "^", "-"),
    ("dead_channels", "dead channels (silent over the batch)", "tab:purple", "D", ":"),
)


def _training_summary(row: dict[str, Any]) -> str:
    """How long and on what the model trained, in words."""
    full = row["epochs_of_full_train_set"]
    if row["epochs"] > 1:
        data = f"{row['epochs']} epochs of a {row['train_samples']}-image subset ({full:.2f} passes' worth)"
    else:
        data = (
            f"one pass over {row['train_samples']} images ({full:.2f} epochs of the training set)"
        )
    return (
        f"NDSNN to {row['sparsity']:.0%} sparsity over {row['steps']} steps of batch {row['batch']} = "
        f"{data}, {row['cpu_s_train'] / 60:.0f} CPU min"
    )


def plot(row: dict[str, Any], path: Path) -> Path:
    """Per-layer spike rate and silent fractions of one model: a 2×2 grid of panels
    (initialisation / trained × train / eval mode); writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = (("init", "at initialisation (dense)"), ("trained", "after training"))
    modes = (("train", "train mode"), ("eval", "eval mode"))
    layers = row["structure"]["init"]["eval"]
    names = [f"{r['name']}{' (analog)' if not r['spike_input'] else ''}" for r in layers]
    x = list(range(len(names)))
    width = max(12.0, 0.45 * len(names) + 6)
    fig, axes = plt.subplots(2, 2, figsize=(width * 1.5, 10.5), sharex=True, sharey=True)
    for i, (stage, stage_label) in enumerate(stages):
        for j, (mode, mode_label) in enumerate(modes):
            ax = axes[i][j]
            rows = row["structure"][stage][mode]
            for key, label, color, marker, style in FIELDS:
                ax.plot(
                    x,
                    [r[key] for r in rows],
                    marker=marker,
                    ls=style,
                    color=color,
                    label=label,
                    ms=5,
                    lw=1.4,
                )
            ax.plot(
                x,
                [r["work"]["forward"] for r in rows],
                marker="x",
                ls="-.",
                color="black",
                label="forward work factor (live maps run / all)",
                ms=5,
                lw=1.0,
            )
            title = f"{row['model']} {stage_label}, {mode_label}"
            if stage == "trained":
                title += f" (density {row['final_density']:.3f}, test acc {row['test_acc']:.3f})"
            ax.set_title(title, fontsize=10)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("fraction of each layer's input")
            if i == 1:
                ax.set_xticks(x)
                ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9, frameon=False)
    caption = (
        f"{row['model']} on Fashion-MNIST (padded to 32×32), T={row['T']}, "
        f"{_training_summary(row)}; final test accuracy {row['test_acc']:.3f} on "
        f"{row['test_samples']} test images, training accuracy (last 10% of steps) "
        f"{row['train_acc']:.3f}.\n"
        f"Train mode: {row['probe']['train']}. Eval mode: {row['probe']['eval']}.\n"
        "Per layer input [N, C, H, W], N = T·batch: word = 32 consecutive elements in memory; "
        "map = one (sample, channel) plane; dead = channel silent in all N samples; the forward "
        "work factor is 1 − silent maps where the forward skips silent maps (outputs ≥ 4 "
        "positions), else 1.\n"
        "Layers marked analog take non-binary input (the image; averaged rates). At initialisation, "
        "eval mode uses batch-norm running statistics not yet fitted to the data, so few neurons fire."
    )
    if row["test_acc"] <= 0.15:
        caption += (
            "\nTest accuracy is at chance (10 classes): this run did not learn in its budget, so "
            "'after training' shows a pruned but untrained network."
        )
        last = row["structure"]["trained"]["train"][-1]
        if last["rate"] == 0:
            caption += f" The input of {last['name']} (the output layer) never spiked."
    fig.text(0.01, 0.005, caption, fontsize=8.5, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.11, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=85)
    plt.close(fig)
    return path


def _cpu_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cpu-minutes must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"--cpu-minutes must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.spike_structure``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.spike_structure", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=OUT, help="result JSON (plots beside it)")
    parser.add_argument(
        "--cpu-minutes",
        type=_cpu_minutes,
        default=28.0,
        help="process CPU minutes per big model's training run (default 28)",
    )
    parser.add_argument(
        "--small-cpu-minutes",
        type=_cpu_minutes,
        default=12.0,
        help="process CPU minutes of the small model's run (default 12)",
    )
    parser.add_argument(
        "--small-epochs", type=int, default=8, help="epochs of the small model (default 8)"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--runs", type=Path, default=Path("/tmp/ss_runs"), help="folder of the training runs"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="measure the runs already in --runs; do not train"
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (default 2)")
    parser.add_argument("--worker", choices=MODELS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=MODELS, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.environment import environment
    from bench.result_file import merge_into_file

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.small_epochs < 1:
        parser.error(f"--small-epochs must be at least 1, got {args.small_epochs}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.worker is not None:
        minutes = args.small_cpu_minutes if args.worker == "small" else args.cpu_minutes
        train_worker(args.worker, args.runs, minutes, args.small_epochs)
        return 0
    if args.measure is not None:
        measure_worker(args.measure, args.runs)
        return 0
    models = list(dict.fromkeys(args.models))
    if args.reuse:
        missing = [m for m in models if not (args.runs / m / "run.json").exists()]
        if missing:
            raise SystemExit(
                f"bench.spike_structure --reuse: no finished run of {', '.join(missing)} in "
                f"{args.runs} (train without --reuse first)"
            )
    else:
        _spawn("worker", models, args)
    _spawn("measure", models, args)
    rows = [result_row(m, args.runs) for m in models]
    merge_into_file(args.out, environment(device="cpu"), rows)
    for r in rows:
        png = plot(r, args.out.with_name(f"{args.out.stem}_{r['model']}.png"))
        print(
            f"{r['model']}: {r['steps']} steps of batch {r['batch']}, {r['cpu_s_train']:.0f} CPU s, "
            f"train acc {r['train_acc']:.3f}, test acc {r['test_acc']:.3f}, density "
            f"{r['final_density']:.4f} -> {png}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
