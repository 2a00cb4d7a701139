"""Helpers shared by the backends that load a model on this machine (hf, vllm)."""

from __future__ import annotations

import os
from pathlib import Path

from genrun.errors import UserError


def parse_gpu_ids(gpu_ids: str | int | None) -> list[int] | None:
    """'0,1' -> [0, 1]; None or '' -> None (leave the devices as they are)."""
    if gpu_ids is None or str(gpu_ids).strip() in ("", "None", "null"):
        return None
    try:
        return [int(part) for part in str(gpu_ids).replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"backend.gpu_ids={gpu_ids!r} is not a list of GPU numbers like \"0,1\"") from None


def looks_local(path: str) -> bool:
    """A path the user meant as a folder on disk, not a hub id like 'org/name'."""
    return path.startswith(("/", "./", "../", "~")) or os.sep + os.sep in path or path.count("/") > 1


def check_model_path(path: str) -> None:
    expanded = Path(path).expanduser()
    if looks_local(path) and not expanded.exists():
        raise UserError(
            f"backend.model_name_or_path={path!r}: no such folder "
            "(give a model folder or hub id; build a demo model with `genrun-tiny-model DIR`)"
        )
    if expanded.exists() and not (expanded / "config.json").exists():
        raise UserError(f"backend.model_name_or_path={path!r}: folder has no config.json, so it is not a model")
