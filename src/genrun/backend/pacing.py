"""Request pacing for paid and shared endpoints (the openai backend): requests and tokens per
minute, spread evenly from the start (aiolimiter's leaky bucket, one request's worth deep),
and an AIMD window that halves the requests in flight when the server says it is overloaded
and grows back by one as requests succeed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


class Pacer:
    """`await pacer.wait(tokens)` before a request; `pacer.used(estimated, actual)` after it."""

    def __init__(self, rpm: float | None, tpm: float | None, request_tokens: int = 1024) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.depth = 2 * request_tokens  # the bucket holds about one request's tokens: no burst
        self._requests: Any = None
        self._tokens: Any = None

    def _limiters(self) -> None:
        from aiolimiter import AsyncLimiter

        # Made in the running event loop; a bucket about one request deep is what spreads the
        # requests evenly instead of letting a burst through first.
        if self.rpm and self._requests is None:
            self._requests = AsyncLimiter(1, 60.0 / self.rpm)
        if self.tpm and self._tokens is None:
            self._tokens = AsyncLimiter(self.depth, self.depth * 60.0 / self.tpm)

    async def wait(self, tokens: int) -> None:
        self._limiters()
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None:
            await self._tokens.acquire(min(tokens, self._tokens.max_rate))

    async def used(self, estimated: int, actual: int | None) -> None:
        """Charge the tokens the estimate missed (from the response's usage)."""
        if self._tokens is not None and actual is not None and actual > estimated:
            await self._tokens.acquire(min(actual - estimated, self._tokens.max_rate))

    def reset(self) -> None:
        self._requests = self._tokens = None


class Window:
    """At most `limit` requests in flight: halved on an overload (a 429 without Retry-After),
    one more after `limit` successes in a row, up to the configured concurrency."""

    def __init__(self, maximum: int) -> None:
        self.maximum = self.limit = maximum
        self.in_flight = self.successes = 0
        self._changed: asyncio.Condition | None = None

    async def __aenter__(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._changed is not None
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def overloaded(self) -> None:
        lower = max(1, self.limit // 2)
        if lower != self.limit:
            log.warning("the server is overloaded (429 without Retry-After): %d requests in flight, was %d",
                        lower, self.limit)
            self.limit = lower
        self.successes = 0

    def succeeded(self) -> None:
        self.successes += 1
        if self.limit < self.maximum and self.successes >= self.limit:
            self.limit += 1
            self.successes = 0
            log.info("requests succeed again: %d in flight", self.limit)
            if self._changed is not None:
                asyncio.ensure_future(self._wake())

    async def _wake(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def reset(self) -> None:
        self._changed = None
        self.in_flight = 0
