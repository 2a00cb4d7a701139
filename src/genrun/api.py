"""The reference's Python API: generation_init, generate, multimodal_generate,
multiturn_generate, vllm_shutdown. Same signatures, same {"ans_ls": [...]} results.

One difference, on purpose: a row that fails after its retries is None in ans_ls (and
logged), never an answer-looking string like the reference's "<error>".
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Union

from hydra.utils import get_class

from genrun.backend import TARGETS, Backend, Completion
from genrun.engine import Request, answer_all
from genrun.errors import RowError, UserError
from genrun.prompts import Messages, conversation_messages, multimodal_messages, prompt_messages

log = logging.getLogger(__name__)

_backend: Backend | None = None


def generation_init(
    backend_configs: Dict[str, Any],
    sampling_params: Dict[str, Any],
    extra_params: Optional[Dict[str, Any]] = None,
    backend: str = "vllm",
) -> None:
    """Build the backend that the generate functions use; frees the previous one first.

    backend_configs is the reference's shape ({"vllm": {...}, "openai": {...}, "hf": {...}});
    only the chosen backend's settings are used.
    """
    global _backend
    if backend not in TARGETS:
        raise UserError(f"backend={backend!r} is unknown (choose one of: {', '.join(TARGETS)})")
    settings = dict(backend_configs.get(backend) or {}) if backend in backend_configs else dict(backend_configs)
    if _backend is not None:
        _backend.close()
        _backend = None
    cls = get_class(TARGETS[backend])
    check_settings(cls, settings, backend)
    _backend = cls(**settings, sampling=dict(sampling_params or {}), extra=dict(extra_params or {}))


def check_settings(cls: type, settings: Dict[str, Any], backend: str) -> None:
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the backend passes unknown keys on (vLLM engine arguments) and checks them itself
    known = set(parameters) - {"self", "sampling", "extra"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(
            f"backend_configs.{backend}.{unknown[0]} is not a setting of the {backend} backend "
            f"(settings: {', '.join(sorted(known))})"
        )


async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer each prompt (a string or an OpenAI-style dict), in input order."""
    return {"ans_ls": await _answer([_request(i, prompt_messages, p, system_prompt) for i, p in enumerate(prompt_ls)])}


async def multiturn_generate(messages: List[Dict[str, str]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer one conversation (a list of {"role", "content"} turns) with one answer."""
    return {"ans_ls": await _answer([_request(0, conversation_messages, messages, system_prompt)])}


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

    def build(pair: Any, system: str) -> Messages:
        images, prompt = pair
        return multimodal_messages(prompt, images, system, image_tag)

    pairs = list(zip(multimodal_path, prompt_ls))
    return {"ans_ls": await _answer([_request(i, build, pair, system_prompt) for i, pair in enumerate(pairs)])}


def vllm_shutdown() -> None:
    """Shut the vLLM engine down and free its memory; harmless with other backends."""
    global _backend
    if _backend is not None and _backend.name == "vllm":
        _backend.close()
        _backend = None


def _request(index: int, build: Any, prompt: Any, system_prompt: str) -> Request:
    try:
        return Request(index, build(prompt, system_prompt))
    except RowError as exc:
        return Request(index, None, error=f"prompt {index}: {exc}")


async def _answer(requests: list[Request]) -> list[str | None]:
    if _backend is None:
        raise UserError("call generation_init(...) before generating")
    answers: list[str | None] = [None] * len(requests)

    def on_answer(request: Request, completion: Completion, latency: float) -> None:
        answers[request.index] = completion.answer
        if completion.error is not None:
            log.warning("prompt %d failed: %s", request.index, completion.error)

    await answer_all(_backend, requests, on_answer)
    return answers


__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]
