"""Checkpoints: one torch file, written atomically (temp file, fsync, rename).

A checkpoint holds the model (weights and masks), optimizer, LR scheduler, method state, RNG
states, the position to continue from, and the library version that wrote it.
"""

from __future__ import annotations

import io
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ndsnn_triton._version import __version__

FORMAT = "ndsnn-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or from an incompatible version."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint before the latest one is kept (``checkpoint.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


_SAVES = 0


def fault_point(variable: str, count: int) -> None:
    """Fault injection for crash tests: SIGKILL this process when ``$variable == count``.

    Unset in normal use. ``NDSNN_FAULT_KILL_AFTER_STEP=k`` kills the trainer right after iteration
    k; ``NDSNN_FAULT_KILL_IN_CHECKPOINT=n`` kills it halfway through writing its n-th checkpoint.
    """
    value = os.environ.get(variable)
    if value is not None and int(value) == count:
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically, keeping the checkpoint it replaces.

    The new file is written and fsynced under a temporary name, the current checkpoint is renamed
    to :func:`previous_path`, then the new one takes its name: a crash at any point leaves a
    complete checkpoint behind (the current one, or the previous one).
    """
    global _SAVES
    _SAVES += 1
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": __version__, **payload}, buffer)
    data = buffer.getvalue()
    with open(tmp, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        fault_point("NDSNN_FAULT_KILL_IN_CHECKPOINT", _SAVES)
        f.write(data[len(data) // 2 :])
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, previous_path(path))
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
