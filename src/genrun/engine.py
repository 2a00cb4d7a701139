"""Feeds requests to a backend: batching, concurrency and the retry policy, in one place.

`concurrency` workers each pull the next batch from the shared request iterator as soon as
they are free, so the backend always has that many batches in flight while work remains
(no waves), and memory holds only what is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from genrun.backend.base import Backend, Completion
from genrun.errors import FatalBackendError, UserError
from genrun.prompts import Messages

log = logging.getLogger(__name__)


@dataclass
class Request:
    index: int
    messages: Messages | None  # None when the row could not be built
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


OnAnswer = Callable[[Request, Completion, float], None]


async def answer_all(backend: Backend, requests: Iterable[Request], on_answer: OnAnswer) -> None:
    """Answer every request, calling on_answer(request, completion, latency_s) as each is known."""
    source = iter(requests)
    answered_any = False

    def next_batch() -> list[Request]:
        batch: list[Request] = []
        for request in source:
            if request.error is not None:
                on_answer(request, Completion(error=request.error), 0.0)
                continue
            batch.append(request)
            if len(batch) >= backend.batch_size:
                break
        return batch

    async def attempt(batch: list[Request]) -> list[Completion]:
        nonlocal answered_any
        conversations = [r.messages for r in batch]
        for try_number in range(backend.retries + 1):
            try:
                completions = await backend.generate_batch(conversations)
                answered_any = answered_any or any(c.answer is not None for c in completions)
                return completions
            except (UserError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - the backend classifies it
                failure = backend.classify(exc)
                if failure.auth and not answered_any:
                    raise FatalBackendError(failure.message) from exc
                if not failure.retryable or try_number == backend.retries:
                    return [Completion(error=failure.message) for _ in batch]
                delay = failure.retry_after
                if delay is None:
                    delay = backend.base_delay * 2**try_number + random.uniform(0, backend.base_delay)
                log.debug("retrying %d rows in %.2fs after: %s", len(batch), delay, failure.message)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def worker() -> None:
        while batch := next_batch():
            started = time.perf_counter()
            completions = await attempt(batch)
            latency = time.perf_counter() - started
            if len(completions) != len(batch):
                raise RuntimeError(f"{backend.name} returned {len(completions)} answers for {len(batch)} rows")
            for request, completion in zip(batch, completions):
                on_answer(request, completion, latency)

    if backend.concurrency < 1:
        raise UserError(f"backend.concurrency must be at least 1, got {backend.concurrency}")
    tasks = [asyncio.create_task(worker()) for _ in range(backend.concurrency)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
