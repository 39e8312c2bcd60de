"""Checkpoints: one torch file, written atomically (temp file, fsync, rename).

A checkpoint holds the model (weights and masks), optimizer, LR scheduler, method state, RNG
states, the position to continue from, and the library version that wrote it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ndsnn_triton._version import __version__

FORMAT = "ndsnn-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or from an incompatible version."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a crash leaves the previous file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = {"format": FORMAT, "version": __version__, **payload}
    with open(tmp, "wb") as f:
        torch.save(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint; raises :class:`CheckpointError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"{path}: truncated or not a torch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ndsnn checkpoint (format tag {FORMAT!r} missing)")
    major = str(data.get("version", "")).split(".")[:2]
    if major != __version__.split(".")[:2]:
        raise CheckpointError(
            f"{path}: written by ndsnn_triton {data.get('version')}, incompatible with {__version__}"
        )
    return data


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
