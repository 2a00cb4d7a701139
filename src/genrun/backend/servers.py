"""The servers behind the openai backend: one, or several (`backend.base_url` as a list) that
answer one run together. It holds each server's client, its window of requests in flight and
its health; it may use genrun.backend.pacing and the OpenAI SDK, nothing of the engine.

A request goes to the usable server with the fewest requests in flight, each server with a
window of its own (`backend.concurrency`, halved on overload as pacing.Window does). A server
that stops answering (a refused connection at once; a streak of timeouts, dropped connections
or 5xx) is set aside: its requests go to the others, and after a pause (doubled each time it
fails again, up to a minute) one request probes it; an answer brings it back. With one server
nothing is ever set aside: the scheduler's retry policy is all there is."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from genrun import credentials
from genrun.backend.pacing import Window
from genrun.errors import UserError

log = logging.getLogger(__name__)

STREAK = 3  # failures in a row, with no answer between them, that set a server aside
LONGEST_PAUSE_S = 60.0


class Server:
    def __init__(self, url: str, concurrency: int, pause_s: float) -> None:
        self.url, self.shown = url, credentials.redact_url(url)
        self.window = Window(concurrency)
        self.client: Any = None
        self.answered = self.failed = self.set_aside = 0  # requests answered, failed here; times set aside
        self.streak = 0
        self.first_pause_s = self.pause_s = pause_s
        self.back_at = 0.0  # while set aside: when it may be probed (time.monotonic)
        self.set_aside_at = 0.0  # when it was last set aside: what was sent before says nothing of it now
        self.probing = False  # set aside before and not answered since: one request at a time

    @property
    def name(self) -> str:
        """host:port, as the progress line shows it."""
        return urlsplit(self.url).netloc.rpartition("@")[2] or self.shown

    def room(self, now: float) -> bool:
        if self.back_at > now:
            return False
        return self.window.in_flight < (1 if self.probing else self.window.limit)


class Servers:
    def __init__(self, urls: list[str], concurrency: int, pause_s: float) -> None:
        self.all = [Server(url, concurrency, pause_s) for url in urls]
        self._changed: asyncio.Condition | None = None

    def __len__(self) -> int:
        return len(self.all)

    async def take(self, tried: set[Server]) -> Server | None:
        """The server for the next request, its slot taken: the one with room and the fewest in
        flight, not among those this request already tried; None when it tried them all. Waits
        for room, or for a set-aside server's pause to end."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                left = [s for s in self.all if s not in tried]
                if not left:
                    return None
                now = time.monotonic()
                ready = [s for s in left if s.room(now)]
                if ready:
                    server = min(ready, key=lambda s: s.window.in_flight)
                    server.window.in_flight += 1
                    return server
                waking = [s.back_at - now for s in left if s.back_at > now]
                try:
                    await asyncio.wait_for(self._changed.wait(), min(waking) if waking else None)
                except TimeoutError:
                    pass

    async def give_back(self, server: Server) -> None:
        assert self._changed is not None
        async with self._changed:
            server.window.in_flight -= 1
            self._changed.notify_all()

    def answered(self, server: Server, sent: float) -> None:
        """A request sent at `sent` (time.monotonic) that this server answered."""
        server.answered += 1
        server.streak = 0
        server.window.succeeded()
        if server.probing and sent >= server.set_aside_at:
            log.warning("%s answers again: it takes rows again", server.shown)
            server.probing, server.pause_s = False, server.first_pause_s  # give_back wakes the waiting

    def failed(self, server: Server, sent: float, reason: str, refused: bool) -> None:
        """A request sent at `sent` that this server did not answer, through its own fault."""
        server.failed += 1
        if sent < server.set_aside_at:  # sent before it was set aside: nothing new
            return
        server.streak += 1
        if len(self.all) > 1 and (refused or server.probing or server.streak >= STREAK):
            now = time.monotonic()
            server.set_aside += 1
            server.back_at, server.set_aside_at = now + server.pause_s, now
            if server.probing:
                log.info("%s still does not answer (%s); tried again in %.1fs", server.shown, reason, server.pause_s)
            else:
                log.warning("%s set aside (%s): its rows go to the other servers; it is tried again in %.1fs",
                            server.shown, reason, server.pause_s)
            server.pause_s = min(server.pause_s * 2, LONGEST_PAUSE_S)
            server.probing, server.streak = True, 0

    def overloaded(self, server: Server) -> None:
        server.window.overloaded()

    def counts(self) -> dict[str, dict[str, int]]:
        """metrics.json's `servers`: each server's requests answered and failed, and the times it
        was set aside, by its URL (credentials redacted)."""
        return {s.shown: {"answered": s.answered, "failed": s.failed, "set_aside": s.set_aside} for s in self.all}

    def live(self) -> dict[str, str]:
        """The progress line's part: requests answered by each server (host:port)."""
        now = time.monotonic()
        return {s.name: f"{s.answered}{' (set aside)' if s.back_at > now else ''}" for s in self.all}

    def reset(self) -> list[Any]:
        """Forget what belongs to the event loop; the clients to close are returned."""
        self._changed = None
        clients = []
        for server in self.all:
            server.window.reset()
            if server.client is not None:
                clients.append(server.client)
                server.client = None
        return clients


def base_urls(base_url: str | list[str]) -> list[str]:
    """backend.base_url as a list of URLs: one, or the several servers that answer the run."""
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
        raise UserError(f"backend.base_url must be a URL or a list of URLs, e.g. [http://a:8000/v1,http://b:8000/v1]; "
                        f"got {credentials.redact_url(str(base_url))!r}")
    if len({u.rstrip('/') for u in urls}) != len(urls):
        raise UserError("backend.base_url lists the same server twice; list each server once")
    return urls


def server_fault(exc: BaseException, timeout: float) -> tuple[str, bool] | None:
    """Why a request failed through its server's fault (it is down, hangs or breaks), and
    whether the connection was refused; None for the row's or the client's fault (4xx, a 429,
    an answer of the wrong shape), which another server would not change."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return f"no answer within {timeout:g}s", False
    if isinstance(exc, openai.APIConnectionError):
        # the SDK's HTTP client (httpx, or its fork httpx2) says ConnectError: no connection was made
        refused = type(exc.__cause__).__name__ == "ConnectError"
        return ("connection refused" if refused else "connection lost"), refused
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return f"HTTP {exc.status_code}", False
    return None

