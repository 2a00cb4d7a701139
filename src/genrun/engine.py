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
    if backend.concurrency < 1:
        raise UserError(f"backend.concurrency must be at least 1, got {backend.concurrency}")
    source = iter(requests)
    answered_any = False
    fatal: FatalBackendError | None = None  # once set, no new attempt starts
    # `sending` bounds the attempts in flight. A batch waiting out a retry delay gives its slot
    # to the next batch, so the backend stays at full concurrency; `live` bounds the batches
    # held in memory (in flight plus waiting to retry).
    sending = asyncio.Semaphore(backend.concurrency)
    live = asyncio.Semaphore(2 * backend.concurrency)

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

    async def answer(batch: list[Request]) -> None:
        nonlocal answered_any, fatal
        conversations = [r.messages for r in batch]
        started = time.perf_counter()
        for try_number in range(backend.retries + 1):
            try:
                async with sending:
                    if fatal is not None:
                        raise fatal
                    completions = await backend.generate_batch(conversations)
                answered_any = answered_any or any(c.answer is not None for c in completions)
                break
            except UserError:  # FatalBackendError included
                raise
            except Exception as exc:  # noqa: BLE001 - the backend classifies it
                failure = backend.classify(exc)
                if failure.engine_dead or (failure.no_row_can_succeed and not answered_any):
                    fatal = fatal or FatalBackendError(failure.message)
                    raise fatal from exc
                if not failure.retryable or try_number == backend.retries:
                    completions = [Completion(error=failure.message) for _ in batch]
                    break
                delay = failure.retry_after
                if delay is None:
                    delay = backend.base_delay * 2**try_number + random.uniform(0, backend.base_delay)
                log.debug("retrying %d rows in %.2fs after: %s", len(batch), delay, failure.message)
                await asyncio.sleep(delay)
        if len(completions) != len(batch):
            raise RuntimeError(f"{backend.name} returned {len(completions)} answers for {len(batch)} rows")
        latency = time.perf_counter() - started
        for request, completion in zip(batch, completions):
            on_answer(request, completion, latency)

    tasks: set[asyncio.Task] = set()
    failed: list[BaseException] = []

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        live.release()
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())

    try:
        while not failed:
            await live.acquire()
            batch = next_batch() if not failed else []
            if not batch:
                live.release()
                break
            task = asyncio.create_task(answer(batch))
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
        await backend.aclose()
