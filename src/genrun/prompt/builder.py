"""A row into a Request, as a run builds it: templates compiled once, few-shot examples drawn
once, each row's own sampling seed when sampling.seed is set. The run and genrun-cache
explain build rows with it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from genrun.backend.sampling import row_seed
from genrun.dataset import image_base_dir
from genrun.errors import UserError
from genrun.prompt import fewshot
from genrun.prompt.modes import PromptSettings, request_builder, row_prompt, row_reference
from genrun.prompt.request import Request
from genrun.prompt.templates import compile_template
from genrun.settings import PromptOptions
from genrun.settings.schema import DatasetConfig


def prompt_settings(dataset: DatasetConfig, prompt: PromptOptions) -> PromptSettings:
    """The row-shaping settings, templates compiled once."""
    template = compile_template(dataset.template, "dataset.template") if dataset.template else None
    reference = (compile_template(dataset.reference_template, "dataset.reference_template")
                 if dataset.reference_template else None)
    if prompt.as_text and prompt.mode in ("multimodal", "multiturn"):
        raise UserError(f"chat_template=false sends the prompt as text: mode={prompt.mode} needs the chat "
                        "template (use mode=generate or choice)")
    if prompt.mode == "choice" and not dataset.fields.choices:
        raise UserError("mode=choice needs dataset.fields.choices: the column holding each row's choices "
                        "(a list, or a key inside a column: choices.text)")
    return PromptSettings(prompt.system_prompt, prompt.image_tag, image_base_dir(str(dataset.path)), template,
                          reference, record_messages=prompt.record_messages, as_text=prompt.as_text,
                          fewshot_delimiter=prompt.fewshot_delimiter, target_delimiter=prompt.target_delimiter)


def request_maker(dataset: DatasetConfig, prompt: PromptOptions,
                  sampling_seed: int | None = None) -> tuple[Callable[[int, Any], Request], dict[str, Any] | None]:
    """Row -> Request, and what run.json records of the few-shot examples."""
    settings = prompt_settings(dataset, prompt)
    examples, shots = fewshot.draw(dataset, lambda row: row_prompt(row, dataset.fields, settings),
                                   lambda row: row_reference(row, dataset.fields, settings))
    if examples and prompt.mode == "multiturn":
        raise UserError("dataset.fewshot.k applies to mode=generate and multimodal; "
                        "a conversation brings its own turns")
    if prompt.mode == "perplexity" and (examples or prompt.system_prompt):
        raise UserError("mode=perplexity scores each row's text as it is: remove dataset.fewshot.k and system_prompt")
    build = request_builder(prompt.mode, dataset.fields, dataclasses.replace(settings, fewshot=examples))
    if sampling_seed is None:
        return build, shots

    def seeded(index: int, row: Any) -> Request:
        request = build(index, row)
        request.seed = row_seed(int(sampling_seed), request.meta["id"])  # the same whatever batch or order
        return request

    return seeded, shots
