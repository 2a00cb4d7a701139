"""The three modes in one table: which dataset fields each reads, what its record keeps of
the row, and how the row becomes chat messages. The CLI, the dataset check and the Python
API all read it, so a mode is added here once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from genrun.errors import RowError
from genrun.images import describe as describe_image
from genrun.images import image_list
from genrun.prompts import Messages, conversation_messages, multimodal_messages, prompt_messages
from genrun.scheduler import Request


@dataclass(frozen=True)
class PromptSettings:
    """The run-wide settings that shape every row's messages."""

    system_prompt: str = ""
    image_tag: str | None = None
    base_dir: str | None = None  # relative image paths resolve against it (the dataset's folder)


# build(row, fields, settings, kept) -> messages; it first puts into `kept` what the record
# keeps of the row (the prompt, the turns), so a row that fails still shows its input.
Build = Callable[[Mapping[str, Any], Mapping[str, Any], PromptSettings, dict], Messages]


@dataclass(frozen=True)
class Mode:
    fields: tuple[str, ...]  # the dataset.fields it needs (id and reference are read when set)
    build: Build


def _generate(row: Mapping[str, Any], fields: Mapping[str, Any], s: PromptSettings, kept: dict) -> Messages:
    kept["prompt"] = row[fields["prompt"]]
    return prompt_messages(kept["prompt"], s.system_prompt)


def _multimodal(row: Mapping[str, Any], fields: Mapping[str, Any], s: PromptSettings, kept: dict) -> Messages:
    kept["prompt"] = row[fields["prompt"]]
    images = image_list(row[fields["images"]])
    kept["images"] = [describe_image(i) for i in images if i is not None]
    return multimodal_messages(kept["prompt"], images, s.system_prompt, s.image_tag, s.base_dir)


def _multiturn(row: Mapping[str, Any], fields: Mapping[str, Any], s: PromptSettings, kept: dict) -> Messages:
    kept["messages"] = row[fields["messages"]]
    return conversation_messages(kept["messages"], s.system_prompt)


MODES = {
    "generate": Mode(("prompt",), _generate),
    "multimodal": Mode(("prompt", "images"), _multimodal),
    "multiturn": Mode(("messages",), _multiturn),
}
# The fields the Python API's rows use (the CLI's come from dataset.fields).
API_FIELDS = {"prompt": "prompt", "images": "images", "messages": "messages", "id": None, "reference": None}


def request_builder(mode: str, fields: Mapping[str, Any], settings: PromptSettings,
                    label: str = "row") -> Callable[[int, Mapping[str, Any]], Request]:
    """Turns a row into a Request; a row that cannot be sent becomes a Request with its error.
    Settings are read once: per-row config lookups add up over millions of rows."""
    build = MODES[mode].build
    id_field, reference_field = fields.get("id"), fields.get("reference")

    def request(index: int, row: Mapping[str, Any]) -> Request:
        meta: dict[str, Any] = {"id": row[id_field] if id_field else index}
        if reference_field:
            meta["reference"] = row[reference_field]
        try:
            messages = build(row, fields, settings, meta)
        except RowError as exc:
            return Request(index, None, error=f"{label} {index}: {exc}", meta=meta)
        return Request(index, messages, meta=meta)

    return request
