"""Resume: a run directory is finished by rerunning into it, only if the answers already there
were made with the same answer-changing config and the same data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genrun.errors import UserError


def check_resume_dir(resume: str | None, out_dir: Path) -> None:
    if not resume:
        return
    if Path(resume).expanduser().resolve() != out_dir.resolve():
        raise UserError(f"resume={resume} and hydra.run.dir={out_dir} name different directories: "
                        "give only resume=<the run to finish>")
    if not (out_dir / "answers.jsonl").exists():
        raise UserError(f"resume={resume}: no answers.jsonl there to resume (check the run directory)")


def saved_run(out_dir: Path) -> dict[str, Any] | None:
    """The run.json of the answers already in out_dir (None when there are none to resume)."""
    saved_path = out_dir / "run.json"
    if not (out_dir / "answers.jsonl").exists() or not saved_path.exists():
        return None
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{saved_path} is not readable JSON: it cannot say how the answers there were made; "
                        "use a new run directory") from None
    return saved if isinstance(saved, dict) else None


# What `resume=DIR` may come with and still mean "the run's own command line".
RESUME_KEYS = ("resume", "retry_errors", "resume_allow_changed_dataset")


def with_saved_overrides(args: list[str]) -> list[str]:
    """`genrun resume=DIR` alone (with retry_errors, resume_allow_changed_dataset or hydra.*
    at most) reuses the run's own command line: the overrides it was started with
    (DIR/.hydra/overrides.yaml), then these. With any other override the command line given is
    the run's, as before (leaving dataset.limit out then means every row)."""
    given = {override_key(a): a for a in args if not a.startswith("-")}
    resume = given.get("resume", "").partition("=")[2].strip("'\"")
    if not resume or resume == "null" or any(k not in RESUME_KEYS and not k.startswith("hydra.") for k in given):
        return args
    saved_path = Path(resume).expanduser() / ".hydra" / "overrides.yaml"
    try:
        import yaml

        saved = yaml.safe_load(saved_path.read_text())
    except (OSError, ValueError, ImportError):
        return args  # none saved (or unreadable): the command line alone, as before
    if not isinstance(saved, list):
        return args
    kept = [str(a) for a in saved if isinstance(a, str) and override_key(a) not in given]
    return [*kept, *args]


def override_key(arg: str) -> str:
    """The key an override sets: `+a.b=1` and `~a.b` -> `a.b`; `backend=hf` -> `backend`."""
    return arg.lstrip("+~").partition("=")[0].removeprefix("override ").strip()


def check_resumable(identity: dict[str, Any], saved: dict[str, Any] | None, out_dir: Path) -> None:
    """identity: the answer-changing config of this run (Settings.identity)."""
    if saved is None:
        return
    before = saved.get("config", {})
    changed = diff_keys(before, identity)
    if changed:
        shown = "; ".join(f"{key}: {value_at(before, key)!r} then, {value_at(identity, key)!r} now"
                          for key in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise UserError(
            f"cannot resume {out_dir}: its answers were made with different settings ({shown}{more}); "
            "use a new run directory, or set those keys back"
        )


def value_at(config: Any, dotted: str) -> Any:
    """The value at a dotted key of a nested mapping (None where it has none)."""
    for part in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(part)
    if isinstance(config, str) and len(config) > 80:
        return config[:77] + "..."
    return config


def check_same_dataset(saved: dict[str, Any] | None, dataset: dict[str, Any], allowed: bool) -> None:
    """The same path may hold other data by now: resuming would then mix rows of both."""
    if saved is None:
        return
    before, now_ = (saved.get("dataset") or {}).get("fingerprint"), dataset.get("fingerprint")
    if before and now_ and before != now_ and not allowed:
        raise UserError(
            f"cannot resume: dataset.path={dataset['path']!r} changed since its answers were made "
            f"(fingerprint {before} then, {now_} now); use a new run directory, or set "
            "resume_allow_changed_dataset=true if the rows already answered are unchanged"
        )


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []
