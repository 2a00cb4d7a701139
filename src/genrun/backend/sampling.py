"""One check of sampling values for every backend, before anything starts (vLLM's rules).

Which keys a backend supports is the backend's business (it names one it does not know);
whether a value makes sense is decided here, once, so `top_p=2` is the same one-line error
on hf, openai and vllm instead of an answer, a late error on every row, or a paid request.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable, Mapping

from genrun.backend import structured
from genrun.errors import UserError


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# key -> (test, what the value must be)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (lambda v: _number(v) and v >= 0, "a number >= 0 (0: greedy)"),
    "top_p": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: _integer(v) and (v >= 1 or v in (0, -1)), "an integer >= 1 (0 or -1: off)"),
    "min_p": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "max_tokens": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "min_tokens": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "presence_penalty": (lambda v: _number(v) and -2 <= v <= 2, "a number in [-2, 2]"),
    "frequency_penalty": (lambda v: _number(v) and -2 <= v <= 2, "a number in [-2, 2]"),
    "repetition_penalty": (lambda v: _number(v) and v > 0, "a number > 0 (1: off)"),
    "seed": (_integer, "an integer"),
    "n": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (samples per row)"),
    "stop": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) and s for s in v)),
             "a string or a list of strings"),
    "logprobs": (lambda v: isinstance(v, bool) or (_integer(v) and v >= 0), "an integer >= 0"),
    "top_logprobs": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
}


def check_sampling(sampling: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sampling settings without unset (None) keys; a value out of range is a UserError
    naming the key, the value and what it must be."""
    settings = {k: v for k, v in (sampling or {}).items() if v is not None}
    for key, value in settings.items():
        rule = RULES.get(key)
        if rule is not None and not rule[0](value):
            raise UserError(f"sampling.{key}={value!r} is out of range: it must be {rule[1]}")
    if "structured_outputs" in settings:
        settings["structured_outputs"] = structured.check(settings["structured_outputs"])
    if settings.get("min_tokens", 0) > settings.get("max_tokens", math.inf):
        raise UserError(f"sampling.min_tokens={settings['min_tokens']} is more than "
                        f"sampling.max_tokens={settings['max_tokens']}")
    return settings


def row_seed(seed: int, row_id: Any) -> int:
    """A row's own sampling seed, from the run's sampling.seed and the row's id: the same on
    every rerun and resume, whatever batch or order the row is answered in."""
    digest = hashlib.sha256(f"{seed}:{json.dumps(row_id, default=str)}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF
