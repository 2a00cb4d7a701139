"""OpenAI Batch API files: a run's requests exported as a Batch input file, a Batch output file
read back as the run's records, and a run sent as one batch job (backend.batch=true).

The requests are the openai backend's own (OpenAIBackend.request_body), so a batch asks
exactly what the online run would; `custom_id` is the row id. Results come back through the
run's usual on_answer, so records, resume, scoring and summaries do not know the difference.
vLLM's `python -m vllm.entrypoints.openai.run_batch` reads and writes the same files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from genrun.backend.base import Completion
from genrun.engine.scheduler import OnAnswer, sendable
from genrun.errors import FatalBackendError, UserError, cannot_write, one_line
from genrun.prompt.request import Request
from genrun.rundir.journal import now, write_json

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TEXT_ENDPOINT = "/v1/completions"  # prompts as text (chat_template=false)
ENDED = {"completed", "failed", "expired", "cancelled"}  # a batch's final statuses
STATE = "batch.json"  # in the run directory: the submitted batch's id, so a restart picks it up


def check_export(path: Path, dataset_files: list[Path] | None, overwrite: bool) -> None:
    """batch.export must not destroy data: never the dataset's own file, and another existing
    file only with batch.overwrite=true."""
    target = path.expanduser().resolve()
    if any(target == f.resolve() for f in dataset_files or []):
        raise UserError(f"batch.export={path} is the dataset's own file; write the requests elsewhere")
    if target.exists() and not overwrite:
        raise UserError(f"batch.export={path} exists; choose another file, or batch.overwrite=true to replace it")


def export(path: Path, requests: Iterable[Request], request_body: Callable[[Request], dict[str, Any]]) -> int:
    """Write one Batch input line per request; returns how many. Rows that could not be built
    (a template error) are left out, as the online run would not send them: their error is
    recorded when the results are read back."""
    seen: set[str] = set()
    count = 0
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8") as out:
            for request in requests:
                if request.messages is None:
                    log.warning("row %s left out of %s: %s", request.meta["id"], path, request.error)
                    continue
                custom_id = str(request.meta["id"])
                if custom_id in seen:
                    raise UserError(f"row id {custom_id!r} appears twice, and a Batch file needs unique ids: "
                                    "set dataset.fields.id to a column that is unique, or to null (row numbers)")
                seen.add(custom_id)
                out.write(json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint_of(request),
                                      "body": request_body(request)}, ensure_ascii=False) + "\n")
                count += 1
        os.replace(partial, path)
    except OSError as exc:
        raise cannot_write(path, exc, "choose another batch.export file") from exc
    finally:
        partial.unlink(missing_ok=True)
    return count


def read_output(path: Path, completion_of: Callable[[Mapping[str, Any]], Completion]) -> dict[str, Completion]:
    """custom_id -> the row's outcome, from a Batch output (or error) file."""
    if not path.is_file():
        raise UserError(f"batch.results={path}: no such file")
    results: dict[str, Completion] = {}
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number}: not JSON ({exc}); is it a Batch output file?") from exc
            if not isinstance(item, dict) or item.get("custom_id") is None:
                raise UserError(f"{path} line {number}: no custom_id; is it a Batch output file?")
            custom_id = str(item["custom_id"])
            if custom_id in first_line:  # which answer is the row's? neither is taken silently
                raise UserError(f"{path} line {number}: custom_id {custom_id!r} is on line {first_line[custom_id]} "
                                "too; a Batch output file holds one result per request (remove one of them)")
            first_line[custom_id] = number
            results[custom_id] = outcome(item, completion_of, f"line {number}")
    return results


def outcome(item: Mapping[str, Any], completion_of: Callable[[Mapping[str, Any]], Completion],
            where: str = "") -> Completion:
    """One output line as a Completion: the answer, or the error the batch recorded for the row
    (a line of another shape is that row's error, never a crash)."""
    if item.get("error"):
        return Completion(error=f"batch error: {message_of(item['error'])}")
    response = item.get("response") or {}
    if not isinstance(response, Mapping):
        return Completion(error=f"batch output {where}: `response` is a {type(response).__name__}, not an object")
    body = response.get("body")
    status = response.get("status_code")
    if status != 200 or not isinstance(body, dict):
        detail = message_of(body.get("error", body)) if isinstance(body, dict) else "no body"
        return Completion(error=f"HTTP {status}: {detail}")
    return completion_of(body)


def message_of(error: Any) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or error
    return one_line(str(error), 300)


