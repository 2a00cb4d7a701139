"""A row into a Request, as a run builds it: templates compiled once, few-shot examples drawn
once, each row's own sampling seed when sampling.seed is set. The run and genrun-cache
explain build rows with it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from genrun.backend.sampling import row_seed
from genrun.dataset import image_base_dir
from genrun.errors import UserError
from genrun.prompt import fewshot, text
from genrun.prompt.modes import PromptSettings, request_builder, row_choices, row_prompt, row_reference
from genrun.prompt.request import Request
from genrun.prompt.templates import compile_template
from genrun.settings import PromptOptions
from genrun.settings.schema import DatasetConfig


def prompt_settings(dataset: DatasetConfig, prompt: PromptOptions,
                    keep_columns: tuple[str, ...] = ()) -> PromptSettings:
    """The row-shaping settings, templates compiled once."""
    template, reference = compiled(dataset, "template"), compiled(dataset, "reference_template")
    if prompt.as_text and prompt.mode in ("multimodal", "multiturn"):
        raise UserError(f"chat_template=false sends the prompt as text: mode={prompt.mode} needs the chat "
                        "template (use mode=generate or choice)")
    if prompt.mode == "choice" and not dataset.fields.choices and not dataset.choice_templates:
        raise UserError("mode=choice needs dataset.fields.choices: the column holding each row's choices "
                        "(a list, or a key inside a column: choices.text), or dataset.choice_templates")
    if dataset.choice_templates and prompt.mode != "choice":
        raise UserError(f"dataset.choice_templates are the continuations of mode=choice; this run is "
                        f"mode={prompt.mode}")
    if dataset.system_template and prompt.system_prompt:
        raise UserError("give system_prompt or dataset.system_template, not both")
    if dataset.context_templates and (prompt.mode != "choice" or dataset.fewshot.k or prompt.system_prompt
                                      or dataset.system_template):
        raise UserError("dataset.context_templates (partial scoring) take mode=choice without few-shot examples "
                        "or a system prompt")
    if dataset.units_template and prompt.mode != "perplexity":
        raise UserError(f"dataset.units_template counts the words of mode=perplexity; this run is mode={prompt.mode}")
    return PromptSettings(prompt.system_prompt, prompt.image_tag, image_base_dir(str(dataset.path)), template,
                          reference, compiled(dataset, "system_template"), compiled_each(dataset, "choice_templates"),
                          compiled(dataset, "units_template"), compiled_each(dataset, "context_templates"),
                          record_messages=prompt.record_messages, keep_columns=keep_columns,
                          as_text=prompt.as_text,
                          fewshot_delimiter=prompt.fewshot_delimiter, target_delimiter=prompt.target_delimiter)


def compiled(dataset: DatasetConfig, key: str) -> Any:
    """dataset.KEY compiled, or None when it is not set."""
    value = getattr(dataset, key)
    return compile_template(value, f"dataset.{key}") if value else None


def compiled_each(dataset: DatasetConfig, key: str) -> tuple[Any, ...]:
    """Each template of the list at dataset.KEY, compiled."""
    return tuple(compile_template(t, f"dataset.{key}[{i}]") for i, t in enumerate(getattr(dataset, key) or ()))


def request_maker(dataset: DatasetConfig, prompt: PromptOptions, sampling_seed: int | None = None,
                  keep_columns: tuple[str, ...] = ()) -> tuple[Callable[[int, Any], Request], dict[str, Any] | None]:
    """Row -> Request, and what run.json records of the few-shot examples. keep_columns: the
    columns whose values each record keeps (`columns`), for scoring's groups and clusters."""
    settings = prompt_settings(dataset, prompt, keep_columns)
    if prompt.mode == "choice":  # an example's answer is the text of its right choice, as lm-eval shows it
        def answer_of(row: Any) -> Any:
            choices = row_choices(row, dataset.fields, settings)
            return choices[text.gold_index(row_reference(row, dataset.fields, settings), choices)]
    else:
        def answer_of(row: Any) -> Any:
            return row_reference(row, dataset.fields, settings)
    shots, record = fewshot.draw(dataset, lambda row: row_prompt(row, dataset.fields, settings), answer_of)
    if shots is not None and prompt.mode == "multiturn":
        raise UserError("dataset.fewshot.k applies to mode=generate and multimodal; "
                        "a conversation brings its own turns")
    if prompt.mode == "perplexity" and (shots is not None or prompt.system_prompt):
        raise UserError("mode=perplexity scores each row's text as it is: remove dataset.fewshot.k and system_prompt")
    if shots is not None:
        settings = dataclasses.replace(settings, fewshot=shots.for_row,
                                       fewshot_ids_per_row=shots.sampler == "random" or shots.per_group is not None)
    build = request_builder(prompt.mode, dataset.fields, settings)
    if sampling_seed is None:
        return build, record

    def seeded(index: int, row: Any) -> Request:
        request = build(index, row)
        request.seed = row_seed(int(sampling_seed), request.meta["id"])  # the same whatever batch or order
        return request

    return seeded, record
