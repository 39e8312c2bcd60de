"""The benchmarks' result files: merged and rewritten atomically per case, with a full environment."""

import json
import re

import pytest
import torch

import bench.conftest as bench_conftest
import bench.environment as bench_env
import bench.result_file as result_file
from bench.conftest import pinned_flags, record
from bench.result_file import merge_into_file, merge_rows, read_rows

FLAG_KEYS = {
    "cudnn_enabled",
    "cudnn_benchmark",
    "cudnn_deterministic",
    "cudnn_allow_tf32",
    "cuda_matmul_allow_tf32",
    "float32_matmul_precision",
}


def _rows(n: int, ms: float = 1.0) -> list[dict]:
    return [{"case": f"layer{i}", "density": 0.1, "median_ms": ms} for i in range(n)]


def test_rerun_of_a_subset_keeps_the_other_rows(tmp_path):
    path = tmp_path / "kernels-cpu.json"
    merge_into_file(path, {"run": 1}, _rows(6))
    rerun = [{"case": "layer2", "median_ms": 9.0}, {"case": "layer9", "median_ms": 3.0}]
    merge_into_file(path, {"run": 2}, rerun)
    doc = json.loads(path.read_text())
    assert [r["case"] for r in doc["results"]] == [f"layer{i}" for i in range(6)] + ["layer9"]
    assert doc["results"][2]["median_ms"] == 9.0 and doc["results"][1]["median_ms"] == 1.0
    assert doc["environment"] == {"run": 2}


def test_rows_without_a_case_field_merge_by_their_descriptive_fields():
    old = [
        {"layer": "a", "density": 0.1, "spike_rate": 0.1, "median_ms": 1},
        {"layer": "a", "density": 0.01, "spike_rate": 0.1, "median_ms": 2},
    ]
    new = [{"layer": "a", "density": 0.1, "spike_rate": 0.1, "median_ms": 5}]
    assert [r["median_ms"] for r in merge_rows(old, new)] == [5, 2]


@pytest.mark.parametrize("failing", ["dumps", "replace"])
def test_a_crash_while_writing_leaves_the_old_file_intact(tmp_path, monkeypatch, failing):
    path = tmp_path / "step_times-cpu.json"
    merge_into_file(path, {}, _rows(3))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    if failing == "dumps":
        monkeypatch.setattr(result_file.json, "dumps", boom)
    else:
        monkeypatch.setattr(result_file.os, "replace", boom)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        merge_into_file(path, {}, _rows(1, ms=7.0))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_an_unreadable_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "x-cpu.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_rows(path)


def test_record_writes_each_case_at_once_into_a_new_folder(tmp_path, monkeypatch):
    out = tmp_path / "new" / "folder"
    monkeypatch.setenv("NDSNN_BENCH_OUT", str(out))
    monkeypatch.setattr(bench_conftest, "WRITTEN", {})
    path = record("demo", {"case": "a", "median_ms": 1.0}, device="cpu")
    assert path == out / "demo-cpu.json" and len(read_rows(path)) == 1  # written before the next
    record("demo", {"case": "b", "median_ms": 2.0}, device="cpu")
    record("demo", {"case": "a", "median_ms": 3.0}, device="cpu")
    doc = json.loads(path.read_text())
    assert [(r["case"], r["median_ms"]) for r in doc["results"]] == [("a", 3.0), ("b", 2.0)]
    assert set(doc["results"][0]["recorded"]) == {"date", "commit", "dirty", "load_avg_1m"}
    assert doc["environment"]["device"] == "cpu"


def test_environment_names_cpu_threads_versions_commit_and_flags():
    env = bench_env.environment("cpu")
    assert env["cpu_model"] and env["cpu_model"] != "unknown"
    assert env["logical_cores"] >= 1 and env["torch_threads"] == torch.get_num_threads()
    assert env["load_avg_1m"] is None or env["load_avg_1m"] >= 0
    assert env["torch"] == torch.__version__ and env["ndsnn_triton"]
    assert env["commit"] and env["commit_source"] in ("git", "NDSNN_COMMIT", "version")
    assert env["dirty"] in (True, False, None)
    assert set(env["flags"]) == FLAG_KEYS


def test_recorded_flags_follow_pinned_flags_and_are_restored():
    before = bench_env.torch_flags()
    with pinned_flags(cudnn_benchmark=True, tf32=False):
        inside = bench_env.torch_flags()
    assert inside["cudnn_benchmark"] and not inside["cudnn_allow_tf32"]
    assert not inside["cuda_matmul_allow_tf32"]
    assert inside["float32_matmul_precision"] == "highest"
    assert bench_env.torch_flags() == before


def test_no_tf32_fixture_turns_tf32_off(no_tf32):
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32  # restoring is checked by the autouse fixture


