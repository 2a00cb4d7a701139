"""Prompt templates: Jinja2 over a row's columns, compiled once per run.

Sandboxed (a dataset's template is data, not code) and strict: a column the row lacks (or
holds null in) is an error naming it, never an empty string or "None" in the prompt;
`{% if hint is defined %}` makes a column optional.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from genrun.errors import RowError, UserError, one_line

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNDEFINED = re.compile(r"'(?:[^']*? object' has no attribute '|)([^']+)' is undefined|has no attribute '([^']+)'")


def letter(index: Any) -> str:
    """0 -> "A", 1 -> "B", ... (the letter of a choice)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(LETTERS):
        raise RowError(f"{index!r} is not the index of a choice (0 to {len(LETTERS) - 1})")
    return LETTERS[index]


REGEX_TIMEOUT_S = 1.0  # a row's text against a config's pattern, per filter call


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> Any:
    import regex

    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise RowError(f"regex_replace: {pattern!r} is not a valid regular expression: {exc}") from None


def regex_replace(value: Any, pattern: str, replacement: str = "") -> str:
    """The filter `regex_replace(pattern, replacement)`: every match replaced, as Python's
    re.sub (lm-eval's preprocessing of HellaSwag and wikitext), on the `regex` engine with a
    time limit, so a pattern that backtracks on some row fails that row, not the run."""
    try:
        return _compiled(str(pattern)).sub(str(replacement), str(value), timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise RowError(f"regex_replace({pattern!r}) ran over {REGEX_TIMEOUT_S:g}s on this row") from None


def lettered(choices: Sequence[Any], separator: str = "\n") -> str:
    """["Paris", "Rome"] -> "A. Paris\\nB. Rome" (a list of choices, as MMLU-style prompts show them)."""
    return separator.join(f"{letter(i)}. {choice}" for i, choice in enumerate(choices))


# Limits on one render (a dataset's template is data: `{{ 10**(10**8) }}` or nested range()
# loops must not hang a run, nor `"a" * 10**10` fill its memory).
MAX_OUTPUT = 10_000_000  # characters a rendered prompt (or any string the template builds) may have
MAX_STEPS = 1_000_000  # range() items a render may go through, nested loops counted together
MAX_DIGITS = 10_000  # digits the result of ** may have
RENDER_TIMEOUT_S = 5.0  # wall-clock seconds a render may take


class Budget:
    """What one render may still spend; the sandbox's operators and range() charge it."""

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + RENDER_TIMEOUT_S

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise RowError(f"the template went through over {MAX_STEPS:,} range() items (nested loops?)")
        if self.steps % 1024 == 0 or count > 1:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RowError(f"the template took over {RENDER_TIMEOUT_S:g}s to render")


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("genrun_template_budget", default=None)


def budget() -> Budget:
    current = _budget.get()
    return current if current is not None else Budget()


class CountedRange:
    """range(), whose items are charged to the render's budget as they are gone through."""

    def __init__(self, *args: int) -> None:
        from jinja2.sandbox import MAX_RANGE

        self.items = range(*args)
        if len(self.items) > MAX_RANGE:
            raise RowError(f"range() of {len(self.items):,} items in the template: at most {MAX_RANGE:,}")

    def __iter__(self) -> Iterator[int]:
        spend = budget()
        for item in self.items:
            spend.step()
            yield item

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> Any:
        return self.items[key]


def limited_binop(left: Any, operator: str, right: Any) -> Any:
    """`**`, `*` and `%` with their results' size checked before they are computed."""
    numbers = (int, float)
    if operator == "**":
        if isinstance(left, numbers) and isinstance(right, numbers) and not isinstance(left, bool):
            size = abs(right) * math.log10(abs(left)) if abs(left) > 1 else 0
            if size > MAX_DIGITS:
                raise RowError(f"{left} ** {right} in the template: a result of over {MAX_DIGITS:,} digits")
        return left ** right
    if operator == "*":
        for text, times in ((left, right), (right, left)):
            if isinstance(text, (str, list, tuple)) and isinstance(times, int) and len(text) * times > MAX_OUTPUT:
                raise RowError(f"a repetition of {len(text) * times:,} items in the template: at most {MAX_OUTPUT:,}")
        return left * right
    result = left % right
    if isinstance(result, str) and len(result) > MAX_OUTPUT:
        raise RowError(f"a string of {len(result):,} characters in the template: at most {MAX_OUTPUT:,}")
    return result


FORMAT_WIDTH = re.compile(r"\d{8,}")


def check_sizes(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call whose numbers (or format widths) would build a string over MAX_OUTPUT."""
    for value in [*args, *kwargs.values()]:
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT:
            raise RowError(f"an argument of {value:,} in the template: at most {MAX_OUTPUT:,}")
        if isinstance(value, str) and ("%" in value or "{" in value) and FORMAT_WIDTH.search(value):
            raise RowError("a format width of 8 digits or more in the template")


def environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class LimitedEnvironment(ImmutableSandboxedEnvironment):
        # Intercepted operators are also never folded at compile time, so a template that
        # would compute a huge power cannot hang compilation either.
        intercepted_binops = frozenset({"**", "*", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            return limited_binop(left, operator, right)

        def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:  # "x".ljust(10**9), ...
            check_sizes(args, kwargs)
            return super().call(context, obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Any:  # "{:>999999999}".format(1)
            if isinstance(getattr(value, "__self__", None), str):
                check_sizes([value.__self__], {})
            return super().wrap_str_format(value)

    # optimized=False: no constant folding, so filters on constants run under the render's limits too
    env = LimitedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False,
                             optimized=False)
    env.filters.update(letter=letter, letters=lettered, regex_replace=regex_replace)
    # Filters are called directly by the compiled template: each is wrapped to check its
    # arguments (center(10**9), indent(10**9), format("%099999999d")).
    env.filters = {name: size_checked(f) for name, f in env.filters.items()}
    env.globals.update(letters=LETTERS, zip=zip, enumerate=enumerate, range=CountedRange)
    return env


def size_checked(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_sizes(args, kwargs)
        return function(*args, **kwargs)

    return checked


def render_limited(template: Any, row: Mapping[str, Any]) -> str:
    """The template rendered under the limits above: a RowError names the one it went over."""
    spend = Budget()
    token = _budget.set(spend)
    pieces, size = [], 0
    try:
        for piece in template.generate(row):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise RowError(f"the rendered text is over {MAX_OUTPUT:,} characters")
            pieces.append(piece)
            spend.check_time()
    except MemoryError:
        raise RowError("the template needs more memory than there is (a huge repetition or padding?)") from None
    except RecursionError:
        raise RowError("the template recurses too deeply (a macro calling itself?)") from None
    finally:
        _budget.reset(token)
    return "".join(pieces)


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
            return render_limited(template, row)
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
