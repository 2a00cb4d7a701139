"""Prompts as text, for base models (chat_template=false, and mode=choice always): the system
prompt, the few-shot examples and the row's prompt joined by delimiters as
lm-evaluation-harness joins them, and a row's choices read as the continuations to score.

May use: genrun.errors, genrun.prompt.messages.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from genrun.errors import RowError
from genrun.prompt.messages import Messages


def as_text(messages: Messages, fewshot_delimiter: str, target_delimiter: str) -> str:
    """Chat messages (system, few-shot user/assistant pairs, the row's user turn) as one text:
    an example is its prompt, target_delimiter and its answer; the parts are joined by
    fewshot_delimiter, so the text ends with the row's prompt (lm-eval's context)."""
    parts: list[str] = []
    turns = list(messages)
    if turns and turns[0]["role"] == "system":
        parts.append(str(turns.pop(0)["content"]))
    while len(turns) >= 2 and turns[0]["role"] == "user" and turns[1]["role"] == "assistant":
        parts.append(f"{turns[0]['content']}{target_delimiter}{turns[1]['content']}")
        turns = turns[2:]
    if len(turns) != 1 or turns[0]["role"] != "user" or not isinstance(turns[0]["content"], str):
        raise RowError("chat_template=false takes a text prompt (mode=generate or choice), not images or turns")
    parts.append(turns[0]["content"])
    return fewshot_delimiter.join(parts)


def column(row: Mapping[str, Any], path: str) -> Any:
    """A row's value at a column, or at a key inside one: `choices.text` (ARC's choices)."""
    name, _, key = path.partition(".")
    value = row[name]
    if key:
        if not isinstance(value, Mapping) or key not in value:
            raise RowError(f"dataset.fields.choices={path!r}: column {name!r} has no key {key!r}")
        value = value[key]
    return value


def choice_texts(value: Any, path: str) -> list[str]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
        raise RowError(f"dataset.fields.choices={path!r} is not a non-empty list (got {type(value).__name__})")
    return [str(choice) for choice in value]


def gold_index(reference: Any, choices: list[str]) -> int:
    """The right choice's index from a reference: an index, its digits, the choice's own text,
    or its letter (A is 0)."""
    index: int | None = None
    if isinstance(reference, int) and not isinstance(reference, bool):
        index = reference
    elif isinstance(reference, str):
        text = reference.strip()
        if text in choices:
            index = choices.index(text)
        elif text.isdigit():
            index = int(text)
        elif len(text) == 1 and text.isalpha() and text.isupper():
            index = ord(text) - ord("A")
    if index is None or not 0 <= index < len(choices):
        raise RowError(f"reference {reference!r} names none of the {len(choices)} choices "
                       "(give its index, its letter, or its text)")
    return index
