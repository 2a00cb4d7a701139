"""The reference's Python API: generation_init, generate, multimodal_generate,
multiturn_generate, vllm_shutdown. Same signatures, same {"ans_ls": [...]} results.

One difference, on purpose: a row that fails after its retries is None in ans_ls (and
logged), never an answer-looking string like the reference's "<error>".
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Callable, Dict, List, Optional, Union

from genrun.backend import Backend, Completion, backend_class, checked_settings
from genrun.errors import UserError
from genrun.modes import API_FIELDS, PromptSettings, request_builder
from genrun.run import answer
from genrun.scheduler import Request

log = logging.getLogger(__name__)

_backend: Backend | None = None
# Told (answered, total) as each prompt of a generate call is answered: genrun-serve sends it
# on as MCP progress. A context variable, so it belongs to the one call that set it.
progress: ContextVar[Callable[[int, int], None] | None] = ContextVar("genrun_progress", default=None)


def generation_init(
    backend_configs: Dict[str, Any],
    sampling_params: Dict[str, Any],
    extra_params: Optional[Dict[str, Any]] = None,
    backend: str = "vllm",
) -> None:
    """Build the backend that the generate functions use; frees the previous one first.

    backend_configs is the reference's shape ({"vllm": {...}, "openai": {...}, "hf": {...}});
    only the chosen backend's settings are used. They are checked against the same schema as
    the CLI's backend config (genrun.backend.settings_schema).
    """
    global _backend
    cls = backend_class(backend)
    settings = dict(backend_configs.get(backend) or {}) if backend in backend_configs else dict(backend_configs)
    settings = checked_settings(cls, settings, f"backend_configs.{backend}")
    if _backend is not None:
        _backend.close()
        _backend = None
    _backend = cls(**settings, sampling=dict(sampling_params or {}), extra=dict(extra_params or {}))


async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer each prompt (a string or an OpenAI-style dict), in input order."""
    return {"ans_ls": await _answer("generate", [{"prompt": p} for p in prompt_ls], PromptSettings(system_prompt))}


async def multiturn_generate(messages: List[Dict[str, str]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer one conversation (a list of {"role", "content"} turns) with one answer."""
    return {"ans_ls": await _answer("multiturn", [{"messages": messages}], PromptSettings(system_prompt))}


async def multimodal_generate(
    multimodal_path: List[List[str]],
    prompt_ls: List[Union[str, Dict[str, Any]]],
    system_prompt: str = "",
    image_tag: Optional[str] = None,
) -> Dict[str, List[str]]:
    """Answer each prompt with its images: multimodal_path[i] lists the images of prompt i
    (local paths, http(s) URLs or data URLs; a bare string is one image). With image_tag, each
    tag in a prompt is replaced by the next image; without it the images follow the text."""
    if len(multimodal_path) != len(prompt_ls):
        raise UserError(f"multimodal_path has {len(multimodal_path)} entries for {len(prompt_ls)} prompts")
    rows = [{"prompt": p, "images": images} for images, p in zip(multimodal_path, prompt_ls)]
    return {"ans_ls": await _answer("multimodal", rows, PromptSettings(system_prompt, image_tag))}


def vllm_shutdown() -> None:
    """Shut the vLLM engine down and free its memory; harmless with other backends."""
    if _backend is not None and _backend.name == "vllm":
        release()


def release() -> None:
    """Close whichever backend generation_init built (genrun-serve, on its way out)."""
    global _backend
    if _backend is not None:
        backend, _backend = _backend, None
        backend.close()


async def _answer(mode: str, rows: list[dict[str, Any]], settings: PromptSettings) -> list[str | None]:
    if _backend is None:
        raise UserError("call generation_init(...) before generating")
    build = request_builder(mode, API_FIELDS, settings, label="prompt")
    answers: list[str | None] = [None] * len(rows)
    answered = 0
    tell = progress.get()

    def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
        nonlocal answered
        answers[request.index] = completion.answer
        if completion.error is not None:
            log.warning("prompt %d failed: %s", request.index, completion.error)
        answered += 1
        if tell is not None:
            tell(answered, len(rows))

    await answer(_backend, (build(i, row) for i, row in enumerate(rows)), on_answer)
    return answers


__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]
