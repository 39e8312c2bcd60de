"""``ndsnn profile RUN_DIR``: the cost of a training run as it happened, next to the prediction.

Reads a run folder written by ``ndsnn train``: ``config.json`` (model, batch, phases),
``log.jsonl`` (per-iteration densities and measured spike rates) and ``schedule.json`` (the
method's planned schedule). The measured-schedule cost integrates the logged densities, spike rates
and dense-gradient flags; the analytic prediction integrates the planned schedule with an assumed
spike rate and with the run's mean measured rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ndsnn_triton.models import build_model
from ndsnn_triton.profiler.cost import CONVENTIONS, density_vector, integrate, rate_vector, run_cost
from ndsnn_triton.profiler.layers import LayerTable, trace_layers
from ndsnn_triton.sparse.schedules import Schedule


class RunFolderError(ValueError):
    """A run folder lacks a file or holds one in the wrong format."""


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunFolderError(
            f"{path} is missing: is {path.parent} a folder written by `ndsnn train`?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}: not valid JSON ({err})") from err


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``log.jsonl``, in step order."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise RunFolderError(
            f"{path} is missing: is {path.parent} a folder written by `ndsnn train`?"
        )
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            missing = [k for k in ("step", "densities", "spike_rates") if k not in record]
            if missing:
                raise KeyError(", ".join(missing))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise RunFolderError(
                f"{path}:{n}: not a log record ({type(err).__name__}: {err})"
            ) from err
        records.append(record)
    if not records:
        raise RunFolderError(f"{path} holds no records")
    return sorted(records, key=lambda r: r["step"])


def mean_spike_rates(run_dir: str | Path) -> dict[str, float]:
    """Per-layer input spike rate of a run: the mean over its log records."""
    records = read_log(run_dir)
    names = list(records[0]["spike_rates"])
    return {
        n: float(np.mean([r["spike_rates"][n] for r in records if n in r["spike_rates"]]))
        for n in names
    }


def run_table(run_dir: str | Path) -> tuple[dict[str, Any], LayerTable]:
    """The run's config and the layer table of its model (rebuilt from the config)."""
    config = _read_json(Path(run_dir) / "config.json")
    kwargs = config.get("model_kwargs")
    if not kwargs or "model" not in config:
        raise RunFolderError(
            f"{run_dir}/config.json has no model/model_kwargs (runs written by `ndsnn train` have them)"
        )
    model = build_model(config["model"], **kwargs)
    size = kwargs.get("image_size", 32)
    table = trace_layers(model, (1, kwargs.get("in_channels", 3), size, size))
    logged = set(config.get("layers", {}))
    if logged and logged != set(table.names):
        raise RunFolderError(
            f"{run_dir}: the rebuilt model's layers differ from the run's ({sorted(logged ^ set(table.names))})"
        )
    return config, table


def _logged_rates(table: LayerTable, logged: dict[str, float]) -> np.ndarray:
    """``r_l`` from a log record; a layer missing from it (not run since the last record) counts as 1."""
    return rate_vector(table, {**{layer.name: 1.0 for layer in table.layers}, **logged})


def measured_segments(
    table: LayerTable, records: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, densities, dense flags and rates of the run as logged.

    A record holds the densities its iteration ran with (kept until the next record) and the mean
    spike rates of the iterations since the previous record; an iteration with ``dense_grad`` is
    always followed by a record, so the flag covers exactly that iteration.
    """
    steps, dens, flags, rates = [], [], [], []
    for i, rec in enumerate(records):
        d = density_vector(table, rec["densities"])
        r = _logged_rates(table, rec["spike_rates"])
        steps.append(1)
        dens.append(d)
        flags.append(bool(rec.get("dense_grad", False)))
        rates.append(r)
        gap = (records[i + 1]["step"] - rec["step"] - 1) if i + 1 < len(records) else 0
        if gap > 0:
            steps.append(gap)
            dens.append(d)
            flags.append(False)
            rates.append(_logged_rates(table, records[i + 1]["spike_rates"]))
    return np.array(steps), np.array(dens), np.array(flags), np.array(rates)


def profile_run(run_dir: str | Path, assumed_rate: float = 0.1) -> dict[str, Any]:
    """Measured-schedule cost of a run and the analytic predictions, per convention.

    Both cover the same iterations: those the log spans (a run stopped early by ``--max-steps``
    or a crash is compared with the same stretch of its planned schedule, not the whole plan).
    """
    run_dir = Path(run_dir)
    config, table = run_table(run_dir)
    records = read_log(run_dir)
    schedule = Schedule.from_dict(_read_json(run_dir / "schedule.json"))
    batch = int(config["train"]["batch_size"])
    steps, dens, flags, rates = measured_segments(table, records)
    mean_rates = mean_spike_rates(run_dir)
    first, last = records[0]["step"], records[-1]["step"]
    planned = schedule.window(first, last + 1)
    out: dict[str, Any] = {
        "run": str(run_dir),
        "model": config["model"],
        "method": config["method"]["method"],
        "batch": batch,
        "logged_iterations": int(steps.sum()),
        "planned_iterations": schedule.total_steps,
        "compared_iterations": [first, last + 1],
        "mean_spike_rates": mean_rates,
        "assumed_spike_rate": assumed_rate,
        "conventions": {},
    }
    for convention in CONVENTIONS:
        measured = integrate(table, steps, dens, flags, rates, batch, convention, "measured").total
        planned_assumed = run_cost(table, planned, assumed_rate, batch, convention).total
        planned_measured = run_cost(table, planned, mean_rates, batch, convention).total
        out["conventions"][convention] = {
            "measured_schedule_flops": measured,
            "predicted_flops_assumed_rate": planned_assumed,
            "predicted_flops_measured_rates": planned_measured,
            "measured_over_predicted": measured / planned_measured
            if planned_measured
            else float("nan"),
        }
    return out


def format_profile(result: dict[str, Any]) -> str:
    first, stop = result["compared_iterations"]
    lines = [
        f"run {result['run']}: {result['method']} on {result['model']}, batch {result['batch']}: "
        f"{result['logged_iterations']:,} of {result['planned_iterations']:,} planned iterations "
        f"ran; measured and predicted cost below both cover iterations {first:,}..{stop - 1:,}",
        "mean input spike rates: "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_spike_rates"].items()),
        f"{'convention':<10} {'measured schedule':>18} {'predicted (r=' + format(result['assumed_spike_rate'], 'g') + ')':>18} {'predicted (mean r)':>19} {'measured/pred.':>15}",
    ]
    for conv, c in result["conventions"].items():
        lines.append(
            f"{conv:<10} {c['measured_schedule_flops']:>18.4g} {c['predicted_flops_assumed_rate']:>18.4g} "
            f"{c['predicted_flops_measured_rates']:>19.4g} {c['measured_over_predicted']:>15.4f}"
        )
    return "\n".join(lines)
