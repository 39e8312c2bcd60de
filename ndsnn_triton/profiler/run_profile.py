"""``ndsnn profile RUN_DIR``: the cost of a training run as it happened, next to the prediction.

Reads a run folder written by ``ndsnn train``: ``config.json`` (model, batch, phases),
``log.jsonl`` (per-iteration densities, measured spike rates and, in newer logs, the ``kernel``
convention's work factors) and ``schedule.json`` (the method's planned schedule). The
measured-schedule cost integrates the logged densities, spike rates and dense-gradient flags; the
analytic prediction integrates the planned schedule with an assumed spike rate and with the run's
mean measured rates. Under the ``kernel`` convention the measured schedule uses each record's
logged work factors and the prediction with measured rates their mean; a log without them (older
runs) falls back to the i.i.d. spike model (:mod:`ndsnn_triton.profiler.kernel_work`) at the
logged rates, and the prediction at the assumed rate always uses the i.i.d. model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ndsnn_triton.models import build_model
from ndsnn_triton.profiler.cost import (
    CONVENTIONS,
    KernelWork,
    density_vector,
    integrate,
    rate_vector,
    run_cost,
)
from ndsnn_triton.profiler.kernel_work import (
    LayerGeometry,
    factors_from_log,
    iid_work,
    trace_geometry,
)
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
    config, table, _ = run_model(run_dir)
    return config, table


def run_model(
    run_dir: str | Path,
) -> tuple[dict[str, Any], LayerTable, dict[str, LayerGeometry]]:
    """The run's config, and the layer table and layer geometry of its model (rebuilt from the
    config)."""
    config = _read_json(Path(run_dir) / "config.json")
    kwargs = config.get("model_kwargs")
    if not kwargs or "model" not in config:
        raise RunFolderError(
            f"{run_dir}/config.json has no model/model_kwargs (runs written by `ndsnn train` have them)"
        )
    model = build_model(config["model"], **kwargs)
    size = kwargs.get("image_size", 32)
    example = (1, kwargs.get("in_channels", 3), size, size)
    table = trace_layers(model, example)
    logged = set(config.get("layers", {}))
    if logged and logged != set(table.names):
        raise RunFolderError(
            f"{run_dir}: the rebuilt model's layers differ from the run's ({sorted(logged ^ set(table.names))})"
        )
    return config, table, trace_geometry(model, example)


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


def has_work_factors(records: list[dict[str, Any]]) -> bool:
    """Whether the log records work factors (logs written before they were added do not)."""
    return any(isinstance(r.get("work_factors"), dict) and r["work_factors"] for r in records)


def mean_work_factors(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-layer mean of the logged work factors (``rate``, ``forward``, ``weight_grad``) over
    the records that have them; empty for an older log without them."""
    sums: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for name, f in (r.get("work_factors") or {}).items():
            if not isinstance(f, dict):
                continue
            for key in ("rate", "forward", "weight_grad"):
                value = f.get(key)
                if isinstance(value, int | float) and np.isfinite(value):
                    sums.setdefault(name, {}).setdefault(key, []).append(float(value))
    return {
        name: {k: float(np.mean(v)) for k, v in keys.items()}
        for name, keys in sums.items()
        if {"forward", "weight_grad"} <= set(keys)
    }


def measured_kernel_work(
    table: LayerTable,
    geometry: dict[str, LayerGeometry],
    records: list[dict[str, Any]],
    rates: np.ndarray,
    batch: int,
) -> KernelWork:
    """``[S, L]`` kernel factors of the segments of :func:`measured_segments`: each record's
    logged work factors (a gap after a record takes the next record's, as the rates do); a layer
    or record without them gets the i.i.d. factors at the logged rate."""
    logged = []
    for i, rec in enumerate(records):
        logged.append(rec.get("work_factors") or {})
        gap = (records[i + 1]["step"] - rec["step"] - 1) if i + 1 < len(records) else 0
        if gap > 0:
            logged.append(records[i + 1].get("work_factors") or {})
    iid = iid_work(table, geometry, rates, batch)  # [S, L], once for all segments
    forward = np.empty_like(rates)
    weight_grad = np.empty_like(rates)
    for seg, factors in enumerate(logged):
        row = KernelWork(iid.forward[seg], iid.weight_grad[seg], iid.input_grad, rates[seg])
        forward[seg], weight_grad[seg] = factors_from_log(table, factors, row)
    input_grad = np.array([geometry[n].input_grad_factor for n in table.names])
    source = (
        "logged work factors (i.i.d. model where a record lacks them)"
        if has_work_factors(records)
        else "i.i.d. Bernoulli spikes at the logged rates (the log has no work factors)"
    )
    return KernelWork(forward, weight_grad, input_grad, rates, source)


