"""genrun's scheduler (batching, the concurrency bound, retries, Retry-After, the stop when no
row can succeed), driven by a scripted in-process backend: the code under test is genrun's
own, and the script makes each case happen on demand, in milliseconds. The real engines and
servers are tested in the other files."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from genrun.backend.base import Backend, Completion, Failure
from genrun.engine.scheduler import Scheduler
from genrun.errors import FatalBackendError
from genrun.prompt.messages import prompt_messages
from genrun.prompt.request import Request


class Scripted(Exception):
    """What the scripted backend raises: the Failure its classify() returns."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class ScriptedBackend(Backend):
    """Answers "answer to <prompt>" after `delay` seconds, unless script[prompt] holds failures
    still to raise: each attempt at that prompt's batch pops the next one."""

    name = "scripted"

    def __init__(self, batch_size: int = 1, concurrency: int = 1, retries: int = 0, delay: float = 0.0,
                 script: dict[str, list[Failure]] | None = None) -> None:
        self.batch_size, self.concurrency, self.retries, self.delay = batch_size, concurrency, retries, delay
        self.base_delay = 0.01
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.batches: list[list[str]] = []  # the prompts of each generate_batch call, in call order
        self.attempt_times: dict[str, list[float]] = {}
        self.in_flight = self.max_in_flight = self.closed = 0

    async def generate_batch(self, conversations: list[Any]) -> list[Completion]:
        prompts = [c[-1]["content"] for c in conversations]
        self.batches.append(prompts)
        for p in prompts:
            self.attempt_times.setdefault(p, []).append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            for p in prompts:
                if self.script.get(p):
                    raise Scripted(self.script[p].pop(0))
            return [Completion(answer=f"answer to {p}", completion_tokens=3) for p in prompts]
        finally:
            self.in_flight -= 1

    def classify(self, exc: Exception) -> Failure:
        return exc.failure if isinstance(exc, Scripted) else super().classify(exc)

    async def aclose(self) -> None:
        self.closed += 1


def requests(*prompts: str) -> list[Request]:
    return [Request(i, prompt_messages(p), meta={"prompt": p}) for i, p in enumerate(prompts)]


def run(backend: Backend, reqs: list[Request], retrying: list[int] | None = None) -> dict[int, Completion]:
    """Answer reqs as genrun does (the caller owns the backend: `async with`), by row index.
    retrying: gets each count of rows being retried, as the progress line shows it."""
    answers: dict[int, Completion] = {}

    def on_answer(request: Request, completion: Completion, latency: float) -> None:
        assert request.index not in answers, "one answer per row"
        answers[request.index] = completion

    async def main() -> None:
        async with backend:
            await Scheduler(backend, on_answer, None if retrying is None else retrying.append).run(reqs)

    asyncio.run(main())
    return answers


def test_rows_go_in_batches_of_batch_size_and_each_is_answered_once() -> None:
    backend = ScriptedBackend(batch_size=4)
    answers = run(backend, requests(*(f"p{i}" for i in range(10))))
    assert [len(b) for b in backend.batches] == [4, 4, 2]
    assert sorted(answers) == list(range(10))
    assert all(answers[i].answer == f"answer to p{i}" for i in range(10))
    assert backend.closed == 1  # the caller's `async with` released it, once


def test_a_row_that_could_not_be_built_is_recorded_without_reaching_the_backend() -> None:
    reqs = requests("a", "b")
    reqs.insert(1, Request(2, None, error="row 2: empty prompt"))
    backend = ScriptedBackend(batch_size=8)
    answers = run(backend, reqs)
    assert answers[2].error == "row 2: empty prompt" and answers[2].answer is None
    assert backend.batches == [["a", "b"]]


def test_concurrency_bounds_the_batches_in_flight_and_is_reached() -> None:
    backend = ScriptedBackend(concurrency=3, delay=0.02)
    answers = run(backend, requests(*(f"p{i}" for i in range(20))))
    assert len(answers) == 20
    assert backend.max_in_flight == 3


