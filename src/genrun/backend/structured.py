"""Structured outputs (`+sampling.structured_outputs={json|regex|choice|grammar: ...}`, vLLM's
StructuredOutputsParams names): one check here, and each backend maps it to its engine's own
mechanism (vLLM's SamplingParams, the OpenAI request, an xgrammar logits processor on hf)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from genrun.errors import UserError

KINDS = ("json", "regex", "choice", "grammar")


def check(value: Any) -> dict[str, Any]:
    """The one constraint asked for, checked: {kind: spec} with a spec of the right type."""
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in KINDS:
        raise UserError(f"sampling.structured_outputs={value!r} must name one of {', '.join(KINDS)}, "
                        "e.g. '+sampling.structured_outputs={choice: [yes, no]}'")
    kind, spec = next(iter(value.items()))
    if kind == "json":
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError as exc:
                raise UserError(f"sampling.structured_outputs.json is not a JSON schema: {exc}") from None
        if not isinstance(spec, Mapping):
            raise UserError("sampling.structured_outputs.json must be a JSON schema (an object)")
        spec = json.loads(json.dumps(spec))  # plain dicts and lists, whatever the config gave
    elif kind == "choice":
        if not isinstance(spec, (list, tuple)) or not spec or not all(isinstance(c, str) and c for c in spec):
            raise UserError("sampling.structured_outputs.choice must be a list of strings, e.g. [yes, no]")
        spec = list(spec)
    elif not isinstance(spec, str) or not spec:
        raise UserError(f"sampling.structured_outputs.{kind} must be a string")
    elif kind == "regex":
        try:
            re.compile(spec)
        except re.error as exc:
            raise UserError(f"sampling.structured_outputs.regex is not a regular expression: {exc}") from None
    return {kind: spec}


def json_schema(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema asked for, if the constraint is one (the json_valid score follows it)."""
    return dict(value["json"]) if value and "json" in value else None


def valid_json(answer: str) -> float:
    try:
        json.loads(answer)
    except ValueError:
        return 0.0
    return 1.0
