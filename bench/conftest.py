"""Benchmark setup: every case's figures go to one JSON file (CUDA-only cases skip without a GPU:
see the root ``conftest.py``).

``pytest bench --benchmark-only`` on a GPU writes ``bench/results/<suite>-<device>.json``;
``pytest bench --benchmark-disable`` on a CPU runs the suite as a smoke test (GPU cases skipped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from bench.environment import environment

RESULTS: dict[str, list[dict]] = {}
RESULTS_DIR = Path(__file__).parent / "results"


def record(suite: str, row: dict) -> None:
    """Keep one measured case for the suite's JSON file."""
    RESULTS.setdefault(suite, []).append(row)


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS or not torch.cuda.is_available():
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    env = environment()
    tag = env["device"].replace(" ", "_")
    for suite, rows in RESULTS.items():
        path = Path(os.environ.get("NDSNN_BENCH_OUT", RESULTS_DIR)) / f"{suite}-{tag}.json"
        path.write_text(json.dumps({"environment": env, "results": rows}, indent=1))
