"""Result files of the benchmarks: ``{"environment": {...}, "results": [row, ...]}``.

Each measured case is merged into its file as soon as it is measured, and the file is rewritten
atomically (a temporary file in the same folder, then ``os.replace``): a killed run keeps every
case measured before it, and a rerun of some cases replaces those rows and keeps the others.
A row's identity is its ``"case"`` field (rows of older files without one: their descriptive
fields, see :data:`IDENTITY_FIELDS`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: fields naming a case in rows written before rows carried ``"case"``
IDENTITY_FIELDS = (
    "kernel",
    "layer",
    "shape",
    "density",
    "spike_rate",
    "model",
    "config",
    "kind",
    "batch",
    "T",
    "impl",
)


def case_identity(row: dict[str, Any]) -> str:
    """The key under which ``row`` replaces an earlier row of the same case."""
    if "case" in row:
        return str(row["case"])
    return json.dumps({k: row[k] for k in IDENTITY_FIELDS if k in row}, sort_keys=True)


def merge_rows(old: Iterable[dict], new: Iterable[dict]) -> list[dict]:
    """``old`` with each row of the same identity as a ``new`` row replaced in place; the other
    new rows appended in order."""
    merged = {case_identity(r): r for r in old}
    for row in new:
        merged[case_identity(row)] = row
    return list(merged.values())


def read_rows(path: Path) -> list[dict]:
    """The rows of an existing result file ([] if there is none); ``ValueError`` if unreadable."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"result file {path} is not valid JSON ({err}); move it away") from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"result file {path} has no 'results' list; move it away")
    return rows


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``
    (readers see the old or the new file, never a partial one); creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_into_file(path: Path, environment: dict[str, Any], rows: Iterable[dict]) -> list[dict]:
    """Merge ``rows`` into the result file at ``path`` (created if missing) under ``environment``
    (the latest run's); returns the file's rows."""
    merged = merge_rows(read_rows(path), rows)
    text = json.dumps({"environment": environment, "results": merged}, indent=1)
    write_atomic(path, text + "\n")
    return merged
