"""The interface every backend implements. Batching, concurrency and retries live in
genrun.engine.scheduler, records in genrun.rundir.record, so a backend only answers a batch of conversations."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from genrun.errors import UserError, one_line

# A conversation as OpenAI-style chat messages: [{"role": ..., "content": text or parts}, ...].
Messages = list[dict[str, Any]]
# What a backend is asked to continue: chat messages (through the model's chat template), or
# text given to the model as it is (chat_template=false: base models).
Prompt = Messages | str


@dataclass
class Scored:
    """One continuation's log-likelihood after its context (mode=choice)."""

    logprob: float  # the sum over the continuation's tokens
    tokens: int  # how many tokens the continuation is, after lm-eval's context/continuation split
    greedy: bool  # every continuation token is the model's most likely one


@dataclass
class Completion:
    """One row's outcome: an answer, or an error (answer None)."""

    answer: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str | None = None
    # With sampling.n > 1: every sample's answer and finish reason, in order (answer is the first).
    answers: list[str | None] | None = None
    finish_reasons: list[str | None] | None = None
    cached: bool = False  # answered from the response cache (backend.response_cache), no request sent
    # mode=choice: one per continuation, in order; mode=perplexity: one, the whole text's
    loglikelihoods: list[Scored] | None = None
    # the prompt as the engine read it, chat template applied (local engines; records keep its digest)
    prompt_text: str | None = None

    @staticmethod
    def of_samples(samples: list[Completion]) -> Completion:
        """One row's n samples as one completion; a row is answered only when all its samples are."""
        if len(samples) == 1:
            return samples[0]
        failed = next((s for s in samples if s.error is not None or s.answer is None), None)
        if failed is not None:  # the failed sample's error, reasoning and tokens tell why
            return dataclasses.replace(failed, answer=None, error=failed.error or "a sample has no answer")
        tokens = [s.completion_tokens for s in samples]
        counted = [t for t in tokens if t is not None]
        return Completion(answer=samples[0].answer, finish_reason=samples[0].finish_reason,
                          prompt_tokens=samples[0].prompt_tokens,
                          completion_tokens=sum(counted) if len(counted) == len(tokens) else None,
                          reasoning=samples[0].reasoning, answers=[s.answer for s in samples],
                          finish_reasons=[s.finish_reason for s in samples])


@dataclass
class Failure:
    """How a backend classifies an exception raised by generate_batch."""

    message: str
    retryable: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait
    # No row can succeed (a rejected API key, an unknown model): stop the run, unless rows
    # were answered already (then the cause is this row's, and it fails alone).
    no_row_can_succeed: bool = False
    engine_dead: bool = False  # the engine is gone (its process died): stop the run at once


class Backend:
    """Answers batches of chat conversations.

    batch_size: conversations per generate_batch call (the engine's chunk).
    concurrency: generate_batch calls in flight at once.
    retries, base_delay: the engine's retry policy for errors classify() calls retryable.
    """

    name = "backend"
    # Settings that change how fast answers come, not what they are: they may differ on resume.
    operational: ClassVar[frozenset[str]] = frozenset()
    # The backends of genrun/backend/NAME.py, by name (see genrun.backend.backend_names).
    registry: ClassVar[dict[str, type[Backend]]] = {}
    batch_size: int = 1
    concurrency: int = 1
    retries: int = 0
    base_delay: float = 1.0
    # A backend that can send a run as one Batch API job (backend.batch=true): the openai one.
    takes_batch_jobs: ClassVar[bool] = False
    # A backend that continues text as it is (chat_template=false) and scores log-likelihoods (mode=choice).
    takes_text: ClassVar[bool] = False
    # A backend that scores whole texts in windows of the model's length (mode=perplexity): one that has its tokenizer.
    takes_perplexity: ClassVar[bool] = False
    # A local engine that backend.data_parallel_size runs as several, one process each (replicas.py).
    replicable: ClassVar[bool] = False

    # Rows per loglikelihood_batch call (mode=choice and perplexity), in batches of batch_size:
    # more than one where the backend sorts a call's pairs by length (hf).
    scoring_batches: ClassVar[int] = 1

    @property
    def scoring_rows(self) -> int:
        return self.batch_size * self.scoring_batches

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == f"genrun.backend.{cls.name}":
            Backend.registry[cls.name] = cls

    async def generate_batch(self, conversations: list[Prompt],
                             seeds: list[int] | None = None) -> list[Completion]:
        """One Completion per conversation, in order. A conversation is chat messages, or text
        to continue as it is (a backend that cannot take text raises UserError). seeds (with
        +sampling.seed): each row's own sampling seed, so its samples do not depend on the
        batch it lands in."""
        raise NotImplementedError

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        """mode=choice: for each (context, continuations), a Completion whose loglikelihoods
        score each continuation after the context, as lm-evaluation-harness splits them."""
        raise UserError(f"backend={self.name} cannot score log-likelihoods (mode=choice); use backend=hf or vllm")

    async def loglikelihood_rolling_batch(self, texts: list[str]) -> list[Completion]:
        """mode=perplexity: for each text, a Completion whose one loglikelihood is the whole
        text's, summed over lm-eval's rolling windows of the model's length."""
        raise UserError(f"backend={self.name} cannot score log-likelihoods (mode=perplexity); use backend=hf or vllm")

    def classify(self, exc: Exception) -> Failure:
        return Failure(one_line(f"{type(exc).__name__}: {exc}"))

    def describe(self) -> dict[str, Any]:
        """What run.json records about the model (path or name, chat template hash)."""
        return {}

    def by_part(self) -> dict[str, dict[str, dict[str, int]]] | None:
        """With several servers or engines: what metrics.json says of each, under its key
        (`servers`: each one's requests answered and failed, the times it was set aside;
        `engines`: each one's rows and the times it was lost). None otherwise."""
        return None

    def live_counts(self) -> dict[str, str]:
        """What the progress line shows of the backend itself (each server's answers so far)."""
        return {}

    def reconfigured(self, sampling: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> Backend | None:
        """The same engine answering with other sampling and chat-template settings, sharing its
        memory (genrun-serve gives each session its own settings and one engine); closing it
        leaves the engine to its owner. None: the backend is cheap to build anew (a client)."""
        return None

    # Its owner holds a backend from building it to close(); `async with backend:` holds the
    # part that belongs to one event loop (an HTTP client), released by aclose() on the way out.
    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release what belongs to the event loop (an HTTP client)."""

    def close(self) -> None:
        """Free the model or client. Safe to call twice."""


def template_hash(template: str | None) -> str | None:
    return hashlib.sha256(template.encode()).hexdigest()[:16] if template else None


def check_extra(extra: Mapping[str, Any] | None, backend: str) -> dict[str, Any]:
    """The chat template's keyword arguments, the one extra setting every backend takes."""
    extra = dict(extra or {})
    split_known(extra, {"chat_template_kwargs"}, "extra", backend)
    return dict(extra.get("chat_template_kwargs") or {})


def split_known(settings: Mapping[str, Any], known: set[str], where: str, backend: str) -> None:
    """Reject keys a backend does not understand, naming them (the reference ignored them)."""
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(
            f"{where}.{unknown[0]} is not supported by backend={backend} "
            f"(supported: {', '.join(sorted(known))}); remove it or fix its name"
        )


def drop_none(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (settings or {}).items() if v is not None}
