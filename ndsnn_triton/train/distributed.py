"""Data-parallel helpers: process group from torchrun's environment, rank checks, mask checksums.

``torchrun --nproc_per_node=N ndsnn train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
trainer then wraps the model in DistributedDataParallel, shards every global batch across ranks,
and logs and checkpoints on rank 0 only. Masks stay identical on every rank by construction:
initial masks come from generators seeded by (seed, step, layer); drop scores are weight
magnitudes (identical weights); growth scores are gradients read after DDP's all-reduce; random
growth uses the same seeded generators. ``check_masks`` all-gathers per-layer checksums after each
update and fails loudly if ranks ever disagree.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from ndsnn_triton.nn.layers import masked_layers


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if enabled():
        dist.barrier()


def init_from_env() -> torch.device | None:
    """Join the process group described by torchrun's variables; returns this rank's device.

    Returns None (and does nothing) when ``WORLD_SIZE`` is unset or 1.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or enabled():
        return None
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def mask_checksums(model: nn.Module) -> torch.Tensor:
    """One float64 checksum per masked layer: ``Σ (position + 1) · mask`` (order-sensitive)."""
    sums = []
    for _, layer in masked_layers(model):
        flat = layer.mask.reshape(-1)
        positions = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64)
        sums.append((positions * flat).sum())
    return torch.stack(sums)


def assert_masks_agree(model: nn.Module, step: int) -> None:
    """All-gather mask checksums; raise ``RuntimeError`` naming the first layer where ranks differ."""
    if not enabled():
        return
    mine = mask_checksums(model)
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    stacked = torch.stack(gathered)
    differs = (stacked != stacked[0]).any(dim=0)
    if bool(differs.any()):
        names = [name for name, _ in masked_layers(model)]
        first = names[int(differs.nonzero()[0])]
        raise RuntimeError(
            f"masks diverged across ranks after step {step}: layer {first} (checksums {stacked[:, int(differs.nonzero()[0])].tolist()})"
        )
