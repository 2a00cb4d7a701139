"""The modes in one table: which dataset fields each reads, what its record keeps of
the row, and how the row becomes chat messages. The run, the first-row check and the Python
API all read it, so a mode is added here once (and its name in settings.schema.MODES)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from genrun.errors import RowError, UserError
from genrun.prompt import text
from genrun.prompt.images import ImagePolicy, image_list
from genrun.prompt.images import describe as describe_image
from genrun.prompt.messages import Messages, conversation_messages, multimodal_messages, prompt_messages
from genrun.prompt.request import Request
from genrun.prompt.templates import compile_template, letter
from genrun.settings.schema import MODES as MODE_NAMES
from genrun.settings.schema import FieldsConfig, GenrunConfig

Render = Callable[[Mapping[str, Any]], str]  # a compiled template: render(row) -> text


@dataclass(frozen=True)
class PromptSettings:
    """The run-wide settings that shape every row's messages."""

    system_prompt: str = ""
    image_tag: str | None = None
    base_dir: str | None = None  # relative image paths resolve against it (the dataset's folder)
    template: Render | None = None  # dataset.template, compiled: the prompt (multiturn: the last user turn)
    reference_template: Render | None = None  # dataset.reference_template, compiled
    system_template: Render | None = None  # dataset.system_template, compiled: the system prompt
    choice_templates: tuple[Render, ...] = ()  # dataset.choice_templates, compiled: the choices
    units_template: Render | None = None  # dataset.units_template, compiled (mode=perplexity)
    context_templates: tuple[Render, ...] = ()  # dataset.context_templates, compiled (partial scoring)
    # dataset.fewshot: (row, its id, its prompt) -> the example turns shown before it, and their ids
    fewshot: Callable[[Mapping[str, Any], Any, Any], tuple[Messages, list[Any]]] | None = None
    fewshot_ids_per_row: bool = False  # the examples differ by row: each record keeps theirs
    images: ImagePolicy = ImagePolicy()  # which images a row may name (genrun-serve over HTTP restricts it)
    record_messages: bool = False  # the record keeps the whole conversation sent (`messages_sent`)
    as_text: bool = False  # the prompt goes as text, no chat template (chat_template=false; mode=choice)
    fewshot_delimiter: str = GenrunConfig.fewshot_delimiter  # the defaults are the schema's
    target_delimiter: str = GenrunConfig.target_delimiter
    keep_columns: tuple[str, ...] = ()  # the record keeps these columns' values (scoring.group_by, cluster_by)
    images_first: bool = False  # without an image_tag the images go before the text (UltraRAG's server)
    system_beside_own: bool = False  # multiturn: the system prompt goes before the conversation's own (the API)


def row_prompt(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings) -> Any:
    """The row's prompt: the template rendered over its columns, or its prompt column."""
    return s.template(row) if s.template is not None else row[fields.prompt]  # type: ignore[index]  # checked at start: check_fields


def row_system(row: Mapping[str, Any], s: PromptSettings) -> str:
    """The row's system prompt: the system template rendered over its columns, or system_prompt."""
    return s.system_template(row) if s.system_template is not None else s.system_prompt


def row_choices(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings) -> list[str]:
    """mode=choice: the row's choices, from the choice templates or the choices column."""
    if s.choice_templates:
        return [render(row) for render in s.choice_templates]
    return text.choice_texts(text.column(row, str(fields.choices)), str(fields.choices))


def row_reference(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings) -> Any:
    """The row's reference (None without one). With a choices column, an integer reference is
    the index of the right choice, read as its letter (0 -> A)."""
    if s.reference_template is not None:
        return s.reference_template(row)
    if not fields.reference:
        return None
    reference = row[fields.reference]
    if fields.choices and isinstance(reference, int) and not isinstance(reference, bool):
        return letter(reference)
    return reference


# build(row, fields, settings, kept) -> messages; it first puts into `kept` what the record
# keeps of the row (the prompt, the turns), so a row that fails still shows its input.
Build = Callable[[Mapping[str, Any], FieldsConfig, PromptSettings, dict], Messages]


