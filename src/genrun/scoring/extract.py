"""Answer extraction (`scoring.extract`): the part of a model's answer that is scored.

A model answers in sentences ("I think the answer is (B).", "... so she has 72 apples.");
a benchmark's reference is a letter, a number or a worked solution ending "#### 72". Each
extractor reads both the same way, so they compare as equals. None: nothing was found.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import Any, Callable

# Highest priority first; within a pattern the last match wins (models restate, then conclude).
# Each runs in linear time on any text: no two repetitions of the same characters stand side
# by side, so a run of spaces or newlines cannot be split between them in many ways.
CHOICE_PATTERNS = [
    re.compile(r"(?i:answer)(?:\s*(?i:is|:))?(?:\s*(?i:option))?\s*(?:[(\[]\s*)?([A-J])\b"),  # "the answer is (B)"
    re.compile(r"\(([A-J])\)"),  # "(B)"
    re.compile(r"^\s*\**([A-J])\**\s*(?:[.):]|$)"),  # "B." or "**B**" at the start
    re.compile(r"\b([A-J])[.)]?\s*$"),  # a lone letter at the end
]
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
FINAL_MARK = "####"  # GSM8K's references end "#### 72"


def choice(text: str) -> str | None:
    """A choice letter A-J: from "answer is (B)", "Answer: B", "(B)", "B." or a lone "B"."""
    for pattern in CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


# A multiple-choice answer names its choice by letter, by the choice's text, or both; a model
# may write one choice's letter with another's text ("A. True, False" where C is "True,
# False"). Both are read; scoring.choice_policy decides (genrun.scoring.scorer).
CHOICE_POLICIES = ("letter", "text", "strict")
PAREN_LETTER = re.compile(r"(\([A-Z]\))")  # lm-eval's flexible-extract looks for "(B)" first


@functools.cache
def punctuation_table() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), to delete: as lm-eval compares choice texts."""
    return dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))


def folded(text: str) -> str:
    return text.lower().translate(punctuation_table())


def letters(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def choice_by_text(text: str, choices: list[str]) -> str | None:
    """The letter of the choice whose text appears first in the answer (case and punctuation
    ignored; at one place the longest text wins, so "Guilty" does not shadow "Guilty of Romance")."""
    texts = {folded(str(c).strip()): mark for c, mark in zip(choices, letters(len(choices)))}
    texts = {t: mark for t, mark in texts.items() if t}  # an empty choice names nothing
    if not texts:
        return None
    found = re.search("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)), folded(text))
    return texts[found.group(0)] if found else None


def flexible_extract(text: str, choices: list[str]) -> str | None:
    """lm-evaluation-harness's generative MMLU `flexible-extract` filter (multi_choice_regex with
    ignore_case and ignore_punctuation): the first "(X)"; else the choice whose text appears
    first; else the first letter after a colon ("Answer: B")."""
    found = PAREN_LETTER.search(text)
    if found:
        return found.group(1)[1]
    by_text = choice_by_text(text, choices)
    texts = [folded(str(c).strip()) for c in choices]
    if "" in texts and not any(t and folded(text).startswith(t) for t in texts):
        by_text = None  # lm-eval's pattern then has an empty branch: it matches first unless a text starts the answer
    if by_text is not None:
        return by_text
    marks = letters(len(choices))
    after_colon = re.search(rf":\s*({'|'.join(map(re.escape, marks))})", text) if marks else None
    return after_colon.group(1) if after_colon else None


def number(text: str) -> str | None:
    """The last number (after "####" when there is one), commas and units dropped, written
    canonically: "$1,000.00" -> "1000", "3.50" -> "3.5"."""
    if FINAL_MARK in text:
        text = text.rsplit(FINAL_MARK, 1)[1]
    found = NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1].replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def boxed(text: str) -> str | None:
    """The content of the last LaTeX \\boxed{...} (braces inside it balanced)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            if depth == 0:
                return text[begin:position].strip()
            depth -= 1
    return None


# A user's pattern (scoring.pattern) may take exponential time on some answers ("(a+)+$"): it
# runs on the `regex` engine, which stops it after this many seconds; that row gets an error.
PATTERN_TIMEOUT_S = 1.0


class ExtractionTimeout(Exception):
    """A pattern ran past PATTERN_TIMEOUT_S on one answer."""


def compile_pattern(text: str) -> Any:
    """A user's pattern, compiled by the `regex` engine (the syntax of Python's re)."""
    import regex as engine

    return engine.compile(text)


def regex(pattern: Any, timeout: float = PATTERN_TIMEOUT_S) -> Callable[[str], str | None]:
    """The pattern's first group (or whole match) at its last match, within `timeout` seconds."""

    def extract(text: str) -> str | None:
        try:
            matches = list(pattern.finditer(text, timeout=timeout))
        except TimeoutError:
            raise ExtractionTimeout(f"scoring.pattern ran over {timeout:g}s on this answer of {len(text)} "
                                    "characters (a pattern with nested repetition, like (a+)+?)") from None
        if not matches:
            return None
        last = matches[-1]
        return (last.group(1) if pattern.groups else last.group(0)).strip()

    return extract


EXTRACTORS: dict[str, Callable[[str], str | None]] = {"choice": choice, "number": number, "boxed": boxed}
# How a reference is read for each extractor: as the answer is, except that a reference
# without a box or a regex's shape is taken as it stands.
READ_REFERENCE = {"choice": choice, "number": number, "boxed": lambda text: boxed(text) or text.strip()}
