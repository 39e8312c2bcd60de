"""``ndsnn report``: the analytic training-cost comparison, the claim check, tables and plots.

Writes to the output folder: ``report.md``, ``report.json`` (assumptions, every claim-check row,
the verdict, per-method costs, the ``kernel`` convention's per-layer factors and kernel/snn
ratios), ``claim_check.csv``, ``method_costs.csv``, ``kernel_work.csv``, and the plots with the
data behind each (``*.png`` + ``*.json``). The three cost conventions (``snn``, ``rigl``,
``kernel``) are in every table; the ``kernel`` convention's spike structure is the recorded
measurement (``bench/results/spike_structure.json``) for VGG-16 and ResNet-19 when it exists, else
the i.i.d. spike model at the assumed rate (:mod:`ndsnn_triton.profiler.kernel_work`). Given a step-times file measured on a GPU (see
:mod:`ndsnn_triton.profiler.measured`), it adds the wall-clock NDSNN/LTH ratio next to the FLOP
ratio (``measured_claim.csv``), each method's GPU seconds (``measured_costs.csv``) and
``cost_flops_vs_seconds.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ndsnn_triton._version import __version__
from ndsnn_triton.profiler import plots
from ndsnn_triton.profiler.claim import (
    PAPER_RATIO,
    PROTOCOLS,
    TOLERANCE_POINTS,
    Assumptions,
    ClaimRow,
    ModelSetup,
    claim_check,
    claim_verdict,
    dense_unit,
    method_costs,
    schedule_of,
    setup_model,
)
from ndsnn_triton.profiler.cost import (
    CONVENTIONS,
    KernelWork,
    RunCost,
    kernel_work_of,
    rate_vector,
    step_cost,
    step_terms,
    with_kernel_work,
)
from ndsnn_triton.profiler.kernel_work import (
    DEFAULT_STATE,
    DEFAULT_STRUCTURE_FILE,
    IID,
    RECORDED_MODELS,
    MeasuredStructure,
    iid_work,
    load_structure,
    measured_work,
    parse_state,
    read_structure_file,
    trace_geometry,
)
from ndsnn_triton.profiler.measured import (
    interpolation_note,
    measured_claim,
    measured_method_costs,
    parse_step_times,
    read_step_times_file,
)
from ndsnn_triton.profiler.user_model import (
    BUILTIN_ONLY_FIELDS,
    DEFAULT_INPUT_SHAPE,
    example_shape,
    parse_input_shape,
    setup_user_model,
    user_assumptions,
)
from ndsnn_triton.sparse.validation import check_density

METHODS = ("dense", "static", "set", "rigl", "ndsnn", "lth")


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}"


def claim_table(rows: Sequence[ClaimRow], sparsities: Sequence[float]) -> list[str]:
    """Markdown pivot: one line per protocol × convention × distribution, NDSNN/LTH in % per
    model and sparsity; ``*`` marks values within ±3 points of the paper's number."""
    models = list(dict.fromkeys(r.model for r in rows))
    by = {(r.model, r.protocol, r.convention, r.distribution, r.sparsity): r for r in rows}
    head = ["protocol", "conv.", "distribution"] + [
        f"{plots._title(m)} {100 * s:g}%" for m in models for s in sparsities
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    settings = list(dict.fromkeys((r.protocol, r.convention, r.distribution) for r in rows))
    for p, c, d in settings:
        cells = []
        for m in models:
            for s in sparsities:
                r = by[(m, p, c, d, s)]
                cells.append(_fmt_pct(r.ratio) + ("*" if r.within_tolerance else ""))
        lines.append("| " + " | ".join([p, c, d, *cells]) + " |")
    claimed = paper_ratios(rows)
    paper = ", ".join(f"{plots._title(m)} {_fmt_pct(claimed[m])}%" for m in models if m in claimed)
    lines.append("")
    if claimed:
        lines.append(
            f"Values: NDSNN training FLOPs as % of LTH's. Paper: {paper}. `*`: within ±{TOLERANCE_POINTS:g} points of the paper's number for that model."
        )
    else:
        lines.append("Values: NDSNN training FLOPs as % of LTH's.")
    unclaimed = [plots._title(m) for m in models if m not in claimed]
    if unclaimed:
        lines[-1] += (
            f" No published NDSNN/LTH claim exists for {', '.join(unclaimed)}: its ratios are "
            "computed here, not compared with a published number."
        )
    return lines


def paper_ratios(rows: Sequence[ClaimRow]) -> dict[str, float]:
    """The published NDSNN/LTH number of each model in ``rows`` that has one."""
    return {r.model: r.paper_ratio for r in rows if r.paper_ratio is not None}


def verdict_lines(
    verdict: dict[str, Any], models: Sequence[str], paper: Mapping[str, float] | None = None
) -> list[str]:
    """Markdown bullets: which settings reproduce each published number (``paper``, default the
    paper's VGG-16 and ResNet-19 numbers); a model without one is said to have none."""
    paper = PAPER_RATIO if paper is None else paper
    lines = []
    for m in models:
        near = verdict["near_paper"].get(m, [])
        target = paper.get(m)
        if target is None:
            lines.append(
                f"- {plots._title(m)}: no published NDSNN/LTH claim exists for this model; the "
                "table above gives its computed ratios only."
            )
            continue
        if near:
            settings = "; ".join(
                f"{n['protocol']}/{n['convention']}/{n['distribution']}/{100 * n['sparsity']:g}% ({_fmt_pct(n['ratio'])}%)"
                for n in near
            )
            lines.append(
                f"- {plots._title(m)} ({_fmt_pct(target)}%): {len(near)} settings within ±{TOLERANCE_POINTS:g} points: {settings}."
            )
        else:
            lines.append(
                f"- {plots._title(m)} ({_fmt_pct(target)}%): no setting comes within ±{TOLERANCE_POINTS:g} points."
            )
    both = verdict["settings_matching_all_models"]
    claimed = [m for m in models if m in paper]
    if len(claimed) > 1:
        if both:
            s = "; ".join(
                f"{b['protocol']}/{b['convention']}/{b['distribution']}/{100 * b['sparsity']:g}%"
                for b in both
            )
            lines.append(
                f"- One setting reproduces both numbers within ±{TOLERANCE_POINTS:g} points: {s}."
            )
        else:
            lines.append(
                f"- **No single setting (protocol, convention, distribution, sparsity) reproduces both numbers within ±{TOLERANCE_POINTS:g} points.**"
            )
        if "vgg_below_resnet_settings" in verdict:
            lines.append(
                f"- The paper has VGG-16's ratio below ResNet-19's; {verdict['vgg_below_resnet_settings']} of the settings here agree on that ordering."
            )
    return lines


def _run_row(
    model: str,
    method: str,
    sparsity: float,
    convention: str,
    run: RunCost,
    unit: float,
    energy: bool,
) -> dict[str, Any]:
    row = {
        "model": model,
        "method": method,
        "sparsity": 0.0 if method == "dense" else sparsity,
        "convention": convention,
        "iterations": run.steps,
        "dense_grad_iterations": run.dense_grad_steps,
        "flops": run.total,
        "x_dense": run.total / unit,
        "forward": float(run.forward.sum()),
        "input_grad": float(run.input_grad.sum()),
        "weight_grad": float(run.weight_grad.sum()),
        "elementwise_ops": run.elementwise,
    }
    if energy:
        row["energy_j"] = run.energy_j
    return row


def build_report(
    out: str | Path,
    models: Sequence[str | ModelSetup] = ("vgg16", "resnet19"),
    sparsities: Sequence[float] = (0.9, 0.95, 0.98, 0.99),
    assumptions: Assumptions | None = None,
    energy: bool = False,
    rates_source: str | None = None,
    step_times: str | Path | None = None,
    spike_structure: str | Path | None = None,
    structure_state: str = DEFAULT_STATE,
) -> dict[str, Any]:
    """Run the whole analytic comparison and write the report folder; returns ``report.json``'s content.

    ``models``: built-in model names, or set-up models (:func:`report_model` makes one of any
    model). ``step_times``: a measured step-times JSON file; adds the measured GPU-time section.
    ``spike_structure``: the ``kernel`` convention's spike-structure file (every model must be in
    it), ``"iid"`` for the i.i.d. spike model at the assumed rate, or None (default): the recorded
    file for VGG-16 / ResNet-19 when it exists, else the i.i.d. model; ``structure_state``: the
    file's ``STATE/MODE`` (default ``trained/train``). Nothing is written if a model or an
    argument is bad.
    """
    start = time.perf_counter()
    a = assumptions or Assumptions()
    if not models:
        raise ValueError("report: no models given")
    for s in sparsities:
        check_density(1.0 - s, f"1 - sparsity ({s})")
    sparsities = sorted(sparsities)
    parse_state(structure_state)
    step_doc = read_step_times_file(step_times) if step_times is not None else None
    times = parse_step_times(step_doc, str(step_times)) if step_doc is not None else None
    setups = [m if isinstance(m, ModelSetup) else setup_model(m, a) for m in models]
    kernel_info = {}
    for i, setup in enumerate(setups):
        work, kernel_info[setup.name] = kernel_work_for(setup, a, spike_structure, structure_state)
        setups[i] = dataclasses.replace(setup, table=with_kernel_work(setup.table, work))
    names = [setup.name for setup in setups]
    if len(set(names)) != len(names):
        raise ValueError(f"report: model names must be unique, got {names}")
    if times is not None and not any(model in names for model, _ in times):
        raise ValueError(
            f"step-times file {step_times} measures {sorted({m for m, _ in times})}, none of the "
            f"report's models {names}"
        )
    out = Path(out)
    parts = [_model_part(setup, a, sparsities, energy) for setup in setups]
    rows = [r for part in parts for r in part["claim_rows"]]
    verdict = claim_verdict(rows)
    paper = paper_ratios(rows)
    users = {s.name: s.source for s in setups if s.source is not None}
    if users and not {"vgg16", "resnet19"} <= set(paper):
        del verdict["vgg_below_resnet_settings"]
    target = max(sparsities)
    method_rows = [r for part in parts for r in part["method_rows"]]
    runs_at_target = {
        setup.name: part["runs_at_target"] for setup, part in zip(setups, parts, strict=True)
    }
    units = {setup.name: part["unit"] for setup, part in zip(setups, parts, strict=True)}
    schedules_at_target = {
        setup.name: part["schedules_at_target"] for setup, part in zip(setups, parts, strict=True)
    }

    out.mkdir(parents=True, exist_ok=True)
    figures = _plots(
        out, setups, a, rows, runs_at_target, schedules_at_target, units, target, sparsities, paper
    )
    kernel_rows = {
        setup.name: kernel_layer_rows(setup, schedules_at_target[setup.name]["ndsnn"], a)
        for setup in setups
    }
    measured = None
    if times is not None:
        environment = step_doc.get("environment", {})
        measured = _measured_section(out, setups, a, times, sparsities, step_times, environment)
        figures.append(out / measured["figure"])
    report = {
        "version": __version__,
        "assumptions": _assumptions(a, setups)
        | ({"spike_rates_from": rates_source} if rates_source else {})
        | {
            ("kernel_spike_structure" if len(names) == 1 else f"kernel_spike_structure ({n})"): (
                info["source"]
            )
            for n, info in kernel_info.items()
        },
        "paper": {"ratios": paper if users else PAPER_RATIO, "tolerance_points": TOLERANCE_POINTS},
        "protocols": list(PROTOCOLS),
        "conventions": list(CONVENTIONS),
        "claim_check": [asdict(r) | {"within_tolerance": r.within_tolerance} for r in rows],
        "verdict": verdict,
        "method_costs": method_rows,
        "kernel_work": {
            name: {
                **kernel_info[name],
                "sparsity": target,
                "note": KERNEL_NOTE,
                "layers": kernel_rows[name],
                "total": kernel_totals(kernel_rows[name]),
            }
            for name in names
        },
        "layers": {s.name: [asdict(layer) for layer in s.table.layers] for s in setups},
        "figures": [p.name for p in figures],
        "seconds": time.perf_counter() - start,
    }
    if users:
        unclaimed = [n for n in names if n not in paper]
        report["paper"]["no_published_claim"] = unclaimed
        report["models"] = users
    if measured is not None:
        report["measured"] = measured
    (out / "report.json").write_text(json.dumps(report, indent=1))
    _write_csv(out / "claim_check.csv", report["claim_check"])
    _write_csv(out / "method_costs.csv", method_rows)
    _write_csv(
        out / "kernel_work.csv",
        [{"model": name, **row} for name in names for row in kernel_rows[name]],
    )
    (out / "report.md").write_text(
        "\n".join(_markdown(report, rows, verdict, sparsities, setups, figures, energy)) + "\n"
    )
    return report


def _assumptions(a: Assumptions, setups: Sequence[ModelSetup]) -> dict[str, Any]:
    """``a.describe()``; a report of users' models only drops the fields that build the
    built-in models and gives each model's input instead."""
    described = a.describe()
    if any(s.source is None for s in setups):
        return described
    for f in BUILTIN_ONLY_FIELDS:
        del described[f]
    for s in setups:
        key = "input_shape" if len(setups) == 1 else f"input_shape ({s.name})"
        described[key] = _input_label(s.source)
    return described


def _input_label(source: Mapping[str, Any]) -> str:
    """``[B, 3, 32, 32]`` or ``[T=4, B, 3, 32, 32]``: the input the model was traced with."""
    dims = ", ".join(str(d) for d in source["input_shape"])
    t = source.get("time_first")
    return f"[T={t}, B, {dims}]" if t else f"[B, {dims}]"


KERNEL_NOTE = (
    "kernel/snn: MACs the sparse Triton kernels execute (ndsnn_triton.kernels.work) over the snn "
    "ideal on the same spikes (snn at the structure's own input rate, 1 for analog input), for "
    "NDSNN's final masks at the target sparsity, each spread evenly over input channels (the "
    "ratio then does not depend on the density); weight gradient on an ordinary step (dense-"
    "gradient steps run cuDNN dense under kernel: 2·B·τ·M)."
)


def kernel_work_for(
    setup: ModelSetup,
    a: Assumptions,
    spike_structure: str | Path | None = None,
    state: str = DEFAULT_STATE,
) -> tuple[KernelWork, dict[str, Any]]:
    """The ``kernel`` convention's factors for ``setup`` and where they come from.

    ``spike_structure``: a spike-structure file (the model must be in it), ``"iid"``, or None:
    the recorded file for a built-in VGG-16 / ResNet-19 if it exists and holds the model, else the
    i.i.d. spike model at the assumed rate ``a.spike_rate`` at batch ``a.batch``.
    """
    if setup.source is None:
        example = (1, 3, a.image_size, a.image_size)
    else:
        example = example_shape(setup.source["input_shape"], setup.source.get("time_first"))
    geometry = trace_geometry(setup.model, example, batch=1)
    path: Path | None = None
    fallback_note = ""
    if spike_structure is not None and str(spike_structure) != IID:
        path = Path(spike_structure)
    elif spike_structure is None and setup.source is None and setup.name in RECORDED_MODELS:
        if DEFAULT_STRUCTURE_FILE.is_file():
            doc = read_structure_file(DEFAULT_STRUCTURE_FILE)
            if setup.name in doc["models"]:
                path = DEFAULT_STRUCTURE_FILE
            else:
                fallback_note = f"; {DEFAULT_STRUCTURE_FILE.name} has no {setup.name}"
        else:
            fallback_note = f"; no {DEFAULT_STRUCTURE_FILE.name} recorded"
    if path is None:
        rates = rate_vector(setup.table, a.spike_rate)
        work = iid_work(setup.table, geometry, rates, a.batch)
        source = f"{work.source} (batch {a.batch}, T = {a.T}{fallback_note})"
        return work, {"kind": "iid", "source": source, "file": None, "state": None}
    structure = load_structure(path, setup.name, state, geometry)
    work = measured_work(setup.table, geometry, structure)
    return work, {
        "kind": "measured",
        "source": _measured_label(structure, setup.name),
        # the recorded file by its place in the repository, not this machine's absolute path
        "file": "bench/results/spike_structure.json"
        if path == DEFAULT_STRUCTURE_FILE
        else str(path),
        "state": f"{structure.state}/{structure.mode}",
        "dataset": structure.dataset,
        "training": structure.training,
    }


def _measured_label(structure: MeasuredStructure, model: str) -> str:
    """Provenance of measured factors, with the assumption that carries them to the report."""
    t = structure.training
    at = ", ".join(
        f"{k} {t[k]}"
        for k in ("batch", "T", "sparsity", "steps")
        if isinstance(t.get(k), int | float)
    )
    label = (
        f"measured: {Path(structure.path).name}, {model} in state {structure.state}/"
        f"{structure.mode} on {structure.dataset or '?'}" + (f" ({at})" if at else "")
    )
    if structure.dataset.lower().startswith("fashion"):
        label += (
            "; assumed to carry over to the report's CIFAR-10 shapes: Fashion-MNIST is padded "
            "to 32×32, so only the stem differs (1 input channel instead of 3)"
        )
    return label


def kernel_layer_rows(setup: ModelSetup, ndsnn: Any, a: Assumptions) -> list[dict[str, Any]]:
    """Per layer: the ``kernel`` factors and kernel/snn for one training step with NDSNN's final
    masks (``ndsnn``: its schedule at the target sparsity), on the structure's own spikes."""
    table = setup.table
    work = kernel_work_of(table)
    final = dict(zip(ndsnn.layer_names, ndsnn.segments[-1].densities, strict=True))
    d = np.array(
        [final.get(n, layer.density) for n, layer in zip(table.names, table.layers, strict=True)]
    )
    spike = np.array([layer.spike_input for layer in table.layers])
    r_snn = np.where(spike, work.rate, 1.0)
    snn = step_terms(table, d, r_snn, a.batch, "snn", False)
    ker = step_terms(table, d, r_snn, a.batch, "kernel", False)
    rows = []
    for j, layer in enumerate(table.layers):
        row: dict[str, Any] = {
            "layer": layer.name,
            "spike_input": layer.spike_input,
            "density": float(d[j]),
            "rate": float(work.rate[j]),
            "forward_factor": float(work.forward[j]),
            "weight_grad_factor": float(work.weight_grad[j]),
            "input_grad_factor": float(work.input_grad[j]),
        }
        for term, k in zip(("forward", "input_grad", "weight_grad"), range(3), strict=True):
            row[f"kernel_{term}_flops"] = float(ker[k][j])
            row[f"snn_{term}_flops"] = float(snn[k][j])
            row[f"{term}_ratio"] = _ratio(ker[k][j], snn[k][j])
        rows.append(row)
    return rows


def _ratio(num: float, den: float) -> float | None:
    """``num / den``, None (JSON null) where the ideal is zero."""
    return float(num / den) if den > 0 else None


def kernel_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """kernel/snn over all layers of one step, per term and in all."""
    out: dict[str, float | None] = {}
    for term in ("forward", "input_grad", "weight_grad"):
        out[f"{term}_ratio"] = _ratio(
            sum(r[f"kernel_{term}_flops"] for r in rows), sum(r[f"snn_{term}_flops"] for r in rows)
        )
    terms = ("forward", "input_grad", "weight_grad")
    out["step_ratio"] = _ratio(
        sum(r[f"kernel_{t}_flops"] for r in rows for t in terms),
        sum(r[f"snn_{t}_flops"] for r in rows for t in terms),
    )
    return out


def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def kernel_lines(kernel: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    """Markdown: per model, where the kernel factors come from and kernel/snn per layer."""
    lines = []
    for m in models:
        k = kernel[m]
        tot = k["total"]
        lines += [
            f"### {plots._title(m)}",
            "",
            f"Spike structure: {k['source']}.",
            "",
            "| layer | spike input | density | rate | forward factor | weight-grad factor | "
            "kernel/snn forward | kernel/snn weight grad | kernel/snn input grad |",
            "|" + "---|" * 9,
        ]
        for r in k["layers"]:
            cells = [
                f"`{r['layer']}`",
                "yes" if r["spike_input"] else "no",
                f"{r['density']:.4f}",
                f"{r['rate']:.3f}",
                f"{r['forward_factor']:.3f}",
                f"{r['weight_grad_factor']:.3f}",
                _fmt_ratio(r["forward_ratio"]),
                _fmt_ratio(r["weight_grad_ratio"]),
                _fmt_ratio(r["input_grad_ratio"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            f"| all layers | | | | | | {_fmt_ratio(tot['forward_ratio'])} | "
            f"{_fmt_ratio(tot['weight_grad_ratio'])} | {_fmt_ratio(tot['input_grad_ratio'])} |",
            "",
            f"One training step at {plots._pct(k['sparsity'])} sparsity: kernel/snn = "
            f"{_fmt_ratio(tot['step_ratio'])}.",
            "",
        ]
    lines.append(KERNEL_NOTE)
    return lines


def kernel_summary_lines(kernel: Mapping[str, Any]) -> list[str]:
    """Plain text for the terminal: per model, kernel/snn per layer (forward, weight gradient)."""
    lines = []
    for m, k in kernel.items():
        tot = k["total"]
        lines += [
            f"kernel/snn at {plots._pct(k['sparsity'])} sparsity, {plots._title(m)} "
            f"(spike structure: {k['source']}):",
            f"  {'layer':<22} {'rate':>6} {'forward':>8} {'w.grad':>8}",
        ]
        for r in k["layers"]:
            lines.append(
                f"  {r['layer']:<22} {r['rate']:>6.3f} {_fmt_ratio(r['forward_ratio']):>8} "
                f"{_fmt_ratio(r['weight_grad_ratio']):>8}"
            )
        lines.append(
            f"  {'all layers':<22} {'':>6} {_fmt_ratio(tot['forward_ratio']):>8} "
            f"{_fmt_ratio(tot['weight_grad_ratio']):>8}   one step: {_fmt_ratio(tot['step_ratio'])}"
        )
    return lines


def _model_part(setup, a: Assumptions, sparsities: Sequence[float], energy: bool) -> dict[str, Any]:
    """One model's claim-check rows, method-cost rows, and the runs and schedules at the highest
    target sparsity (the plots' data)."""
    target = max(sparsities)
    part: dict[str, Any] = {"claim_rows": claim_check([setup], a, sparsities), "method_rows": []}
    for convention in CONVENTIONS:
        unit = dense_unit(setup, a, convention)
        for s in sparsities:
            costs = method_costs(setup, a, 1.0 - s, convention)
            for method, run in costs.items():
                if method == "dense" and s != sparsities[0]:
                    continue
                part["method_rows"].append(
                    _run_row(setup.name, method, s, convention, run, unit, energy)
                )
            if convention == "snn" and s == target:
                part["runs_at_target"], part["unit"] = costs, unit
    part["schedules_at_target"] = {
        m: schedule_of(setup, m, a, 1.0 if m == "dense" else 1.0 - target, None) for m in METHODS
    }
    return part


def _measured_section(
    out: Path,
    setups,
    a: Assumptions,
    times,
    sparsities: Sequence[float],
    source: str | Path,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """Price every schedule with the measured step times; write CSVs and the FLOPs-vs-seconds plot."""
    claim = [asdict(r) for r in measured_claim(setups, a, times, sparsities)]
    target = max(sparsities)
    costs = []
    for setup in setups:
        for (model, config), t in times.items():
            if model == setup.name:
                per_method = measured_method_costs(setup, a, t, 1.0 - target, METHODS)
                costs += [
                    {"model": model, "config": config, "method": m, "sparsity": target, **c}
                    for m, c in per_method.items()
                ]
    notes = [
        note
        for t in times.values()
        if (note := interpolation_note(t, [1.0 - s for s in sparsities] + [1.0])) is not None
    ]
    _write_csv(out / "measured_claim.csv", claim)
    _write_csv(out / "measured_costs.csv", costs)
    caption = (
        plot_caption(a, target)
        + "\nGPU seconds: each schedule priced with the step times measured per configuration, "
        f"interpolated in overall density (from {Path(str(source)).name})."
    )
    figure = plots.flops_vs_seconds(costs, target, out / "cost_flops_vs_seconds.png", caption)
    (out / "cost_flops_vs_seconds.json").write_text(json.dumps(costs))
    return {
        "source": str(source),
        "environment": environment,
        "claim": claim,
        "method_costs": costs,
        "notes": notes,
        "figure": figure.name,
    }


def measured_lines(measured: dict[str, Any]) -> list[str]:
    """Markdown: the wall-clock NDSNN/LTH ratio next to the FLOP ratio and the paper's number."""
    env = measured["environment"]
    lines = [
        f"Step times measured on {env.get('device', '?')} (torch {env.get('torch', '?')}, "
        f"Triton {env.get('triton', '?')}, commit {str(env.get('commit', '?'))[:10]}), "
        f"from `{Path(measured['source']).name}`; each schedule priced by its overall density.",
        "",
        "| model | config | LTH protocol | sparsity | NDSNN/LTH GPU seconds | NDSNN/LTH FLOPs (snn) | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in measured["claim"]:
        lines.append(
            f"| {plots._title(r['model'])} | {r['config']} | {r['protocol']} | {100 * r['sparsity']:g}% "
            f"| {_fmt_pct(r['ratio_seconds'])}% | {_fmt_pct(r['ratio_flops'])}% | {_fmt_pct(r['paper_ratio'])}% |"
        )
    lines += [
        "",
        "| model | config | method | FLOPs × dense | GPU seconds × dense | mask-update share of time |",
        "|---|---|---|---|---|---|",
    ]
    for r in measured["method_costs"]:
        share = r["update_seconds"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(
            f"| {plots._title(r['model'])} | {r['config']} | {r['method']} | {r['flops_x_dense']:.3f} "
            f"| {r['seconds_x_dense']:.3f} | {100 * share:.2f}% |"
        )
    return lines + [f"- {n}" for n in measured["notes"]]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plots(
    out: Path,
    setups,
    a: Assumptions,
    rows,
    runs_at_target,
    schedules_at_target,
    units,
    target: float,
    sparsities,
    paper: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write every plot (and the data behind it); ``paper``: published ratios (default the
    paper's)."""
    paper = PAPER_RATIO if paper is None else paper
    figures = []
    lth_rounds = max(len(s["lth"].phases) - 1 for s in schedules_at_target.values())
    run_caption = plot_caption(a, sparsity=target, lth_rounds=lth_rounds)
    figures.append(
        plots.cumulative_cost(
            runs_at_target,
            units,
            a.steps_per_epoch,
            target,
            "snn",
            out / "cumulative_cost.png",
            caption=run_caption,
            epochs=a.epochs,
        )
    )
    (out / "cumulative_cost.json").write_text(
        json.dumps(
            {
                m: {
                    k: {
                        "iteration": r.segment_ends.tolist(),
                        "cumulative_flops": r.cumulative.tolist(),
                        "x_dense": r.total / units[m],
                    }
                    for k, r in runs.items()
                }
                for m, runs in runs_at_target.items()
            }
        )
    )
    density_caption = plot_caption(a, sparsity=target, convention=None, lth_rounds=lth_rounds)
    figures.append(
        plots.density_curves(
            schedules_at_target,
            a.steps_per_epoch,
            target,
            out / "density.png",
            caption=density_caption,
            epochs=a.epochs,
        )
    )
    (out / "density.json").write_text(
        json.dumps(
            {m: {k: s.to_dict() for k, s in sch.items()} for m, sch in schedules_at_target.items()}
        )
    )
    layer_caption = plot_caption(a, sparsity=target, distribution="global", lth=None)
    for setup in setups:
        final = schedules_at_target[setup.name]["ndsnn"].segments[-1].densities
        names = schedules_at_target[setup.name]["ndsnn"].layer_names
        by_layer = dict(zip(names, final, strict=True))
        sparse_step = step_cost(setup.table, by_layer, a.spike_rate, a.batch, "snn")
        dense_step = step_cost(setup.table, None, a.spike_rate, a.batch, "snn")
        sparse, dense = (
            {"forward": c.forward, "input_grad": c.input_grad, "weight_grad": c.weight_grad}
            for c in (sparse_step, dense_step)
        )
        densities = [by_layer.get(n, 1.0) for n in setup.table.names]
        title = (
            "FLOPs of one training step per layer, NDSNN's final masks at "
            f"{plots._pct(target)} sparsity (bars) vs dense (ticks)"
        )
        figures.append(
            plots.layer_breakdown(
                setup.table,
                sparse,
                dense,
                setup.name,
                title,
                out / f"layers_{setup.name}.png",
                caption=layer_caption,
                densities=densities,
            )
        )
        (out / f"layers_{setup.name}.json").write_text(
            json.dumps(
                {
                    "layers": setup.table.names,
                    "module_paths": setup.table.names,
                    "display_names": plots.display_names(setup.name, setup.table.names),
                    "ndsnn_final_density": densities,
                    "sparse": {k: v.tolist() for k, v in sparse.items()},
                    "dense": {k: v.tolist() for k, v in dense.items()},
                }
            )
        )
    ratios: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        if r.convention == "snn" and r.distribution == "global":
            ratios.setdefault(r.model, {}).setdefault(r.protocol, []).append((r.sparsity, r.ratio))
    ratio_caption = plot_caption(
        a, sparsity=None, distribution="global", lth="protocols", levels=sparsities
    )
    figures.append(
        plots.ratio_vs_sparsity(
            ratios, paper, "snn", "global", out / "ratio_vs_sparsity.png", ratio_caption
        )
    )
    (out / "ratio_vs_sparsity.json").write_text(json.dumps(ratios))
    return figures


def _rate_label(a: Assumptions) -> str:
    if isinstance(a.spike_rate, dict):
        return f"measured per layer (mean {sum(a.spike_rate.values()) / len(a.spike_rate):.3f})"
    return f"{a.spike_rate:g}"


def _markdown(report, rows, verdict, sparsities, setups, figures, energy) -> list[str]:
    a = report["assumptions"]
    models = [s.name for s in setups]
    lines = [
        "# ndsnn report: training cost of sparse spiking networks",
        "",
        f"ndsnn_triton {report['version']}. Analytic FLOPs (2 per MAC) of whole training runs, integrated over each method's own schedule.",
        "",
        "## Assumptions",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in a.items()],
        "",
        "Conventions: `snn` counts forward and weight-gradient work × input spike rate and no input gradient for the first layer; "
        "`rigl` counts every term as in Evci et al. (3 × forward per step, dense weight gradients on growth steps); "
        "`kernel` counts the MACs the library's sparse Triton kernels execute on the measured spike structure "
        "(a kept weight's work on a silent (sample, channel) input map or on a zero spike skipped, everything else executed; dense weight "
        "gradients on growth steps run cuDNN dense); spike structure per model in the assumptions (`kernel_spike_structure`). "
        "LTH protocols: `full-imp` (all IMP rounds), `dense-plus-retrain` (one dense run + one retrain at the target), "
        "`amortized` (one IMP run to the highest target shared by the sparsity levels).",
        "",
        *[line for s in setups if s.source is not None for line in model_lines(s)],
        "## Claim check: NDSNN / LTH training cost",
        "",
        *claim_table(rows, sparsities),
        "",
        *verdict_lines(verdict, models, paper_ratios(rows)),
        "",
        "## Cost of each method (× one dense run of E epochs)",
        "",
    ]
    head = ["model", "method", "sparsity", "snn ×dense", "rigl ×dense", "kernel ×dense"] + (
        ["energy (J, snn)"] if energy else []
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {
        (r["model"], r["method"], r["sparsity"], r["convention"]): r for r in report["method_costs"]
    }
    for (m, method, s, conv), r in by.items():
        if conv != "snn":
            continue
        rigl = by[(m, method, s, "rigl")]
        kernel = by[(m, method, s, "kernel")]
        cells = [
            plots._title(m),
            method,
            f"{100 * s:g}%",
            f"{r['x_dense']:.3f}",
            f"{rigl['x_dense']:.3f}",
            f"{kernel['x_dense']:.3f}",
        ]
        if energy:
            cells.append(f"{r['energy_j']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Kernel work vs the snn ideal (per layer)",
        "",
        *kernel_lines(report["kernel_work"], models),
    ]
    if "measured" in report:
        lines += ["", "## Measured GPU time", "", *measured_lines(report["measured"])]
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += [
        "",
        f"Elementwise work (BN, LIF, pooling) is reported per run in `method_costs.csv` (`elementwise_ops`), apart from the FLOPs. Generated in {report['seconds']:.1f} s.",
    ]
    return lines


def model_lines(setup: ModelSetup) -> list[str]:
    """Markdown: a user's model, where it came from, its input, and its layer table."""
    src = setup.source or {}
    factory = src.get("factory")
    kwargs = src.get("kwargs") or {}
    made = (
        f"`{factory}` called with `{json.dumps(kwargs)}`"
        if factory
        else "a model given as a Python object"
    )
    t = src.get("timesteps", 1)
    lines = [
        f"## Model: {plots._title(setup.name)}",
        "",
        f"{made} (class `{src.get('class', '?')}`). Traced on one input {_input_label(src)} "
        f"(B = 1); it runs T = {t} timestep{'s' if t != 1 else ''} per sample.",
    ]
    if src.get("converted_to_masked"):
        lines[-1] += (
            " It has no SpikeConv2d / SpikeLinear, so its nn.Conv2d / nn.Linear layers were "
            "made maskable (`ndsnn_triton.nn.to_masked`) for the sparse methods."
        )
    head = "| layer | kind | weight shape | weights | MACs / sample / timestep | timesteps | spike input | input gradient | maskable |"
    lines += ["", head, "|" + "---|" * 9]
    for layer in setup.table.layers:
        cells = [
            f"`{layer.name}`",
            layer.kind,
            "×".join(str(d) for d in layer.weight_shape),
            f"{layer.weights:,}",
            f"{layer.macs:,}",
            str(layer.timesteps),
            "yes" if layer.spike_input else "no",
            "yes" if layer.input_grad else "no",
            "yes" if layer.maskable else "no (dense)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    weights = sum(layer.weights for layer in setup.table.layers)
    lines += [
        "",
        f"Dense forward MACs per sample, all timesteps: {setup.table.macs_per_sample():,}; "
        f"weights: {weights:,}.",
        "",
    ]
    return lines


def plot_caption(
    a: Assumptions,
    sparsity: float | None,
    convention: str | None = "snn",
    distribution: str = "default",
    lth: str | None = "full-imp",
    lth_rounds: int | None = None,
    levels: Sequence[float] = (),
) -> str:
    """The assumptions behind a plot, as the caption drawn under it (one paragraph per line).

    ``convention``: the FLOP convention (None: the plot shows densities, no FLOPs);
    ``distribution``: ``"default"`` (each method's own: NDSNN and LTH global, static/SET/RigL ERK)
    or the one distribution used; ``lth``: ``"full-imp"`` (LTH's IMP run, ``lth_rounds`` rounds
    after round 0), ``"protocols"`` (the LTH protocols compared over ``levels``) or None.
    """
    run = (
        f"Assumptions: {a.dataset_size:,} training samples, batch {a.batch} "
        f"({a.steps_per_epoch} iterations/epoch), T = {a.T} timesteps, "
        f"E = {a.epochs} epochs per training run"
    )
    if sparsity is not None:
        run += f", target sparsity {plots._pct(sparsity)} (density {1 - sparsity:.3g})"
    if convention == "snn":
        flops = (
            f"FLOPs: snn convention, 2 per MAC; forward and weight gradient of spike-input layers "
            f"scaled by the input spike rate r = {_rate_label(a)}; no input gradient for the "
            "first layer."
        )
    elif convention is not None:
        flops = f"FLOPs: {convention} convention, 2 per MAC (spike rate not applied)."
    else:
        flops = "Weight densities only: no FLOP convention or spike rate involved."
    floor = (
        f"every sparse layer keeps at least {a.min_kept_per_output:g} weight(s) per output unit"
        if a.min_kept_per_output > 0
        else "no per-layer floor: a layer may keep no weight at all"
    )
    if distribution == "default":
        dist = (
            "Layer-wise distribution: each method's default, NDSNN and LTH global magnitude "
            f"(on the initial weights), static, SET and RigL ERK; {floor}."
        )
    elif distribution == "global":
        dist = (
            "Layer-wise distribution: global magnitude (one threshold over all layers, on the "
            f"initial weights); {floor}."
        )
    else:
        dist = f"Layer-wise distribution: {distribution}; {floor}."
    methods = (
        f"NDSNN: density {a.d_init:g} to the target, cubic from {a.t0_fraction:.0%} to "
        f"{a.t_end_fraction:.0%} of the run, masks updated every {a.delta_t} iterations "
        f"(drop fraction {a.zeta:g} to {a.zeta_end:g}). "
    )
    if lth == "full-imp":
        methods += (
            f"SET/RigL: masks updated every {a.rigl_delta_t} iterations (drop fraction "
            f"{a.rigl_zeta:g}) until {a.rigl_stop_fraction:.0%} of the run. LTH (full IMP): round 0 "
            f"dense for E epochs, then {lth_rounds if lth_rounds is not None else 'K'} rounds "
            f"each pruning {a.prune_rate:.0%} of the remaining weights and training "
            f"E − {a.rewind_epoch} = {a.epochs - a.rewind_epoch} epochs from the weights of "
            f"epoch {a.rewind_epoch} (rewind)."
        )
    elif lth == "protocols":
        methods += (
            f"LTH protocols: full-imp (round 0 dense for E epochs, then IMP rounds pruning "
            f"{a.prune_rate:.0%} of the remaining weights, E − {a.rewind_epoch} epochs each after "
            f"rewinding to epoch {a.rewind_epoch}); dense-plus-retrain (one dense run + one "
            f"retrain of E − {a.rewind_epoch} epochs at the target); amortized (one IMP run to "
            f"the highest sparsity, shared by the {len(levels)} levels "
            f"{', '.join(plots._pct(s) for s in levels)})."
        )
    return "\n".join([run + ".", flops, dist, methods])


def report_model(
    model: torch.nn.Module,
    out: str | Path = "report",
    *,
    name: str | None = None,
    input_shape: Sequence[int] | str = DEFAULT_INPUT_SHAPE,
    time_steps: int | None = None,
    sparsities: Sequence[float] = (0.9, 0.95, 0.98, 0.99),
    assumptions: Assumptions | None = None,
    energy: bool = False,
    rates_source: str | None = None,
    step_times: str | Path | None = None,
    source: Mapping[str, Any] | None = None,
    spike_structure: str | Path | None = None,
    structure_state: str = DEFAULT_STATE,
    **options: Any,
) -> dict[str, Any]:
    """The cost report of any model: its layer table, every method's training cost and the
    NDSNN/LTH ratio (no published claim to compare with). Writes the same files as
    ``ndsnn report`` to ``out`` and returns ``report.json``'s content.

    ``input_shape``: one sample's input (``(C, H, W)`` or ``"C,H,W"``); the model is traced on
    ``[1, *input_shape]``, or on ``[time_steps, 1, *input_shape]`` if ``time_steps`` is given (a
    model that takes its time steps first). ``options``: :class:`Assumptions` fields (``epochs=20``),
    over ``assumptions``; T is the model's own (traced), not an option. ``name``: the model's name
    in tables, plots and file names (default: its class name). ``spike_structure`` /
    ``structure_state``: the ``kernel`` convention's spike structure, as for
    :func:`build_report` (default: the i.i.d. model at the assumed rate). ``model`` is not
    modified.
    """
    if "T" in options:
        raise ValueError(
            "report: T is the model's own (traced); give time_steps for a model that takes "
            "[T, B, ...] input"
        )
    a = _with_options(assumptions or Assumptions(), options)
    shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else input_shape
    label = name or (source or {}).get("name") or type(model).__name__
    setup = setup_user_model(model, label, shape, time_steps, dict(source or {}))
    return build_report(
        out,
        [setup],
        sparsities,
        user_assumptions(a, setup),
        energy,
        rates_source,
        step_times,
        spike_structure,
        structure_state,
    )


def _with_options(a: Assumptions, options: Mapping[str, Any]) -> Assumptions:
    """``a`` with the given :class:`Assumptions` fields replaced; unknown names are an error."""
    unknown = sorted(set(options) - set(a.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"report: unknown option(s) {unknown}; expected Assumptions fields "
            f"{sorted(a.__dataclass_fields__)}"
        )
    return dataclasses.replace(a, **options)


class _CallableModule(types.ModuleType):
    """This module, callable: ``ndsnn_triton.profiler.report(model, out=...)`` is
    :func:`report_model` while ``report.build_report`` etc. stay reachable."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return report_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
