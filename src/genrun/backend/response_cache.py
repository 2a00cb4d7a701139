"""The response cache (the `cache` config group): answers already paid for, kept by everything
that decides them, and CachedBackend, a backend behind it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from genrun.backend.base import Backend, Completion, Failure, Messages, Scored
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)


# SQLite in WAL mode: several genrun processes (a sweep's jobs) read and write it at once.
# Only answers are kept, never errors.

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, messages TEXT NOT NULL, parts TEXT NOT NULL, completion TEXT NOT NULL, created REAL)"""


def default_path() -> Path:
    from genrun.assets.folder import cache_root

    return cache_root() / "responses.sqlite"


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


BUSY_TIMEOUT_S = 2.0  # how long a write waits for another process's transaction, then goes on without


class ResponseCache:
    """The response cache, which can only help: a read or write that fails (a read-only file,
    a full disk, another process holding the database) is logged once and the run goes on
    without it; a damaged file is one line at open, before any request is sent."""

    def __init__(self, path: str | Path | None = None) -> None:
        import sqlite3

        self.path = Path(path).expanduser() if path else default_path()
        self.writable = True
        self._said: set[str] = set()
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
            return {key: completion_of(text) for key, text in rows if completion_of(text) is not None}
        except sqlite3.Error as exc:
            self._say_once("cannot be read:", exc)
            return {}

    def put(self, entries: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        """(key, key parts, completion) triples, in one transaction. A write that fails (a
        read-only or full disk, a database locked past the busy timeout) turns writes off for
        the rest of the run, said once: the answers themselves are already the run's."""
        import sqlite3

        if not entries or not self.writable:
            return
        now = time.time()
        try:
            self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                                [(key, parts["messages"], json.dumps(parts, sort_keys=True), json.dumps(completion),
                                  now) for key, parts, completion in entries])
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
        self.db.close()


def remove_cache_files(path: Path) -> None:
    """A damaged cache file goes whole (with its -wal and -shm): nothing in it can be trusted."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def completion_of(text: str) -> dict[str, Any] | None:
    """A stored completion, if it is one (a damaged entry is a miss)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    fields = {f.name for f in dataclasses.fields(Completion)}
    if not isinstance(value, dict) or not set(value) <= fields:
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


class CachedBackend(Backend):
    """A backend behind the response cache: each batch's cached rows are answered from it
    (`cached` completions), the others by the backend, whose answers are then stored. Every
    other attribute (batch size, concurrency, retry policy, classify) is the backend's."""

    def __init__(self, backend: Backend, cache: ResponseCache, run_parts: dict[str, Any]) -> None:
        self.inner, self.cache, self.run_parts = backend, cache, run_parts
        for name in ("name", "batch_size", "concurrency", "retries", "base_delay"):
            setattr(self, name, getattr(backend, name))
        self.hits = 0

    def classify(self, exc: Exception) -> Failure:
        return self.inner.classify(exc)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def parts(self, messages: Any, seed: int | None) -> dict[str, Any]:
        """What decides a row's answer: the run's backend, model, sampling and extra settings,
        the row's messages (images are in them as data URLs, so by content) and its seed."""
        return {**self.run_parts, "messages": digest(messages), "seed": seed}

    async def generate_batch(self, conversations: list[Messages], seeds: list[int] | None = None) -> list[Completion]:
        parts = [self.parts(c, seeds[i] if seeds else None) for i, c in enumerate(conversations)]
        keys = [digest(p) for p in parts]
        found = self.cache.get(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        answered: list[Completion] = []
        if missing:
            missing_seeds = [seeds[i] for i in missing] if seeds else None
            batch = [conversations[i] for i in missing]
            answered = await (self.inner.generate_batch(batch, missing_seeds) if missing_seeds
                              else self.inner.generate_batch(batch))
            self.cache.put([(keys[i], parts[i], dataclasses.asdict(c)) for i, c in zip(missing, answered)
                            if c.error is None and c.answer is not None])
        self.hits += len(conversations) - len(missing)
        by_position = dict(zip(missing, answered))
        return [by_position[i] if i in by_position else from_cache(found[keys[i]]) for i in range(len(conversations))]

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        """mode=choice, keyed by the context and every continuation."""
        return await self._scored(rows, [{"messages": digest(context), "continuations": digest(continuations)}
                                         for context, continuations in rows], self.inner.loglikelihood_batch)

    async def loglikelihood_rolling_batch(self, texts: list[str]) -> list[Completion]:
        """mode=perplexity, keyed by the text and that it is scored whole."""
        return await self._scored(texts, [{"messages": digest(text), "rolling": True} for text in texts],
                                  self.inner.loglikelihood_rolling_batch)

    async def _scored(self, items: list[Any], keyed_by: list[dict[str, Any]],
                      score: Callable[[list[Any]], Awaitable[list[Completion]]]) -> list[Completion]:
        """Log-likelihood rows from the cache where it has them; the others scored and stored."""
        parts = [{**self.run_parts, **p} for p in keyed_by]
        keys = [digest(p) for p in parts]
        found = self.cache.get(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        answered = await score([items[i] for i in missing]) if missing else []
        self.cache.put([(keys[i], parts[i], dataclasses.asdict(c)) for i, c in zip(missing, answered)
                        if c.error is None and c.loglikelihoods is not None])
        self.hits += len(items) - len(missing)
        by_position = dict(zip(missing, answered))
        return [by_position.get(i) or from_cache(found[keys[i]]) for i in range(len(items))]

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        self.inner.close()
        self.cache.close()


def from_cache(stored: dict[str, Any]) -> Completion:
    scores = stored.get("loglikelihoods")
    return Completion(**{**stored, "cached": True,
                         "loglikelihoods": None if scores is None else [Scored(**s) for s in scores]})
