"""conf/ is found from an installed wheel run from another folder, not only from a checkout,
and genrun-view's templates and stylesheet ship in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import overlay_venv, read_jsonl

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_finds_its_configs_from_any_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("genrun-*.whl")
    venv = tmp_path / "venv"
    # The dependencies come from this environment (a venv or not); only genrun itself from the wheel.
    python, genrun = overlay_venv(venv), venv / "bin" / "genrun"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import genrun, genrun.settings as c; print(genrun.__file__); print(c.conf_dir())"],
                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv))

    out = tmp_path / "run"
    result = subprocess.run([str(genrun), "experiment=tiny", "dataset.limit=3", f"hydra.run.dir={out}"],
                            cwd=elsewhere, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out / "answers.jsonl")) == 3

    report = tmp_path / "report.html"  # the viewer's templates and stylesheet come from the wheel
    result = subprocess.run([str(venv / "bin" / "genrun-view"), str(out), "--export", str(report)], cwd=elsewhere,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "table.sortable th" in report.read_text()
