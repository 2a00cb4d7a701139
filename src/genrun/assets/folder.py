"""genrun's folder in the user's cache (`~/.cache/genrun`, or GENRUN_CACHE): what is built into
it once, atomically (the demo and test models, converted GGUF files), and the default home of
the response cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    return Path(os.environ.get("GENRUN_CACHE") or Path.home() / ".cache" / "genrun")


def cached(name: str, build: Callable[[Path], None]) -> Path:
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
