"""Request: one row as it is asked, the contract between prompt building and whatever answers
it (the scheduler, a Batch file or job) and records it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genrun.backend.base import Messages


@dataclass
class Request:
    index: int
    messages: Messages | str | None  # chat messages, or text (chat_template=false); None: the row could not be built
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # what the record keeps of the row: id, prompt, reference
    seed: int | None = None  # the row's own sampling seed (+sampling.seed), passed to the backend
    # mode=choice: the texts whose log-likelihood after `messages` (the context, text) is scored
    continuations: list[str] | None = None
    # mode=choice with dataset.context_templates: each choice's own context, scored with the one continuation
    contexts: list[str] | None = None
    rolling: bool = False  # mode=perplexity: the log-likelihood of `messages` (text) itself, in rolling windows
