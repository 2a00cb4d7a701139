"""`math_equal`: whether an answer and a reference are the same mathematical object, by
math-verify (the `math` extra), as lighteval and NeMo-Skills grade MATH: `\\frac{1}{2}`,
`0.5` and `1/2` are equal, `2` and `20` are not; LaTeX, intervals, sets and units are read.

math-verify bounds its own time with SIGALRM, which works only in a main thread; genrun
scores in other threads too. So the checks run in one worker process of their own, with
math-verify's alarms off, and a row that takes longer than MATH_TIMEOUT_S has its worker
killed and started again: that row's scoring error, never a hang.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from typing import Any

from genrun.errors import UserError

MATH_TIMEOUT_S = 5.0


class MathTimeout(Exception):
    """A comparison ran past MATH_TIMEOUT_S."""


def _serve(connection: Any) -> None:
    """The worker: answers (answer, reference) with whether they are equal."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": ours is outside

    def read(text: str, prose: bool) -> Any:
        # an extracted answer or a reference comes without its $...$: read it as LaTeX first;
        # a whole answer (prose) is read as math-verify reads a model's text
        if prose or "$" in text or "\\boxed" in text:
            return parse(text, parsing_timeout=None)
        return parse(f"${text}$", parsing_timeout=None) or parse(text, parsing_timeout=None)

    while True:
        try:
            answer, reference, prose = connection.recv()
        except EOFError:
            return
        try:
            gold, said = read(reference, False), read(answer, prose)
            equal = bool(gold) and bool(said) and verify(gold, said, timeout_seconds=None)
            connection.send((bool(equal), None))
        except Exception as exc:  # noqa: BLE001 - an expression math-verify cannot read: not equal
            connection.send((False, f"{type(exc).__name__}: {exc}"[:200]))


class Checker:
    """The worker process and the pipe to it; one comparison at a time (a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: Any = None
        self.connection: Any = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True, name="genrun-math-equal")
        self.process.start()
        theirs.close()
        self.connection = ours

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
            self.connection.close()
        self.process = self.connection = None

    def equal(self, answer: str, reference: str, prose: bool, timeout: float = MATH_TIMEOUT_S) -> bool:
        with self.lock:
            if self.process is None or not self.process.is_alive():
                self.start()
            self.connection.send((answer, reference, prose))
            if not self.connection.poll(timeout):
                self.stop()  # killed mid-comparison: the next row gets a fresh worker
                raise MathTimeout(f"math_equal ran over {timeout:g}s on this answer of {len(answer)} characters")
            equal, _ = self.connection.recv()
            return equal


_checker: Checker | None = None


def check_installed() -> None:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise UserError("scoring.metrics=[math_equal] needs math-verify: pip install 'genrun[math]'") from None


def math_equal(answer: str, reference: str, prose: bool = False) -> float:
    """1.0 when equal. prose: the answer is a model's whole text, not an extracted expression."""
    global _checker
    if _checker is None:
        _checker = Checker()
        atexit.register(_checker.stop)
    return float(_checker.equal(answer, reference, prose))