def import_results(results: dict[str, Completion], requests: Iterable[Request], on_answer: OnAnswer,
                   source: Path | str, strict: bool = True) -> int:
    """Record each request's result; returns how many rows had none (they stay to be answered).
    strict: a file none of whose results is for a row left is a mistake (the wrong file)."""
    missing = matched = 0
    for request in sendable(requests, on_answer):
        completion = results.pop(str(request.meta["id"]), None)
        if completion is None:
            missing += 1
            continue
        matched += 1
        on_answer(request, completion, None)
    if strict and results and not matched:
        raise UserError(f"none of the custom_ids in {source} is the id of a row left to answer in dataset.path "
                        "(was the file made from this dataset and dataset.fields.id?)")
    if results:
        log.warning("%d results in %s match no row left to answer (answered already, or not from this dataset)",
                    len(results), source)
    if missing:
        print(f"genrun: {missing} rows have no result in {source}; they stay unanswered "
              "(resume the run to answer them)", flush=True)
    return missing


async def submit_and_collect(backend: Any, requests: Iterable[Request], out_dir: Path, on_answer: OnAnswer,
                             show: Callable[[str], None]) -> None:
    """backend.batch=true: send the rows left as one batch, wait for it, record its results.

    The batch's id is saved in the run directory before waiting, so a restarted run (resume)
    collects the same batch instead of paying for a second one."""
    pending = {str(r.meta["id"]): r for r in sendable(requests, on_answer)}
    state_path = out_dir / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("status") not in (None, *ENDED):  # submitted by an earlier process, not yet collected
        show(f"batch {state['id']}: picked up")
        log.info("collecting batch %s, submitted at %s", state["id"], state.get("submitted_at"))
    else:
        if not pending:
            return
        state = await submit(backend, pending, out_dir)
        write_json(state_path, state)
        print(f"genrun: submitted batch {state['id']} ({len(pending)} requests); a restarted run "
              f"collects it (its id is in {state_path})", flush=True)
    batch = await wait(backend, state["id"], show)
    results: dict[str, Completion] = {}
    for file_id, name in ((batch.output_file_id, "batch_output.jsonl"), (batch.error_file_id, "batch_errors.jsonl")):
        if file_id:
            path = out_dir / name
            content = await api_call(backend, backend.client().files.content(file_id))
            path.write_bytes(content.content)
            results.update(read_output(path, backend.completion_of))
    import_results(results, pending.values(), on_answer, f"batch {batch.id}", strict=False)
    write_json(state_path, {**state, "status": batch.status, "collected_at": now()})
    if batch.status != "completed":
        errors = "; ".join(message_of(e) for e in (batch.errors.data or [])) if batch.errors else ""
        raise FatalBackendError(f"batch {batch.id} ended {batch.status}" + (f": {errors}" if errors else "")
                                + "; the rows it answered are recorded, resuming submits the rest")


def endpoint_of(request: Request) -> str:
    return TEXT_ENDPOINT if isinstance(request.messages, str) else ENDPOINT


async def submit(backend: Any, pending: Mapping[str, Request], out_dir: Path) -> dict[str, Any]:
    """Upload the rows left as a Batch input file and create the batch."""
    input_path = out_dir / "batch_input.jsonl"
    export(input_path, pending.values(), lambda r: backend.request_body(r.messages, r.seed))
    client = backend.client()
    with open(input_path, "rb") as handle:
        uploaded = await api_call(backend, client.files.create(file=handle, purpose="batch"))
    endpoint = endpoint_of(next(iter(pending.values()))) if pending else ENDPOINT  # a run's rows are all of one kind
    batch = await api_call(backend, client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,
                                                          completion_window="24h"))
    return {"id": batch.id, "input_file_id": uploaded.id, "requests": len(pending), "status": batch.status,
            "submitted_at": now()}


async def wait(backend: Any, batch_id: str, show: Callable[[str], None]) -> Any:
    """Poll the batch every backend.batch_poll_s until it ends; a look that fails in a way
    worth retrying is tried again, up to backend.retries times in a row."""
    import openai

    misses = 0
    while True:
        try:
            batch = await backend.client().batches.retrieve(batch_id)
        except openai.APIError as exc:
            failure = backend.classify(exc)
            misses += 1
            if not failure.retryable or misses > backend.retries:
                raise FatalBackendError(f"Batch API: batch {batch_id}: {failure.message}") from exc
            log.warning("looking at batch %s failed (%s); looking again", batch_id, failure.message)
        else:
            misses = 0
            counts = batch.request_counts
            show(f"batch {batch.status}" + (f" {counts.completed + counts.failed}/{counts.total}" if counts else ""))
            if batch.status in ENDED:
                return batch
        await asyncio.sleep(backend.batch_poll_s)


async def api_call(backend: Any, call: Any) -> Any:
    """One Files or Batches API call; its failure stops the run as the backend classifies it."""
    import openai

    try:
        return await call
    except openai.APIError as exc:
        raise FatalBackendError(f"Batch API: {backend.classify(exc).message}") from exc