def test_commit_falls_back_to_env_var_then_version(monkeypatch):
    monkeypatch.setattr(bench_env, "_git", lambda *args: None)  # no git, or no .git folder
    monkeypatch.setenv("NDSNN_COMMIT", "abc123")
    assert bench_env.commit_info() == {
        "commit": "abc123",
        "commit_source": "NDSNN_COMMIT",
        "dirty": None,
    }
    monkeypatch.delenv("NDSNN_COMMIT")
    info = bench_env.commit_info()
    assert info["commit_source"] == "version" and info["commit"].endswith("(unknown commit)")


def test_commit_from_git_with_dirty_flag(monkeypatch):
    answers = {"rev-parse": "f" * 40, "status": " M bench/conftest.py"}
    monkeypatch.setattr(bench_env, "_git", lambda cmd, *args: answers[cmd])
    assert bench_env.commit_info() == {"commit": "f" * 40, "commit_source": "git", "dirty": True}


def _docstring_counts(doc: str) -> tuple[int, int]:
    """(default, full) GPU case counts stated in a benchmark module's docstring."""
    default = re.search(r"GPU cases: (\d+) by default", doc)
    full = re.search(r"NDSNN_BENCH_FULL=1``: (\d+) cases", doc)
    assert default and full, "the docstring states both counts"
    return int(default.group(1)), int(full.group(1))


def test_gpu_case_counts_in_docstrings_match_the_grids():
    from bench import test_bench_kernels as kernels
    from bench import test_bench_step as step

    lif = len(kernels.LIF_SHAPES)
    assert _docstring_counts(kernels.__doc__) == (
        len(kernels.conv_cases(full=False)) + lif,
        len(kernels.conv_cases(full=True)) + lif,
    )
    per_density = len(step.MODELS) * len(step.CONFIGS) * len(step.KINDS)
    assert _docstring_counts(step.__doc__) == (
        per_density * len(step.DENSITIES_TRIMMED),
        per_density * len(step.DENSITIES_FULL),
    )
    trimmed = kernels.conv_cases(full=False)
    assert {c.density for c in trimmed} == {0.1, 0.05, 0.01}
    assert {c.dtype for c in trimmed} == {"bf16", "fp32"}
    assert 0.02 not in step.DENSITIES_TRIMMED


def test_readme_quotes_the_recorded_cpu_results():
    """README's CPU table is generated from bench/results/*-cpu.json (python -m bench.cpu_table)."""
    from pathlib import Path

    from bench.cpu_table import cpu_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert cpu_table() in readme


def test_readme_quotes_the_recorded_spike_skipping_results():
    """README's spike-structure and H200 spike-skipping tables are generated from
    bench/results/spike_structure.json and spike_skipping-NVIDIA_H200.json (python -m
    bench.skip_table): a stale figure fails here."""
    from pathlib import Path

    from bench.skip_table import gpu_table, structure_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert structure_table() in readme
    assert gpu_table() in readme


def test_readme_quotes_the_recorded_kernel_predictions():
    """README's prediction table is generated from bench/results/kernel_predictions-H200.json
    (python -m bench.kernel_table), which ``ndsnn roofline --predictions`` writes."""
    from pathlib import Path

    from bench.kernel_table import predictions_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert predictions_table() in readme


def test_measured_kernel_table_reads_the_benchmark_rows(tmp_path, monkeypatch):
    """The measured table is built from the rows ``bench/test_bench_kernels.py`` writes: a
    synthetic file with one row prints its medians (µs), predictions, ratios and fractions."""
    import json

    from bench import kernel_table

    row = {
        "model": "vgg16",
        "layer": "conv2",
        "case": "vgg16.conv2-d0.01-measured-bf16",
        "density": 0.01,
        "spikes": {"label": "measured"},
        "median_ms": {"fwd": 0.05, "dgrad": 0.06, "wgrad": 0.125},
        "predicted_us": {"fwd": 55.0, "dgrad": 51.8, "wgrad": 83.8},
        "roofline_fraction": {"fwd": 0.25, "dgrad": 0.5, "wgrad": 0.125},
        "ratios": {"fwd_bwd_vs_cudnn": 0.55, "auto_vs_cudnn": 0.5, "csr_vs_fwd": 3.0},
    }
    other = dict(row, case="vgg16.conv2-d0.1-measured-bf16", density=0.1)
    env = {"device": "NVIDIA H200", "torch": "2.13", "triton": "3.9", "commit": "abcdef0123"}
    (tmp_path / "kernels-X.json").write_text(
        json.dumps({"environment": env, "results": [row, other]})
    )
    monkeypatch.setattr(kernel_table, "RESULTS", tmp_path)
    table = kernel_table.measured_table("X")
    lines = [line for line in table.splitlines() if line.startswith("| vgg16")]
    assert lines == [
        "| vgg16.conv2 | 50.0 (55.0) | 60.0 (51.8) | 125 (83.8) | 0.55 | 0.50 | 3.0 | 25% / 50% / 12% |"
    ]
    assert "commit abcdef0" in table
