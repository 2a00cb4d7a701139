"""The progress line of a run: rows/s and the ETA (tqdm's), completion tokens/s (scored
tokens/s in the log-likelihood modes), and the rows
failed, answered from the cache and being retried so far. It is redrawn at the display's
rate (twice a second), not the row rate: at thousands of rows a second, drawing it for each
row cost more than the rest of genrun's work on the row."""

from __future__ import annotations

import time
from typing import Any, Callable

from genrun.backend.base import Completion

REDRAW_S = 0.5


class Progress:
    def __init__(self, total: int | None, backend_counts: Callable[[], dict[str, str]] = dict) -> None:
        from tqdm import tqdm

        self.backend_counts = backend_counts  # e.g. each server's answers (backend.live_counts)
        self.bar = tqdm(total=total, unit="row", desc="genrun", dynamic_ncols=True, mininterval=REDRAW_S)
        self.live = {"failed": 0, "retrying": 0, "cached": 0}
        self.tokens = 0
        self.rate_name = "tokens_per_s"
        self.pending = 0  # rows answered since the last redraw
        self.drawn = time.monotonic()

    def answered(self, completion: Completion) -> None:
        if completion.loglikelihoods is not None:  # mode=choice and perplexity generate nothing
            self.rate_name = "scored_tokens_per_s"
            self.tokens += sum(s.tokens for s in completion.loglikelihoods)
        else:
            self.tokens += completion.completion_tokens or 0
        self.live["failed"] += completion.error is not None
        self.live["cached"] += completion.cached
        self.pending += 1
        now = time.monotonic()
        if now - self.drawn >= REDRAW_S:
            self.redraw(now)

    def retrying(self, count: int) -> None:
        self.live["retrying"] = count
        self.redraw(time.monotonic())

    def redraw(self, now: float) -> None:
        elapsed = max(self.bar.format_dict["elapsed"], 1e-3)
        live = {k: v for k, v in self.live.items() if v}
        self.bar.set_postfix({self.rate_name: round(self.tokens / elapsed), **live, **self.backend_counts()},
                             refresh=False)
        self.bar.update(self.pending)
        self.pending, self.drawn = 0, now

    def say(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.pending:
            self.redraw(time.monotonic())
        self.bar.close()


def noop(*args: Any) -> None:
    """A progress callback that shows nothing."""
