"""How a run's rows get their answers, chosen once from the settings: online through the
scheduler (behind the response cache with cache=on), as one Batch API job
(backend.batch=true), from a Batch output file (batch.results), or not at all, written out
as a Batch input file (batch.export)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterable

from genrun.backend.base import Backend
from genrun.backend.build import build, class_of, for_batch_file
from genrun.backend.cached import CachedBackend
from genrun.backend.response_cache import ResponseCache
from genrun.backend.structured import json_schema
from genrun.engine import batch_files
from genrun.engine.scheduler import OnAnswer, answer
from genrun.errors import UserError
from genrun.prompt.request import Request
from genrun.settings import LOGLIKELIHOOD_MODES, Settings


class Delivery:
    """builds its backend, then answers requests with it."""

    online = False  # through genrun's scheduler, one request (or batch) at a time
    writes_records = True  # False: batch.export, which only writes the requests

    def __init__(self, settings: Settings, out_dir: Path) -> None:
        self.settings, self.out_dir = settings, out_dir

    def backend(self) -> Backend:
        s = self.settings
        return build(s.backend, s.sampling, s.extra, s.seed, secrets_of="backend")

    def deliver(self, backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                on_retrying: Callable[[int], None], show: Callable[[str], None]) -> None:
        raise NotImplementedError


class Online(Delivery):
    online = True

    def backend(self) -> Backend:
        backend = super().backend()
        return with_cache(backend, self.settings) if self.settings.cache.enabled else backend

    def deliver(self, backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                on_retrying: Callable[[int], None], show: Callable[[str], None]) -> None:
        asyncio.run(answer(backend, requests, on_answer, on_retrying))


class BatchJob(Delivery):
    """backend.batch=true: the rows left as one Batch API job, collected by its id."""

    def deliver(self, backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                on_retrying: Callable[[int], None], show: Callable[[str], None]) -> None:
        async def collect() -> None:
            async with backend:
                await batch_files.submit_and_collect(backend, requests, self.out_dir, on_answer, show)

        asyncio.run(collect())


class BatchResults(Delivery):
    """batch.results=FILE: a Batch output file read into the run as its records."""

    def backend(self) -> Backend:
        s = self.settings
        return for_batch_file(s.backend, s.sampling, s.extra, s.seed)

    def deliver(self, backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                on_retrying: Callable[[int], None], show: Callable[[str], None]) -> None:
        path = Path(str(self.settings.batch.results))
        completion_of = backend.completion_of  # type: ignore[attr-defined]  # for_batch_file's backends have it
        batch_files.import_results(batch_files.read_output(path, completion_of), requests, on_answer, path)


class Export(BatchResults):
    """batch.export=FILE: the rows' requests as a Batch input file; nothing is sent."""

    writes_records = False


def choose(settings: Settings, out_dir: Path) -> Delivery:
    batch = settings.batch
    if batch.export and batch.results:
        raise UserError("batch.export writes the requests and batch.results reads the answers: give one of them")
    backend = class_of(settings.backend)
    if settings.prompt.as_text and not getattr(backend, "takes_text", False):
        what = f"mode={settings.prompt.mode}" if settings.prompt.mode in LOGLIKELIHOOD_MODES else "chat_template=false"
        raise UserError(f"{what} needs a backend that takes text prompts and returns log-likelihoods: "
                        f"backend={getattr(backend, 'name', '?')} does not (use backend=hf, vllm or openai)")
    if settings.prompt.mode == "perplexity" and not getattr(backend, "takes_perplexity", False):
        raise UserError(f"mode=perplexity scores texts in windows of the model's length, which needs its tokenizer: "
                        f"backend={getattr(backend, 'name', '?')} cannot (use backend=hf or backend=vllm)")
    if settings.prompt.mode in LOGLIKELIHOOD_MODES and (batch.export or batch.results or settings.backend.get("batch")):
        raise UserError(f"mode={settings.prompt.mode} scores log-likelihoods, which the Batch API does not "
                        "return: remove batch.export, batch.results and backend.batch")
    if batch.export:
        return Export(settings, out_dir)
    if batch.results:
        return BatchResults(settings, out_dir)
    if settings.backend.get("batch") and getattr(backend, "takes_batch_jobs", False):
        return BatchJob(settings, out_dir)
    return Online(settings, out_dir)


def with_cache(backend: Backend, settings: Settings) -> CachedBackend:
    """The backend behind the response cache, keyed by what decides its answers."""
    identity = {k: v for k, v in backend.describe().items() if k not in type(backend).operational}
    run_parts: dict[str, Any] = {"backend": type(backend).__name__, "model": identity,
                                 "sampling": settings.sampling, "extra": settings.extra}
    return CachedBackend(backend, ResponseCache(settings.cache.path), run_parts)


def json_constraint(sampling: dict[str, Any]) -> bool:
    """Whether the answers are constrained by a JSON schema (they then get a json_valid score)."""
    from genrun.backend.structured import check

    constraint = sampling.get("structured_outputs")
    return json_schema(check(constraint) if constraint else None) is not None
