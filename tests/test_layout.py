"""The package's shape, checked: its layers and the absence of import cycles (import-linter,
function-level imports counted), the linter, module sizes, the root config read only at the
edge, and a start-up path that loads only what it needs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "genrun"
# the only places that read the composed root config (Hydra hands it to its callbacks: the tracker's)
EDGE = {"cli.py", "settings", "callback.py"}
MAX_LINES = 350


def test_the_layers_hold_and_no_package_has_an_import_cycle() -> None:
    result = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_linter_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_type_checker_passes() -> None:
    """mypy over src/genrun ([tool.mypy] in pyproject.toml), as every change must keep it."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.startswith("Success: no issues found")


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "testing" not in p.parts)


def test_no_module_is_over_350_lines_and_every_package_says_what_it_holds() -> None:
    long = [f"{p.relative_to(SRC)}: {len(p.read_text().splitlines())}" for p in modules()
            if len(p.read_text().splitlines()) > MAX_LINES]
    assert long == []
    for package in sorted({p.parent for p in modules()}):
        init = package / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), package


def test_no_function_outside_the_edge_takes_the_root_config() -> None:
    takers = []
    for path in modules():
        if path.name in EDGE or EDGE & set(path.relative_to(SRC).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in [*node.args.args, *node.args.kwonlyargs]:
                    if arg.annotation is not None and "DictConfig" in ast.unparse(arg.annotation):
                        takers.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}({arg.arg})")
    assert takers == []


def test_the_cli_loads_only_the_settings_and_the_backends_schemas() -> None:
    code = ("import sys, genrun.cli; print(' '.join(sorted(m for m in sys.modules if m.startswith('genrun')))); "
            "print(' '.join(m for m in ('torch', 'transformers', 'vllm', 'openai', 'datasets', 'numpy') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, heavy = result.stdout.splitlines() if result.stdout.count("\n") > 1 else (result.stdout.strip(), "")
    packages = {m.split(".")[1] for m in loaded.split() if m.count(".")}
    assert packages <= {"cli", "settings", "backend", "credentials", "errors"}, packages
    assert heavy.strip() == ""