def test_retryable_failures_are_retried_then_answered_and_retry_after_is_waited() -> None:
    wait = Failure("HTTP 429", retryable=True, retry_after=0.2)
    backend = ScriptedBackend(retries=3, script={"busy": [wait, wait]})
    retrying: list[int] = []
    answers = run(backend, requests("busy", "calm"), retrying)
    assert retrying == [1, 0]  # one row in retry from its first failure until it was answered
    assert answers[0].answer == "answer to busy" and answers[0].error is None
    times = backend.attempt_times["busy"]
    assert len(times) == 3
    assert all(later - earlier >= 0.19 for earlier, later in zip(times, times[1:]))
    assert len(backend.attempt_times["calm"]) == 1


def test_retries_run_out_into_an_error_record_and_a_non_retryable_failure_is_tried_once() -> None:
    backend = ScriptedBackend(retries=2, script={
        "down": [Failure("HTTP 503", retryable=True)] * 5, "bad": [Failure("HTTP 400: too long")]})
    retrying: list[int] = []
    answers = run(backend, requests("down", "bad", "fine"), retrying)
    assert retrying == [1, 0]  # a row whose retries ran out is no longer counted
    assert (answers[0].answer, answers[0].error) == (None, "HTTP 503")
    assert len(backend.attempt_times["down"]) == 3  # retries + 1
    assert (answers[1].error, len(backend.attempt_times["bad"])) == ("HTTP 400: too long", 1)
    assert answers[2].answer == "answer to fine"


def test_a_backend_that_can_answer_no_row_stops_the_run_before_more_attempts() -> None:
    backend = ScriptedBackend(concurrency=2, script={"p0": [Failure("HTTP 401: bad key", no_row_can_succeed=True)]})
    with pytest.raises(FatalBackendError, match="HTTP 401: bad key"):
        run(backend, requests(*(f"p{i}" for i in range(50))))
    assert sum(len(b) for b in backend.batches) <= 3  # the batch in flight beside it, at most
    assert backend.closed == 1


def test_after_a_row_was_answered_no_row_can_succeed_fails_only_that_row() -> None:
    backend = ScriptedBackend(script={"p3": [Failure("HTTP 404: no such model", no_row_can_succeed=True)]})
    answers = run(backend, requests(*(f"p{i}" for i in range(6))))
    assert answers[3].error == "HTTP 404: no such model"
    assert all(answers[i].answer for i in (0, 1, 2, 4, 5))


def test_a_dead_engine_stops_the_run_even_after_answers() -> None:
    backend = ScriptedBackend(script={"p2": [Failure("the engine process died", engine_dead=True)]})
    answers: dict[int, Completion] = {}
    with pytest.raises(FatalBackendError, match="engine process died"):
        async def main() -> None:
            async with backend:
                await Scheduler(backend, lambda r, c, s: answers.setdefault(r.index, c)).run(
                    requests(*(f"p{i}" for i in range(6))))
        asyncio.run(main())
    assert sorted(answers) == [0, 1]


def test_a_batch_failing_after_the_engine_died_is_not_recorded_as_that_rows_error() -> None:
    # vLLM: when EngineCore dies, a batch still in flight can fail with whatever its call hit
    # (a socket vLLM closed), after the batch that saw the death. That row is resumed, not failed.
    in_flight, died = asyncio.Event(), asyncio.Event()

    class DiesThenBreaks(ScriptedBackend):
        async def generate_batch(self, conversations: list[Any]) -> list[Completion]:
            if conversations[-1][-1]["content"] == "p1":
                in_flight.set()
                await died.wait()
                raise Scripted(Failure("Socket operation on non-socket", retryable=False))
            await in_flight.wait()
            died.set()
            raise Scripted(Failure("the engine process died", engine_dead=True))

    answers: dict[int, Completion] = {}

    async def main() -> None:
        async with DiesThenBreaks(concurrency=2) as backend:
            await Scheduler(backend, lambda r, c, s: answers.setdefault(r.index, c)).run(requests("p0", "p1"))

    with pytest.raises(FatalBackendError, match="engine process died"):
        asyncio.run(main())
    assert answers == {}


def test_a_backend_that_returns_the_wrong_number_of_answers_is_a_bug_named() -> None:
    class Short(ScriptedBackend):
        async def generate_batch(self, conversations: list[Any]) -> list[Completion]:
            return (await super().generate_batch(conversations))[:-1]

    with pytest.raises(RuntimeError, match="returned 1 answers for 2 rows"):
        run(Short(batch_size=2), requests("a", "b"))
