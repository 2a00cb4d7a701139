"""CachedBackend: a backend behind the response cache (response_cache.py), which answers the
rows it has and stores the answers of the others."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from genrun.backend.base import Backend, Completion, Failure, Messages, Prompt, Scored
from genrun.backend.response_cache import COMPLETION_FIELDS, KeyParts, ResponseCache, digest, sha256


class CachedBackend(Backend):
    """A backend behind the response cache: each batch's cached rows are answered from it
    (`cached` completions), the others by the backend, whose answers are then stored. Every
    other attribute (batch size, concurrency, retry policy, classify) is the backend's."""

    def __init__(self, backend: Backend, cache: ResponseCache, run_parts: dict[str, Any]) -> None:
        self.inner, self.cache, self.run_parts = backend, cache, run_parts
        self.key_parts = KeyParts(run_parts)
        for name in ("name", "batch_size", "concurrency", "retries", "base_delay"):
            setattr(self, name, getattr(backend, name))
        self.hits = 0

    def classify(self, exc: Exception) -> Failure:
        return self.inner.classify(exc)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def by_part(self) -> dict[str, dict[str, dict[str, int]]] | None:
        return self.inner.by_part()

    def live_counts(self) -> dict[str, str]:
        return self.inner.live_counts()

    async def generate_batch(self, conversations: list[Messages],  # type: ignore[override]  # chat messages only
                             seeds: list[int] | None = None) -> list[Completion]:
        # What decides a row's answer: the run's parts (backend, model, sampling, extra), the
        # row's messages (images are in them as data URLs, so by content) and its seed.
        own: list[dict[str, Any]] = [{"messages": digest(c), "seed": seeds[i] if seeds else None}
                                     for i, c in enumerate(conversations)]
        texts = [self.key_parts.text(o) for o in own]
        keys = [sha256(t) for t in texts]
        found = self.cache.get(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        answered: list[Completion] = []
        if missing:
            missing_seeds = [seeds[i] for i in missing] if seeds else None
            batch: list[Prompt] = [conversations[i] for i in missing]
            answered = await (self.inner.generate_batch(batch, missing_seeds) if missing_seeds
                              else self.inner.generate_batch(batch))
            self.cache.put([(keys[i], own[i]["messages"], texts[i], stored(c)) for i, c in zip(missing, answered)
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
        texts = [self.key_parts.text(p) for p in keyed_by]
        keys = [sha256(t) for t in texts]
        found = self.cache.get(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        answered = await score([items[i] for i in missing]) if missing else []
        self.cache.put([(keys[i], keyed_by[i]["messages"], texts[i], stored(c)) for i, c in zip(missing, answered)
                        if c.error is None and c.loglikelihoods is not None])
        self.hits += len(items) - len(missing)
        by_position = dict(zip(missing, answered))
        return [by_position.get(i) or from_cache(found[keys[i]]) for i in range(len(items))]

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        self.inner.close()
        self.cache.close()


def stored(completion: Completion) -> dict[str, Any]:
    """What the cache keeps of a completion: dataclasses.asdict(completion), without its
    recursive deep copy (a tenth of the time). Not the rendered prompt: the cache key already
    stands for it, and it would double an entry of a long few-shot prompt."""
    values = {name: getattr(completion, name) for name in COMPLETION_FIELDS if name != "prompt_text"}
    if completion.loglikelihoods is not None:
        values["loglikelihoods"] = [dict(vars(s)) for s in completion.loglikelihoods]
    return values


def from_cache(entry: dict[str, Any]) -> Completion:
    scores = entry.get("loglikelihoods")
    return Completion(**{**entry, "cached": True,
                         "loglikelihoods": None if scores is None else [Scored(**s) for s in scores]})
