"""A row's record: what answers.jsonl keeps of a request and its outcome, scored."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from genrun.backend.base import Completion
from genrun.prompt.request import Request
from genrun.scoring.scorer import Scorer, score_record


def make_record(request: Request, completion: Completion, latency: float | None, scorer: Scorer) -> dict[str, Any]:
    """A row's record: its id and index, what the row gave (prompt or turns), the answer or
    error with its token counts, and when the row has a reference its scores (and with
    scoring.extract, the extracted answer they were computed on)."""
    meta = request.meta
    record: dict[str, Any] = {"id": meta["id"], "index": request.index}
    for key, value in meta.items():
        if key != "id" and key != "reference":
            record[key] = value
    reference = meta.get("reference")
    record["answer"] = completion.answer
    record["error"] = completion.error
    record["finish_reason"] = completion.finish_reason
    record["prompt_tokens"] = completion.prompt_tokens
    record["completion_tokens"] = completion.completion_tokens
    record["latency_s"] = None if latency is None else round(latency, 4)  # None: read from a Batch file
    if completion.reasoning is not None:
        record["reasoning"] = completion.reasoning
    if completion.cached:
        record["cached"] = True
    if completion.prompt_text is not None:  # genrun-compare --explain: were the rendered prompts the same?
        text = completion.prompt_text.encode("utf-8", "surrogatepass")
        record["prompt_sha256"] = hashlib.sha256(text).hexdigest()[:16]
        if "messages_sent" in meta:  # record_messages=true: the rendered text too
            record["prompt_rendered"] = completion.prompt_text
    # mode=choice: the answer (the chosen choice) is set when it is scored; mode=perplexity has none
    if completion.loglikelihoods is not None:
        record["loglikelihoods"] = [dataclasses.asdict(s) for s in completion.loglikelihoods]
    if completion.answers is not None:  # sampling.n > 1
        record.update(answers=completion.answers, finish_reasons=completion.finish_reasons)
    if reference is not None:
        record["reference"] = reference
    score_record(record, scorer)
    return record
