"""The ``ndsnn`` command.

``ndsnn step``: one training step of a sparse spiking model on random input, printing each
masked layer's weight density and measured input spike rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import torch

from ndsnn_triton._version import __version__
from ndsnn_triton.backend import BACKENDS, get_backend, use_backend
from ndsnn_triton.models import MODELS, build_model
from ndsnn_triton.nn import masked_layers, reset_net, temporal_cross_entropy
from ndsnn_triton.profiler import SpikeRateMonitor
from ndsnn_triton.sparse import check_density, random_masks


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _density(text: str) -> float:
    try:
        return check_density(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device cuda asked for, but CUDA is not available")
    return device


def _add_step_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "step",
        help="one training step of a sparse spiking model on random input",
        description="Run one SGD step of a sparse spiking model on random images and print each "
        "masked layer's density and measured input spike rate.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="vgg16")
    p.add_argument(
        "--density",
        type=_density,
        default=0.1,
        help="kept fraction of weights, in (0, 1] (default 0.1)",
    )
    p.add_argument("--batch", type=_positive_int, default=8)
    p.add_argument("--T", type=_positive_int, default=5, help="timesteps (default 5)")
    p.add_argument("--classes", type=_positive_int, default=10)
    p.add_argument("--image-size", type=_positive_int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="op backend (default: NDSNN_BACKEND or auto)",
    )
    p.add_argument("--device", type=_device, default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_step)


def _cmd_step(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    kwargs = {"num_classes": args.classes, "T": args.T}
    if args.model == "vgg16":
        kwargs["image_size"] = args.image_size
    model = build_model(args.model, **kwargs).to(args.device)
    random_masks(model, args.density, seed=args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device)
    labels = torch.randint(0, args.classes, (args.batch,), device=args.device)

    with use_backend(args.backend or get_backend()):
        start = time.perf_counter()
        with SpikeRateMonitor(model) as monitor:
            out = model(images)
            loss = temporal_cross_entropy(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for _, layer in masked_layers(model):
            layer.apply_mask()
        reset_net(model)
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    loss_value = loss.detach().item()

    stats = monitor.stats()
    total = sum(s.weights for s in stats)
    kept = sum(s.weights * s.density for s in stats)
    result = {
        "model": args.model,
        "device": str(args.device),
        "batch": args.batch,
        "T": args.T,
        "loss": loss_value,
        "step_seconds": seconds,
        "prunable_weights": total,
        "density": kept / total,
        "layers": [s.__dict__ for s in stats],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"ndsnn {__version__} | {args.model} | T={args.T} batch={args.batch} | device {args.device}"
    )
    print(f"{'layer':<28} {'kind':<6} {'weights':>10} {'density':>8} {'input':>7} {'rate':>8}")
    for s in stats:
        kind = "spikes" if s.spike_input else "analog"
        print(
            f"{s.name:<28} {s.kind:<6} {s.weights:>10,} {s.density:>8.4f} {kind:>7} {s.input_rate:>8.4f}"
        )
    print(
        f"total: {total:,} prunable weights, density {kept / total:.4f}; loss {loss_value:.4f}; step {seconds:.2f} s"
    )
    return 0


_METHOD_OPTIONS = {
    # CLI option -> method constructor argument
    "distribution": "distribution",
    "dense_first": "dense_first",
    "dense_last": "dense_last",
    "d_init": "d_init",
    "t0_fraction": "t0_fraction",
    "t_end_fraction": "t_end_fraction",
    "delta_t": "delta_t",
    "zeta": "zeta",
    "zeta_end": "zeta_end",
    "stop_fraction": "stop_fraction",
    "prune_rate": "prune_rate",
    "rewind_epoch": "rewind_epoch",
    "rounds": "rounds",
    "min_kept_per_output": "min_kept_per_output",
}


def _sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"sparsity must lie in [0, 1) (0.99 keeps 1% of weights), got {text}"
        )
    return value


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from ndsnn_triton.sparse import DISTRIBUTIONS, METHODS
    from ndsnn_triton.train import DATASETS

    p = sub.add_parser(
        "train",
        help="train a sparse spiking network with one sparse-training method",
        description="Train a spiking network with NDSNN, LTH, SET, RigL, static or dense training; "
        "writes log.jsonl, log.csv, eval.jsonl, checkpoint.pt and metrics.json to --out.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    p.add_argument("--method", choices=sorted(METHODS), default="ndsnn")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument(
        "--data-root", default=None, help="folder of the data set's files (not needed for digits)"
    )
    p.add_argument(
        "--sparsity",
        type=_sparsity,
        default=0.9,
        help="final fraction of pruned weights (default 0.9)",
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=10, help="epochs per run (LTH: of round 0)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument(
        "--T", type=_positive_int, default=4, help="timesteps (default 4; LTH-SNN uses 5)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels (0 = off)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument(
        "--resume-from",
        default=None,
        metavar="CHECKPOINT",
        help="continue from this checkpoint file (e.g. checkpoint.prev.pt)",
    )
    p.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip iterations with a non-finite loss or gradient (counted) instead of stopping",
    )
    p.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay ordinary iterations from a captured CUDA graph, captured again after each "
        "mask update (default: on for CUDA in one process; on a CPU a replay tape stands in, "
        "for checking, not speed)",
    )
    p.add_argument(
        "--check-masks",
        action="store_true",
        help="multi-GPU debug: compare mask checksums across ranks after every update",
    )
    g = p.add_argument_group("method parameters (defaults: each method's own)")
    g.add_argument("--distribution", choices=DISTRIBUTIONS, default=None)
    g.add_argument(
        "--dense-first",
        action="store_true",
        default=None,
        help="keep the first maskable layer dense",
    )
    g.add_argument(
        "--dense-last", action="store_true", default=None, help="keep the last maskable layer dense"
    )
    g.add_argument("--d-init", type=float, default=None, help="ndsnn: initial density")
    g.add_argument(
        "--t0-fraction", type=float, default=None, help="ndsnn: start of the density decrease"
    )
    g.add_argument(
        "--t-end-fraction", type=float, default=None, help="ndsnn: end of the density decrease"
    )
    g.add_argument(
        "--delta-t", type=int, default=None, help="ndsnn/set/rigl: iterations between mask updates"
    )
    g.add_argument("--zeta", type=float, default=None, help="ndsnn/set/rigl: initial drop fraction")
    g.add_argument("--zeta-end", type=float, default=None, help="ndsnn: final drop fraction")
    g.add_argument(
        "--stop-fraction",
        type=float,
        default=None,
        help="set/rigl: fraction of the run with updates",
    )
    g.add_argument("--prune-rate", type=float, default=None, help="lth: fraction pruned per round")
    g.add_argument("--rewind-epoch", type=int, default=None, help="lth: epoch rewound to")
    g.add_argument("--rounds", type=int, default=None, help="lth: number of pruning rounds")
    g.add_argument(
        "--min-kept-per-output",
        type=float,
        default=None,
        help="fewest weights each sparse layer keeps, per output unit (default 1; 0: no floor)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--log-every", type=_positive_int, default=1)
    r.add_argument("--eval-every", type=_positive_int, default=1)
    r.add_argument(
        "--checkpoint-every", type=int, default=0, help="iterations between mid-epoch checkpoints"
    )
    r.add_argument(
        "--max-steps",
        type=_positive_int,
        default=None,
        help="stop after this many iterations (resumable)",
    )
    r.add_argument("--device", type=_device, default="auto")
    r.add_argument("--backend", choices=BACKENDS, default=None)
    r.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on CUDA only)",
    )
    r.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import inspect

    from ndsnn_triton.sparse import METHODS, build_method
    from ndsnn_triton.sparse.methods import SparseMethod
    from ndsnn_triton.train import TrainConfig, Trainer, load_dataset

    method_cls = METHODS[args.method]
    params = inspect.signature(method_cls.__init__).parameters
    accepted = set(params)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted |= set(inspect.signature(SparseMethod.__init__).parameters)  # passed on to it
    if method_cls.name == "dense":
        accepted -= {"distribution", "min_kept_per_output"}  # nothing is pruned
    kwargs = {}
    for option, arg in _METHOD_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if arg not in accepted:
            raise SystemExit(
                f"ndsnn train: --{option.replace('_', '-')} does not apply to method {args.method}"
            )
        kwargs[arg] = value
    if args.method == "dense":
        if args.sparsity not in (0.0, 0.9):
            raise SystemExit("ndsnn train: method dense trains every weight; drop --sparsity")
    else:
        if args.sparsity == 0.0:
            raise SystemExit(f"ndsnn train: method {args.method} needs --sparsity above 0")
        kwargs["density"] = 1.0 - args.sparsity
    kwargs.setdefault("seed", args.seed)
    try:
        method = build_method(args.method, **kwargs)
        data = load_dataset(args.dataset, args.data_root)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"ndsnn train: {err}") from None
    torch.manual_seed(args.seed)
    model_kwargs = {"num_classes": data.num_classes, "T": args.T, "in_channels": data.in_channels}
    if args.model != "resnet19":
        model_kwargs["image_size"] = data.image_size
    try:
        model = build_model(args.model, **model_kwargs)
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=args.nesterov,
            amp=args.amp,
            seed=args.seed,
            cutout=args.cutout,
            log_every=args.log_every,
            eval_every=args.eval_every,
            checkpoint_every=args.checkpoint_every,
            max_steps=args.max_steps,
            progress=not args.no_progress,
            skip_nonfinite=args.skip_nonfinite,
            check_masks=args.check_masks,
            cuda_graphs=args.cuda_graphs,
        )
    except ValueError as err:
        raise SystemExit(f"ndsnn train: {err}") from None
    run_info = {"model": args.model, "T": args.T, "model_kwargs": model_kwargs}
    from ndsnn_triton.train import distributed
    from ndsnn_triton.train.checkpoint import CheckpointError

    device = distributed.init_from_env() or args.device
    with use_backend(args.backend or get_backend()):
        try:
            trainer = Trainer(model, method, data, config, args.out, device, run_info)
        except ValueError as err:  # a setting the device or the process group cannot take
            raise SystemExit(f"ndsnn train: {err}") from None
        try:
            metrics = trainer.fit(
                resume=args.resume or args.resume_from is not None, checkpoint=args.resume_from
            )
        except (CheckpointError, FileExistsError, FloatingPointError) as err:
            raise SystemExit(f"ndsnn train: {err}") from None
    if not distributed.is_main():
        return 0
    if metrics.get("completed") is False:
        print(f"stopped after {metrics['stopped_at_step']} iterations; continue with --resume")
        return 0
    print(
        f"{args.method} on {data.name} ({args.model}, T={args.T}): test accuracy {metrics['test_acc']:.4f}, "
        f"density {metrics['density']:.4f}, {metrics['steps']} iterations in {metrics['wall_time_s']:.1f} s -> {args.out}"
    )
    return 0


def _epochs(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"epochs must be a positive integer, got {text}")
    return value


def _model_factory(text: str) -> tuple[str, object]:
    """``--model module.path:factory``: the spec and the callable it names."""
    from ndsnn_triton.profiler.user_model import load_factory

    try:
        return text, load_factory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _model_kwargs(text: str) -> dict:
    from ndsnn_triton.profiler.user_model import parse_model_kwargs

    try:
        return parse_model_kwargs(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _input_shape(text: str) -> tuple[int, ...]:
    from ndsnn_triton.profiler.user_model import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="analytic training-cost comparison of all methods and the NDSNN/LTH claim check",
        description="Integrate each method's schedule into training FLOPs for VGG-16 and ResNet-19 "
        "(or any model: --model module.path:factory), check the paper's NDSNN/LTH claim under "
        "every LTH protocol, convention and layer-wise distribution, and write report.md, "
        "report.json, CSV files and plots to --out.",
    )
    p.add_argument("--out", default="report", help="output folder (default ./report)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--models", nargs="+", choices=["vgg16", "resnet19"], default=["vgg16", "resnet19"]
    )
    which.add_argument(
        "--model",
        type=_model_factory,
        default=None,
        metavar="MODULE:FACTORY",
        help="any importable callable returning an nn.Module (e.g. mypkg.nets:my_cnn): report "
        "its cost; no published NDSNN/LTH claim is compared",
    )
    p.add_argument(
        "--model-kwargs",
        type=_model_kwargs,
        default=None,
        metavar="JSON",
        help="--model: keyword arguments of the factory, a JSON object (e.g. '{\"width\": 8}')",
    )
    p.add_argument(
        "--input-shape",
        type=_input_shape,
        default=None,
        metavar="C,H,W",
        help="--model: one sample's input shape (default 3,32,32); traced as [B, C, H, W]",
    )
    p.add_argument(
        "--time-first",
        type=_positive_int,
        default=None,
        metavar="T",
        help="--model: the model takes [T, B, C, H, W] input with T time steps (default: "
        "[B, C, H, W], the model repeats over time itself, as the built-in models do)",
    )
    p.add_argument("--sparsities", nargs="+", type=_sparsity, default=[0.9, 0.95, 0.98, 0.99])
    p.add_argument(
        "--epochs", type=_epochs, default=300, help="E: epochs of a training run (default 300)"
    )
    p.add_argument("--rewind-epoch", type=int, default=20)
    p.add_argument("--prune-rate", type=float, default=0.25, help="LTH: fraction pruned per round")
    p.add_argument("--batch", type=_positive_int, default=128)
    p.add_argument(
        "--dataset-size",
        type=_positive_int,
        default=50_000,
        help="training images (CIFAR-10: 50000)",
    )
    p.add_argument(
        "--T",
        type=_positive_int,
        default=None,
        help="timesteps of the built-in models (default 5; --model: see --time-first)",
    )
    p.add_argument(
        "--classes",
        type=_positive_int,
        default=None,
        help="classes of the built-in models (default 10; --model: see --model-kwargs)",
    )
    p.add_argument(
        "--spike-rate",
        type=float,
        default=0.1,
        help="assumed input spike rate of spike layers (snn)",
    )
    p.add_argument(
        "--spike-rates-from",
        default=None,
        metavar="RUN_DIR",
        help="use the mean measured rates of a training run of the same model",
    )
    p.add_argument("--d-init", type=float, default=1.0, help="NDSNN initial density")
    p.add_argument("--t0-fraction", type=float, default=0.0)
    p.add_argument("--t-end-fraction", type=float, default=1.0)
    p.add_argument("--delta-t", type=_positive_int, default=1000, help="NDSNN update interval")
    p.add_argument(
        "--min-kept-per-output",
        type=float,
        default=1.0,
        help="fewest weights each sparse layer keeps, per output unit (0: no floor)",
    )
    p.add_argument(
        "--energy", action="store_true", help="add the energy estimate (4.6 pJ/MAC, 0.9 pJ/AC)"
    )
    p.add_argument(
        "--step-times",
        default=None,
        metavar="FILE",
        help="measured step times (bench/results/step_times-*.json): add GPU seconds per run and "
        "the wall-clock NDSNN/LTH ratio",
    )
    p.add_argument(
        "--spike-structure",
        default=None,
        metavar="FILE",
        help="spike structure of the kernel convention: a spike-structure JSON file holding every "
        "reported model, or 'iid' for the i.i.d. spike model at --spike-rate (default: the "
        "recorded bench/results/spike_structure.json for vgg16/resnet19 when it exists, else iid)",
    )
    p.add_argument(
        "--spike-structure-state",
        default="trained/train",
        metavar="STATE/MODE",
        help="which measurement of --spike-structure to use (default trained/train; also "
        "init/train, trained/eval, init/eval)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_report)


_USER_MODEL_ONLY = {
    "model_kwargs": "--model-kwargs",
    "input_shape": "--input-shape",
    "time_first": "--time-first",
}
_BUILTIN_ONLY = {
    "T": "--T (a model from --model runs its own timesteps: set them in --model-kwargs, or "
    "--time-first T for a model that takes [T, B, ...] input)",
    "classes": "--classes (set a model's classes in --model-kwargs)",
}


def _check_report_options(args: argparse.Namespace) -> None:
    """Options of one kind of model only: a clear error when given with the other kind."""
    if args.model is None:
        for key, flag in _USER_MODEL_ONLY.items():
            if getattr(args, key) is not None:
                raise SystemExit(f"ndsnn report: {flag} applies only with --model MODULE:FACTORY")
    else:
        for key, flag in _BUILTIN_ONLY.items():
            if getattr(args, key) is not None:
                raise SystemExit(f"ndsnn report: with --model, {flag} does not apply")
    if args.spike_rates_from and args.model is None and len(args.models) != 1:
        raise SystemExit(
            "ndsnn report: --spike-rates-from needs exactly one --models entry (the run's model)"
        )


def _cmd_report(args: argparse.Namespace) -> int:
    from ndsnn_triton.profiler.claim import Assumptions
    from ndsnn_triton.profiler.report import build_report, claim_table, verdict_lines
    from ndsnn_triton.profiler.run_profile import RunFolderError, mean_spike_rates

    _check_report_options(args)
    rate: float | dict[str, float] = args.spike_rate
    if args.spike_rates_from:
        try:
            rate = mean_spike_rates(args.spike_rates_from)
        except RunFolderError as err:
            raise SystemExit(f"ndsnn report: {err}") from None
    try:
        assumptions = Assumptions(
            epochs=args.epochs,
            rewind_epoch=args.rewind_epoch,
            prune_rate=args.prune_rate,
            batch=args.batch,
            dataset_size=args.dataset_size,
            T=args.T or 5,
            num_classes=args.classes or 10,
            spike_rate=rate,
            d_init=args.d_init,
            t0_fraction=args.t0_fraction,
            t_end_fraction=args.t_end_fraction,
            delta_t=args.delta_t,
            min_kept_per_output=args.min_kept_per_output,
            seed=args.seed,
        )
        if args.model is None:
            report = build_report(
                args.out,
                args.models,
                args.sparsities,
                assumptions,
                args.energy,
                args.spike_rates_from,
                args.step_times,
                args.spike_structure,
                args.spike_structure_state,
            )
        else:
            report = _report_user_model(args, assumptions)
    except ValueError as err:
        raise SystemExit(f"ndsnn report: {err}") from None
    from ndsnn_triton.profiler.claim import ClaimRow

    rows = [
        ClaimRow(**{k: v for k, v in r.items() if k != "within_tolerance"})
        for r in report["claim_check"]
    ]
    print("assumptions: " + ", ".join(f"{k}={v}" for k, v in report["assumptions"].items()))
    print()
    print("\n".join(claim_table(rows, sorted(args.sparsities))))
    print()
    print(
        "\n".join(
            verdict_lines(report["verdict"], list(report["layers"]), report["paper"]["ratios"])
        )
    )
    from ndsnn_triton.profiler.report import kernel_summary_lines

    print()
    print("\n".join(kernel_summary_lines(report["kernel_work"])))
    if "measured" in report:
        from ndsnn_triton.profiler.report import measured_lines

        print()
        print("\n".join(measured_lines(report["measured"])))
    print(
        f"\nwrote {args.out}/report.md, report.json, CSV files and {len(report['figures'])} plots in {report['seconds']:.1f} s"
    )
    return 0


def _report_user_model(args: argparse.Namespace, assumptions) -> dict:
    """``--model``: build the model from its factory (seeded) and report it."""
    from ndsnn_triton.profiler.report import report_model
    from ndsnn_triton.profiler.user_model import DEFAULT_INPUT_SHAPE, build_from_factory

    spec, _ = args.model
    kwargs = args.model_kwargs or {}
    model = build_from_factory(spec, kwargs, seed=args.seed)
    return report_model(
        model,
        args.out,
        name=spec.rpartition(":")[2].rpartition(".")[2],
        input_shape=args.input_shape or DEFAULT_INPUT_SHAPE,
        time_steps=args.time_first,
        sparsities=args.sparsities,
        assumptions=assumptions,
        energy=args.energy,
        rates_source=args.spike_rates_from,
        step_times=args.step_times,
        source={"factory": spec, "kwargs": kwargs},
        spike_structure=args.spike_structure,
        structure_state=args.spike_structure_state,
    )


def _add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile", help="cost of a training run as logged, next to the analytic prediction"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `ndsnn train`")
    p.add_argument(
        "--spike-rate", type=float, default=0.1, help="assumed spike rate of the prediction"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from ndsnn_triton.profiler.run_profile import RunFolderError, format_profile, profile_run

    try:
        result = profile_run(args.run_dir, args.spike_rate)
    except (RunFolderError, ValueError) as err:
        raise SystemExit(f"ndsnn profile: {err}") from None
    print(json.dumps(result, indent=2) if args.json else format_profile(result))
    return 0


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _add_roofline_parser(sub: argparse._SubParsersAction) -> None:
    from ndsnn_triton.kernels.perf_model import GPUS

    p = sub.add_parser(
        "roofline",
        help="GPU time model of the sparse kernels: calibration and per-layer predictions "
        "(a model, not a measurement)",
        description="Print (or write) the kernels' time model: its constants fitted on recorded "
        "GPU runs with the error per case, and the predicted time of every launch of every "
        "spike-input VGG-16 and ResNet-19 layer beside the dense cuDNN path.",
    )
    p.add_argument("--out", default=None, help="write the markdown here instead of printing it")
    p.add_argument(
        "--gpu", choices=sorted(GPUS), default="H200", help="GPU to predict for (default H200)"
    )
    p.add_argument(
        "--dtype",
        choices=["bf16", "fp16", "fp32"],
        default="bf16",
        help="compute dtype of the layers (default bf16; weights stay fp32)",
    )
    p.add_argument(
        "--predictions",
        default=None,
        metavar="JSON",
        help="also write the benchmark cases' predictions here "
        "(bench/results/kernel_predictions-<gpu>.json)",
    )
    p.set_defaults(func=_cmd_roofline)


def _cmd_roofline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ndsnn_triton.profiler.roofline import predictions_document, render_markdown

    if args.predictions is not None:
        path = Path(args.predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(predictions_document(args.gpu), indent=1) + "\n")
        print(f"wrote {path} (model, not measurement)")
    text = render_markdown(args.gpu, _DTYPES[args.dtype])
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} (model, not measurement)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndsnn", description="Sparse spiking neural network training toolkit."
    )
    parser.add_argument("--version", action="version", version=f"ndsnn_triton {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_report_parser(sub)
    _add_train_parser(sub)
    _add_profile_parser(sub)
    _add_roofline_parser(sub)
    _add_step_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
