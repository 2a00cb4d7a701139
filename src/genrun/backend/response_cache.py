"""The response cache (the `cache` config group): answers already paid for, kept by everything
that decides them, in one SQLite file (CachedBackend, in cached.py, puts a backend behind it)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import orjson

from genrun.backend.base import Completion
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)


# SQLite in WAL mode: several genrun processes (a sweep's jobs) read and write it at once.
# Only answers are kept, never errors.

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, messages TEXT NOT NULL, parts TEXT NOT NULL, completion TEXT NOT NULL, created REAL)"""


def default_path() -> Path:
    from genrun.assets.folder import cache_root

    return cache_root() / "responses.sqlite"


# json.dumps(value, sort_keys=True, ensure_ascii=False, default=str), without an encoder per call
_encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str).encode


def encoded(value: Any) -> str:
    """The one JSON text of a value that keys are made from."""
    return _encode(value)


def digest(value: Any) -> str:
    return hashlib.sha256(encoded(value).encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class KeyParts:
    """What decides a run's answers, encoded once; text(own) is the key text of one row's
    parts, exactly encoded({**fixed, **own}) (so keys stay those of every earlier genrun),
    without encoding the run's settings again for every row."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        self.fixed = {key: f"{encoded(key)}: {encoded(value)}" for key, value in fixed.items()}
        self.keys: dict[str, str] = {}  # a row's own key names, encoded

    def text(self, own: dict[str, Any]) -> str:
        pairs = dict(self.fixed)
        for key, value in own.items():
            name = self.keys.get(key)
            if name is None:
                name = self.keys[key] = encoded(key)
            pairs[key] = f"{name}: {_encoded_value(value)}"
        return "{" + ", ".join(pairs[key] for key in sorted(pairs)) + "}"


def _encoded_value(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str and value.isascii() and value.isalnum():  # a digest: nothing to escape
        return f'"{value}"'
    return encoded(value)


BUSY_TIMEOUT_S = 2.0  # how long a write waits for another process's transaction, then goes on without
# Answers are stored in transactions of PUT_ROWS answers or of what came in a second: one
# commit per batch of 256 cost 60 us a row on this project's CI disk, one per 4,096 about 25
# (a thread of its own gained nothing: the GIL). What a crash leaves unstored is in the run's
# answers.jsonl already.
PUT_ROWS, PUT_EVERY_S = 4096, 1.0


class ResponseCache:
    """The response cache, which can only help: a read or write that fails (a read-only file,
    a full disk, another process holding the database) is logged once and the run goes on
    without it; a damaged file is one line at open, before any request is sent."""

    def __init__(self, path: str | Path | None = None) -> None:
        import sqlite3

        self.path = Path(path).expanduser() if path else default_path()
        self.writable = True
        self._said: set[str] = set()
        self._pending: list[tuple[str, str, str, str, float]] = []
        self._stored_at = time.monotonic()
        fix = f"clear it with `genrun-cache clear --path {self.path}`, or choose another cache.path (or cache=off)"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                      check_same_thread=False)
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute(SCHEMA)
            except sqlite3.OperationalError as exc:  # a read-only file or folder: read what is there
                if not self.path.exists():
                    raise
                self.db.close()
                self.db = self._read_only()
                self._no_writes(exc)
            verdict = self.db.execute("PRAGMA quick_check").fetchone()[0]
        except (OSError, sqlite3.OperationalError) as exc:
            raise UserError(f"cache.path={str(self.path)!r} cannot be opened: {exc}; choose another cache.path "
                            "or cache=off") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise UserError(f"cache.path={str(self.path)!r} is damaged ({exc}); {fix}") from None
        if verdict != "ok":
            raise UserError(f"cache.path={str(self.path)!r} is damaged ({one_line(verdict, 200)}); {fix}")

    def _read_only(self) -> Any:
        """The database opened for reading only; on read-only media where SQLite cannot make
        its shared-memory file, as immutable (nothing can change it there)."""
        import sqlite3

        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "immutable=1"):
            db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("SELECT COUNT(*) FROM responses").fetchone()
                return db
            except sqlite3.OperationalError:
                db.close()
                if mode == "immutable=1":
                    raise
        raise AssertionError("unreachable")

    def _say_once(self, what: str, exc: BaseException) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning("response cache %s: %s %s; the run goes on without it", self.path, what, exc)

    def _no_writes(self, exc: BaseException) -> None:
        self.writable = False
        self._say_once("cannot store answers:", exc)

    def get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored completions (as dicts) of the keys that have one; none when it cannot be read."""
        import sqlite3

        marks = ",".join("?" * len(keys))
        try:
            rows = self.db.execute(f"SELECT key, completion FROM responses WHERE key IN ({marks})", keys).fetchall()
        except sqlite3.Error as exc:
            self._say_once("cannot be read:", exc)
            return {}
        found = {}
        for key, text in rows:
            completion = completion_of(text)
            if completion is not None:
                found[key] = completion
        return found

    def put(self, entries: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """(key, messages digest, key text, completion) for each answer; stored in one
        transaction with the others of the last second (see PUT_ROWS). A write that fails (a
        read-only or full disk, a database locked past the busy timeout) turns writes off for
        the rest of the run, said once: the answers themselves are already the run's."""
        if not self.writable:
            return
        now = time.time()
        self._pending.extend((key, messages, text, json.dumps(completion), now)
                             for key, messages, text, completion in entries)
        if len(self._pending) >= PUT_ROWS or time.monotonic() - self._stored_at >= PUT_EVERY_S:
            self.store()

    def store(self) -> None:
        """Write the answers put since the last store, in one transaction."""
        import sqlite3

        pending, self._pending, self._stored_at = self._pending, [], time.monotonic()
        if not pending or not self.writable:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", pending)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._no_writes(exc)

    def stats(self) -> dict[str, Any]:
        count, = self.db.execute("SELECT COUNT(*) FROM responses").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": count, "bytes": size}

    def clear(self) -> int:
        count, = self.db.execute("SELECT COUNT(*) FROM responses").fetchone()
        self.db.execute("DELETE FROM responses")
        self.db.execute("VACUUM")
        return count


    def explain(self, parts: dict[str, Any], before: float = math.inf) -> str:
        """Why a row with these key parts was (or was not) answered from the entries stored
        before `before` (a run's start): which parts differ from the nearest one with the same
        messages."""
        key = digest(parts)
        if self.db.execute("SELECT 1 FROM responses WHERE key = ? AND created < ?", (key, before)).fetchone():
            return "in the cache: the row is answered from it"
        rows = self.db.execute("SELECT parts FROM responses WHERE messages = ? AND created < ? AND key != ?",
                               (parts["messages"], before, key)).fetchall()
        if not rows:
            return ("no entry from before this run holds these messages: they were never answered, or "
                    "the prompt differs (the data, dataset.template, system_prompt, few-shot examples or images)")
        best = min((json.loads(r[0]) for r in rows), key=lambda other: len(differences(parts, other)))
        return "an entry holds these messages, but differs in: " + "; ".join(differences(parts, best))

    def close(self) -> None:
        """Store what is pending, then close."""
        try:
            self.store()
        finally:
            self.db.close()


def remove_cache_files(path: Path) -> None:
    """A damaged cache file goes whole (with its -wal and -shm): nothing in it can be trusted."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


COMPLETION_FIELDS = tuple(f.name for f in dataclasses.fields(Completion))
COMPLETION_KEYS = frozenset(COMPLETION_FIELDS)


def completion_of(text: str) -> dict[str, Any] | None:
    """A stored completion, if it is one (a damaged entry is a miss)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # what orjson does not read but json wrote (NaN)
            value = json.loads(text)
        except (TypeError, ValueError):
            return None
    except TypeError:
        return None
    if not isinstance(value, dict) or not value.keys() <= COMPLETION_KEYS:
        return None
    scores = value.get("loglikelihoods")
    if scores is None:
        return value if isinstance(value.get("answer"), str) else None
    def valid(s: Any) -> bool:  # a damaged entry must not reach scoring as strings
        return (isinstance(s, dict) and set(s) == {"logprob", "tokens", "greedy"}
                and isinstance(s["logprob"], (int, float)) and isinstance(s["tokens"], int)
                and isinstance(s["greedy"], bool))

    return value if isinstance(scores, list) and scores and all(map(valid, scores)) else None


def differences(mine: Any, other: Any, prefix: str = "") -> list[str]:
    if isinstance(mine, dict) and isinstance(other, dict):
        return [d for k in sorted(set(mine) | set(other))
                for d in differences(mine.get(k), other.get(k), f"{prefix}{k}.")]
    return [] if mine == other else [f"{prefix.rstrip('.')} ({json.dumps(mine)} here, {json.dumps(other)} cached)"]