@dataclass(frozen=True)
class Mode:
    fields: tuple[str, ...]  # the dataset.fields it needs (id and reference are read when set)
    build: Build


def _generate(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings, kept: dict) -> Messages:
    kept["prompt"] = row_prompt(row, fields, s)
    if fields.choices:  # extract=choice reads an answer's choice text as well as its letter
        try:
            kept["choices"] = row_choices(row, fields, s)
        except RowError:
            pass  # the letter alone is read, as without choices
    return prompt_messages(kept["prompt"], row_system(row, s))


def _multimodal(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings, kept: dict) -> Messages:
    kept["prompt"] = row_prompt(row, fields, s)
    images = image_list(row[fields.images])  # type: ignore[index]  # the mode needs it: check_fields
    kept["images"] = [describe_image(i) for i in images if i is not None]
    return multimodal_messages(kept["prompt"], images, row_system(row, s), s.image_tag, s.base_dir, s.images,
                               s.images_first)


def _multiturn(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings, kept: dict) -> Messages:
    turns = row[fields.messages]  # type: ignore[index]  # the mode needs it: check_fields
    if s.template is not None and isinstance(turns, list):
        # The template writes the last user turn; it sees the row's columns and that turn as `turn`.
        last = max((i for i, t in enumerate(turns) if isinstance(t, Mapping) and t.get("role") == "user"),
                   default=None)
        if last is None:
            raise RowError("dataset.template: the conversation has no user turn to write")
        turns = [*turns[:last], {**turns[last], "content": s.template({**row, "turn": turns[last].get("content")})},
                 *turns[last + 1:]]
    kept["messages"] = turns
    return conversation_messages(turns, row_system(row, s), s.system_beside_own)


def _choice(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings, kept: dict) -> Messages:
    """The context is the prompt; the choices are kept, and the reference becomes the right one's index."""
    kept["prompt"] = row_prompt(row, fields, s)
    kept["choices"] = row_choices(row, fields, s)
    if s.context_templates:  # partial scoring: the prompt is the continuation, after each choice's context
        kept["contexts"] = [render(row) for render in s.context_templates]
        if len(kept["contexts"]) != len(kept["choices"]):
            raise RowError(f"dataset.context_templates give {len(kept['contexts'])} contexts for "
                           f"{len(kept['choices'])} choices")
    if kept.get("reference") is not None:
        kept["reference"] = text.gold_index(kept["reference"], kept["choices"])
    return prompt_messages(kept["prompt"], row_system(row, s))


def _perplexity(row: Mapping[str, Any], fields: FieldsConfig, s: PromptSettings, kept: dict) -> Messages:
    """The text whose log-likelihood is scored is the prompt (its column, or the template)."""
    kept["prompt"] = row_prompt(row, fields, s)
    if not isinstance(kept["prompt"], str):
        raise RowError(f"mode=perplexity scores text; the prompt is {type(kept['prompt']).__name__}")
    if s.units_template is not None:  # the words and bytes are another text's (see scoring.metrics.text_units)
        kept["units_text"] = s.units_template(row)
    return prompt_messages(kept["prompt"], row_system(row, s))


MODES = {
    "generate": Mode(("prompt",), _generate),
    "multimodal": Mode(("prompt", "images"), _multimodal),
    "multiturn": Mode(("messages",), _multiturn),
    "choice": Mode(("prompt",), _choice),  # and dataset.fields.choices, or dataset.choice_templates
    "perplexity": Mode(("prompt",), _perplexity),
}
assert tuple(MODES) == MODE_NAMES, "a mode is named in settings.schema.MODES and built here"
# The fields the Python API's rows use (the CLI's come from dataset.fields).
API_FIELDS = FieldsConfig(prompt="prompt", images="images", messages="messages")


