"""Import layering, read from the source with ``ast`` (nothing is imported): the ``nn`` modules
reach the kernels only through ``ops``/``backend``, and ``neuron_equations`` depends on none of
kernels, ops or nn."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "ndsnn_triton"
ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / PACKAGE
NN_FILES = sorted((PACKAGE_DIR / "nn").rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` for every import in ``path``, relative ones resolved.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule), so
    ``from ndsnn_triton import kernels`` counts as importing ``ndsnn_triton.kernels``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def _violations(paths: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``file:line imports module``, once per offending import line, for each import of a
    forbidden module or its submodules."""
    bad: dict[tuple[str, int], str] = {}
    for path in paths:
        rel = path.relative_to(root).as_posix()
        for line, name in _imported_modules(path, root):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.setdefault((rel, line), f"{rel}:{line} imports {name}")
    return [bad[key] for key in sorted(bad)]


def test_nn_files_found() -> None:
    assert len(NN_FILES) >= 5, f"expected the nn package's modules under {PACKAGE_DIR / 'nn'}"


def test_nn_does_not_import_kernels() -> None:
    bad = _violations(NN_FILES, (f"{PACKAGE}.kernels",))
    assert not bad, "nn modules must reach kernels only through ops/backend:\n" + "\n".join(bad)


def test_neuron_equations_is_a_leaf() -> None:
    forbidden = tuple(f"{PACKAGE}.{m}" for m in ("kernels", "ops", "nn"))
    bad = _violations([PACKAGE_DIR / "neuron_equations.py"], forbidden)
    assert not bad, "neuron_equations must not import kernels, ops or nn:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from ndsnn_triton.kernels.lif import x\n", True),
        ("import ndsnn_triton.kernels.sparse_index\n", True),
        ("from ndsnn_triton import kernels\n", True),
        ("from ..kernels import lif\n", True),
        ("from ..kernels.lif import x\n", True),
        ("def f():\n    from ndsnn_triton.kernels import lif\n", True),
        ("from ndsnn_triton.ops import masked_linear\n", False),
        ("from .surrogate import ATan\n", False),
        ("from ndsnn_triton.kernels_extra import x\n", False),
    ],
)
def test_checker_flags_kernel_imports(tmp_path: Path, source: str, flagged: bool) -> None:
    """The checker itself: absolute, relative and nested imports of kernels are caught."""
    nn_dir = tmp_path / PACKAGE / "nn"
    nn_dir.mkdir(parents=True)
    path = nn_dir / "probe.py"
    path.write_text(source, encoding="utf-8")
    bad = _violations([path], (f"{PACKAGE}.kernels",), root=tmp_path)
    assert bool(bad) == flagged, bad
    if flagged:
        assert bad[0].startswith(f"{PACKAGE}/nn/probe.py:")
