"""Prompt templates: Jinja2 over a row's columns, compiled once per run.

Sandboxed (a dataset's template is data, not code) and strict: a column the row lacks (or
holds null in) is an error naming it, never an empty string or "None" in the prompt;
`{% if hint is defined %}` makes a column optional.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from genrun.errors import RowError, UserError, one_line

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNDEFINED = re.compile(r"'(?:[^']*? object' has no attribute '|)([^']+)' is undefined|has no attribute '([^']+)'")


def letter(index: Any) -> str:
    """0 -> "A", 1 -> "B", ... (the letter of a choice)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(LETTERS):
        raise RowError(f"{index!r} is not the index of a choice (0 to {len(LETTERS) - 1})")
    return LETTERS[index]


def lettered(choices: Sequence[Any], separator: str = "\n") -> str:
    """["Paris", "Rome"] -> "A. Paris\\nB. Rome" (a list of choices, as MMLU-style prompts show them)."""
    return separator.join(f"{letter(i)}. {choice}" for i, choice in enumerate(choices))


def environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
    env.filters.update(letter=letter, letters=lettered)
    env.globals.update(letters=LETTERS, zip=zip, enumerate=enumerate)
    return env


def compile_template(text: str, key: str) -> Callable[[Mapping[str, Any]], str]:
    """render(row) for a template given at config key `key`; a syntax error is a UserError
    naming the key and the line."""
    from jinja2 import TemplateSyntaxError

    try:
        template = environment().from_string(text)
    except TemplateSyntaxError as exc:
        raise UserError(f"{key}: template error on line {exc.lineno}: {exc.message}") from None

    def render(row: Mapping[str, Any]) -> str:
        from jinja2 import UndefinedError

        # datasets gives a column a row lacks as None: to the template it is missing, not "None"
        row = {k: v for k, v in row.items() if v is not None}
        try:
            return template.render(row)
        except UndefinedError as exc:
            raise RowError(f"{key} uses {missing_name(exc)!r}, which the row does not have "
                           f"(columns: {', '.join(row)})") from None
        except RowError:
            raise
        except Exception as exc:  # noqa: BLE001 - a filter or expression failing on this row's values
            raise RowError(f"{key} could not be rendered: {one_line(exc, 200)}") from None

    return render


def missing_name(exc: Exception) -> str:
    match = UNDEFINED.search(str(exc))
    return next((g for g in match.groups() if g), str(exc)) if match else str(exc)