def check_fields(fields: FieldsConfig, mode: str, first: Mapping[str, Any], path: str,
                 template: str | None = None) -> None:
    """The first row has the columns dataset.fields names, and the template renders it: a
    mistake there is one line before any model loads."""
    needed = MODES[mode].fields
    if template:  # the template builds the prompt; it must render the first row
        needed = tuple(f for f in needed if f != "prompt")
        try:
            compile_template(template, "dataset.template")({**first, "turn": ""})
        except RowError as exc:
            raise UserError(f"{exc} in the first row of {path}; fix the template or dataset.fields") from None
    for key in (*needed, "id", "reference", "choices"):
        column = getattr(fields, key)
        if key == "id" and column == AUTO_ID:  # the id column where there is one: nothing to check
            continue
        if column is None:
            if key in needed:
                raise UserError(f"dataset.fields.{key} is not set, and mode={mode} needs it")
            continue
        if column.partition(".")[0] not in first:  # choices may name a key inside a column: choices.text
            raise UserError(f"dataset.fields.{key}={column!r} is not a column of {path} "
                            f"(columns: {', '.join(first)}); set dataset.fields.{key}=<column>")


def request_builder(mode: str, fields: FieldsConfig, settings: PromptSettings,
                    label: str = "row") -> Callable[[int, Mapping[str, Any]], Request]:
    """Turns a row into a Request; a row that cannot be sent becomes a Request with its error.
    Settings are read once: per-row config lookups add up over millions of rows."""
    build = MODES[mode].build
    row_id = id_reader(fields.id)
    has_reference = bool(fields.reference) or settings.reference_template is not None

    def request(index: int, row: Mapping[str, Any]) -> Request:
        meta: dict[str, Any] = {"id": row_id(index, row)}
        if settings.keep_columns:
            meta["columns"] = {c: plain(row.get(c)) for c in settings.keep_columns}
        try:
            if has_reference:
                meta["reference"] = row_reference(row, fields, settings)
            messages = build(row, fields, settings, meta)
        except RowError as exc:
            return Request(index, None, error=f"{label} {index}: {exc}", meta=meta)
        if settings.fewshot is not None:  # after the system prompt, before the row's own turns
            try:
                examples, example_ids = settings.fewshot(row, meta["id"], meta.get("prompt"))
            except RowError as exc:
                return Request(index, None, error=f"{label} {index}: {exc}", meta=meta)
            if settings.fewshot_ids_per_row:
                meta["fewshot_ids"] = example_ids
            head = 1 if messages[0]["role"] == "system" else 0
            messages = [*messages[:head], *examples, *messages[head:]]
        prompt: Messages | str = messages
        if settings.as_text:
            try:
                prompt = text.as_text(messages, settings.fewshot_delimiter, settings.target_delimiter)
            except RowError as exc:
                return Request(index, None, error=f"{label} {index}: {exc}", meta=meta)
        if settings.record_messages:  # the whole conversation sent, few-shot turns and system prompt included
            meta["messages_sent"] = prompt
        if mode == "choice" and "contexts" in meta:
            return Request(index, meta["contexts"][0], meta=meta, contexts=meta["contexts"],
                           continuations=[settings.target_delimiter + meta["prompt"]])
        if mode == "choice":
            return Request(index, prompt, meta=meta,
                           continuations=[settings.target_delimiter + c for c in meta["choices"]])
        return Request(index, prompt, meta=meta, rolling=mode == "perplexity")

    return request


def plain(value: Any) -> Any:
    """A column's value as JSON holds it: a subject's name, a passage's number."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


AUTO_ID = "auto"  # dataset.fields.id=auto: the `id` column where the data has one, else the row index


def id_reader(id_field: str | None) -> Callable[[int, Mapping[str, Any]], Any]:
    """A row's id: from the column dataset.fields.id names, or its index."""
    if not id_field:
        return lambda index, row: index
    if id_field == AUTO_ID:
        return lambda index, row: row["id"] if row.get("id") is not None else index
    return lambda index, row: row[id_field]