def mean_kernel_work(
    table: LayerTable,
    geometry: dict[str, LayerGeometry],
    records: list[dict[str, Any]],
    mean_rates: dict[str, float],
    batch: int,
) -> KernelWork:
    """``[L]`` kernel factors for the prediction with measured rates: the mean logged work
    factors, or (older logs) the i.i.d. model at the mean measured rates."""
    r = _logged_rates(table, mean_rates)
    iid = iid_work(table, geometry, r, batch)
    means = mean_work_factors(records)
    if not means:
        return iid
    forward, weight_grad = factors_from_log(table, means, iid)
    return KernelWork(forward, weight_grad, iid.input_grad, r, "mean logged work factors")


def profile_run(run_dir: str | Path, assumed_rate: float = 0.1) -> dict[str, Any]:
    """Measured-schedule cost of a run and the analytic predictions, per convention.

    Both cover the same iterations: those the log spans (a run stopped early by ``--max-steps``
    or a crash is compared with the same stretch of its planned schedule, not the whole plan).
    """
    run_dir = Path(run_dir)
    config, table, geometry = run_model(run_dir)
    records = read_log(run_dir)
    schedule = Schedule.from_dict(_read_json(run_dir / "schedule.json"))
    batch = int(config["train"]["batch_size"])
    steps, dens, flags, rates = measured_segments(table, records)
    mean_rates = mean_spike_rates(run_dir)
    first, last = records[0]["step"], records[-1]["step"]
    planned = schedule.window(first, last + 1)
    kernel = {
        "measured": measured_kernel_work(table, geometry, records, rates, batch),
        "assumed": iid_work(table, geometry, rate_vector(table, assumed_rate), batch),
        "mean": mean_kernel_work(table, geometry, records, mean_rates, batch),
    }
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
        "work_factors_logged": has_work_factors(records),
        "mean_work_factors": {
            name: {
                "rate": float(kernel["mean"].rate[j]),
                "forward": float(kernel["mean"].forward[j]),
                "weight_grad": float(kernel["mean"].weight_grad[j]),
            }
            for j, name in enumerate(table.names)
        },
        "kernel_sources": {k: w.source for k, w in kernel.items()},
        "conventions": {},
    }
    for convention in CONVENTIONS:
        kw = kernel if convention == "kernel" else dict.fromkeys(kernel)
        measured = integrate(
            table, steps, dens, flags, rates, batch, convention, "measured", kw["measured"]
        ).total
        planned_assumed = run_cost(
            table, planned, assumed_rate, batch, convention, kw["assumed"]
        ).total
        planned_measured = run_cost(table, planned, mean_rates, batch, convention, kw["mean"]).total
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
    sources = result.get("kernel_sources", {})
    if sources:
        lines.append(
            f"kernel convention factors: measured schedule from {sources['measured']}; "
            f"prediction (r={format(result['assumed_spike_rate'], 'g')}) from {sources['assumed']}; "
            f"prediction (mean r) from {sources['mean']}"
        )
    factors = result.get("mean_work_factors", {})
    if factors:
        lines.append(
            f"{'layer':<22} {'rate':>7} {'fwd':>7} {'wgrad':>7} {'fwd/r':>7} {'wgrad/r':>8}"
        )
        for name, f in factors.items():
            r = f["rate"]
            fr = f["forward"] / r if r else float("nan")
            wr = f["weight_grad"] / r if r else float("nan")
            lines.append(
                f"{name:<22} {r:>7.3f} {f['forward']:>7.3f} {f['weight_grad']:>7.3f} "
                f"{fr:>7.2f} {wr:>8.2f}"
            )
    return "\n".join(lines)
