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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndsnn", description="Sparse spiking neural network training toolkit."
    )
    parser.add_argument("--version", action="version", version=f"ndsnn_triton {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
