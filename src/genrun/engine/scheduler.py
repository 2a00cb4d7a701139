"""Feeds requests to a backend: batching, concurrency and the retry policy, in one place.

Up to `backend.concurrency` batches are in flight: as soon as one is answered, the next is
taken from the shared request iterator (no waves), so memory holds only what is in flight.
The scheduler never opens or closes the backend: its caller owns it, from building it to
`close()`, and opens its event-loop resources with `async with backend:`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from typing import Awaitable, Callable, Iterable, Iterator, cast

from genrun.backend.base import Backend, Completion, Prompt
from genrun.errors import FatalBackendError, UserError
from genrun.prompt.request import Request

log = logging.getLogger(__name__)


OnAnswer = Callable[[Request, Completion, float | None], None]  # latency None: not timed (a Batch result)


def sendable(requests: Iterable[Request], on_answer: OnAnswer) -> Iterator[Request]:
    """The requests that can be sent; a row that could not be built is recorded at once, with
    its error, by whatever answers the rest (the scheduler, or a Batch file or job)."""
    for request in requests:
        if request.error is not None:
            on_answer(request, Completion(error=request.error), None)
        else:
            yield request


class Scheduler:
    """scheduler.run(requests) answers every request, calling on_answer(request, completion,
    latency_s) as each is known. A backend that cannot answer any row (FatalBackendError)
    stops it: no new attempt starts, and the batches in flight are cancelled."""

    def __init__(self, backend: Backend, on_answer: OnAnswer,
                 on_retrying: Callable[[int], None] | None = None) -> None:
        if backend.concurrency < 1:
            raise UserError(f"backend.concurrency must be at least 1, got {backend.concurrency}")
        self.backend, self.on_answer = backend, on_answer
        # Rows being retried now (waiting out a delay or asked again), told on each change: the progress line.
        self.retrying = 0
        self.on_retrying = on_retrying or (lambda count: None)
        self.answered_any = False  # a row answered: a "no row can succeed" error is then that row's
        self.fatal: FatalBackendError | None = None
        # `sending` bounds the attempts in flight. A batch waiting out a retry delay gives its
        # slot to the next batch, so the backend stays at full concurrency; `live` bounds the
        # batches held in memory (in flight plus waiting to retry).
        self.sending = asyncio.Semaphore(backend.concurrency)
        self.live = asyncio.Semaphore(2 * backend.concurrency)

    async def run(self, requests: Iterable[Request]) -> None:
        source = sendable(requests, self.on_answer)
        tasks: set[asyncio.Task] = set()
        failed: list[BaseException] = []

        def done(task: asyncio.Task) -> None:
            tasks.discard(task)
            self.live.release()
            error = None if task.cancelled() else task.exception()
            if error is not None:
                failed.append(error)

        try:
            while not failed:
                await self.live.acquire()
                batch = self._next_batch(source)
                if not batch:
                    self.live.release()
                    break
                task = asyncio.create_task(self._answer(batch))
                tasks.add(task)
                task.add_done_callback(done)
            while tasks and not failed:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_EXCEPTION)
            if failed:
                raise failed[0]
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _next_batch(self, source: Iterator[Request]) -> list[Request]:
        """Up to batch_size sendable requests (source: from sendable()); rows whose
        log-likelihoods are scored go scoring_rows at a time."""
        first = next(source, None)
        if first is None:
            return []
        scored = first.rolling or first.continuations is not None
        size = self.backend.scoring_rows if scored else self.backend.batch_size
        return [first, *itertools.islice(source, size - 1)]

    async def _answer(self, batch: list[Request]) -> None:
        started = time.perf_counter()
        completions = await self._generate(self._call(batch), len(batch))
        if len(completions) != len(batch):
            raise RuntimeError(f"{self.backend.name} returned {len(completions)} answers for {len(batch)} rows")
        latency = time.perf_counter() - started
        for request, completion in zip(batch, completions):
            self.on_answer(request, completion, latency)

    def _call(self, batch: list[Request]) -> Callable[[], Awaitable[list[Completion]]]:
        """What answers the batch: its continuations scored (mode=choice), its texts scored
        (mode=perplexity), or generated."""
        backend = self.backend
        if batch[0].rolling:
            texts = [str(r.messages) for r in batch]
            return lambda: backend.loglikelihood_rolling_batch(texts)
        if batch[0].contexts is not None:  # partial scoring: one (context, [continuation]) row per choice
            pairs = [(context, list(r.continuations or [])) for r in batch for context in r.contexts or []]
            sizes = [len(r.contexts or []) for r in batch]
            return lambda: joined(backend.loglikelihood_batch(pairs), sizes)
        if batch[0].continuations is not None:
            rows = [(str(r.messages), list(r.continuations or [])) for r in batch]
            return lambda: backend.loglikelihood_batch(rows)
        conversations: list[Prompt] = [r.messages for r in batch]  # type: ignore[misc]
        seeds = [r.seed for r in batch] if any(r.seed is not None for r in batch) else None
        if seeds is None:
            return lambda: backend.generate_batch(conversations)
        return lambda: backend.generate_batch(conversations, cast(list[int], seeds))  # +sampling.seed: every row's

    async def _generate(self, call: Callable[[], Awaitable[list[Completion]]], rows: int) -> list[Completion]:
        """One batch, retried as the backend's classify() says; errors become error completions."""
        backend = self.backend
        try_number = 0
        try:
            while True:
                try:
                    async with self.sending:
                        if self.fatal is not None:
                            raise self.fatal
                        completions = await call()
                    self.answered_any = self.answered_any or any(
                        c.answer is not None or c.loglikelihoods is not None for c in completions)
                    return completions
                except UserError:  # FatalBackendError included
                    raise
                except Exception as exc:  # noqa: BLE001 - the backend classifies it
                    if self.fatal is not None:  # a batch in flight when the backend broke: no row's own error
                        raise self.fatal from exc
                    failure = backend.classify(exc)
                    if failure.engine_dead or (failure.no_row_can_succeed and not self.answered_any):
                        self.fatal = self.fatal or FatalBackendError(failure.message)
                        raise self.fatal from exc
                    if not failure.retryable or try_number >= backend.retries:
                        return [Completion(error=failure.message) for _ in range(rows)]
                    delay = failure.retry_after
                    if delay is None:
                        delay = backend.base_delay * 2**try_number + random.uniform(0, backend.base_delay)
                    log.debug("retrying %d rows in %.2fs after: %s", rows, delay, failure.message)
                    if try_number == 0:
                        self._retrying(rows)
                    await asyncio.sleep(delay)
                    try_number += 1
        finally:
            if try_number:
                self._retrying(-rows)

    def _retrying(self, change: int) -> None:
        self.retrying += change
        self.on_retrying(self.retrying)


async def joined(scored: Awaitable[list[Completion]], sizes: list[int]) -> list[Completion]:
    """Partial scoring: each choice was scored as a row of its own; a row is its choices'
    log-likelihoods in order, or the first of their errors."""
    completions, start = [], 0
    flat = await scored
    for size in sizes:
        group, start = flat[start:start + size], start + size
        failed = next((c for c in group if c.loglikelihoods is None), None)
        completions.append(failed or Completion(loglikelihoods=[c.loglikelihoods[0] for c in group],  # type: ignore[index]
                                                prompt_tokens=group[0].prompt_tokens if group else None))
    return completions


async def answer(backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                 on_retrying: Callable[[int], None] | None = None) -> None:
    """Answer requests with a backend, holding its event-loop part for as long as this loop."""
    async with backend:
        await Scheduler(backend, on_answer, on_retrying).run(requests)
