"""The reference's Python API: generation_init, generate, multimodal_generate,
multiturn_generate, vllm_shutdown. Same signatures, same {"ans_ls": [...]} results.

One difference, on purpose: a row that fails after its retries is None in ans_ls (and
logged), never an answer-looking string like the reference's "<error>".

The functions work on one module-level `Session`; genrun-serve gives each HTTP client a
Session of its own, so one client's settings never reach another's answers.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Callable, Dict, List, Optional, Union

from genrun.backend import Backend, Completion, backend_class, checked_settings
from genrun.backend.build import build, config_of
from genrun.engine.scheduler import answer
from genrun.errors import UserError
from genrun.prompt.images import ImagePolicy
from genrun.prompt.modes import API_FIELDS, PromptSettings, request_builder
from genrun.prompt.request import Request

log = logging.getLogger(__name__)

# Told (answered, total) as each prompt of a generate call is answered: genrun-serve sends it
# on as MCP progress. A context variable, so it belongs to the one call that set it.
progress: ContextVar[Callable[[int, int], None] | None] = ContextVar("genrun_progress", default=None)


def backend_settings(backend_configs: Dict[str, Any], backend: str) -> tuple[type[Backend], dict[str, Any]]:
    """The chosen backend's class and its settings from the reference's `backend_configs`
    (the whole mapping, or only that backend's part), checked against the CLI's schema."""
    cls = backend_class(backend)
    settings = dict(backend_configs.get(backend) or {}) if backend in backend_configs else dict(backend_configs)
    return cls, checked_settings(cls, settings, f"backend_configs.{backend}")


class Session:
    """What generation_init builds and the generate calls answer with: a backend, and the rule
    for images (genrun-serve over HTTP reads local files only under the operator's folder)."""

    def __init__(self, images: ImagePolicy | None = None) -> None:
        self.backend: Backend | None = None
        self.images = images or ImagePolicy()

    def init(self, backend_configs: Dict[str, Any], sampling_params: Dict[str, Any],
             extra_params: Optional[Dict[str, Any]] = None, backend: str = "vllm") -> None:
        """Build the backend, freeing the previous one first (its settings checked before)."""
        cls, settings = backend_settings(backend_configs, backend)
        self.release()
        self.backend = build(config_of(cls, settings), sampling_params, extra_params)

    async def generate(self, prompt_ls: List[Union[str, Dict[str, Any]]], system_prompt: str = "") -> list[str | None]:
        return await self.answer("generate", [{"prompt": p} for p in prompt_ls], PromptSettings(system_prompt))

    async def multiturn_generate(self, messages: List[Dict[str, str]], system_prompt: str = "") -> list[str | None]:
        return await self.answer("multiturn", [{"messages": messages}], PromptSettings(system_prompt))

    async def multimodal_generate(self, multimodal_path: List[List[str]], prompt_ls: List[Union[str, Dict[str, Any]]],
                                  system_prompt: str = "", image_tag: Optional[str] = None) -> list[str | None]:
        if len(multimodal_path) != len(prompt_ls):
            raise UserError(f"multimodal_path has {len(multimodal_path)} entries for {len(prompt_ls)} prompts")
        rows = [{"prompt": p, "images": images} for images, p in zip(multimodal_path, prompt_ls)]
        settings = PromptSettings(system_prompt, image_tag, images=self.images)
        return await self.answer("multimodal", rows, settings)

    def release(self) -> None:
        """Close the backend (and free its engine's memory)."""
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()

    async def answer(self, mode: str, rows: list[dict[str, Any]], settings: PromptSettings) -> list[str | None]:
        if self.backend is None:
            raise UserError("call generation_init(...) before generating")
        build_request = request_builder(mode, API_FIELDS, settings, label="prompt")
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

        await answer(self.backend, (build_request(i, row) for i, row in enumerate(rows)), on_answer)
        return answers


_session = Session()  # the one the module's functions use


def current() -> Session:
    return _session


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
    _session.init(backend_configs, sampling_params, extra_params, backend)


async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer each prompt (a string or an OpenAI-style dict), in input order."""
    return {"ans_ls": await _session.generate(prompt_ls, system_prompt)}


async def multiturn_generate(messages: List[Dict[str, str]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer one conversation (a list of {"role", "content"} turns) with one answer."""
    return {"ans_ls": await _session.multiturn_generate(messages, system_prompt)}


async def multimodal_generate(
    multimodal_path: List[List[str]],
    prompt_ls: List[Union[str, Dict[str, Any]]],
    system_prompt: str = "",
    image_tag: Optional[str] = None,
) -> Dict[str, List[str]]:
    """Answer each prompt with its images: multimodal_path[i] lists the images of prompt i
    (local paths, http(s) URLs or data URLs; a bare string is one image). With image_tag, each
    tag in a prompt is replaced by the next image; without it the images follow the text."""
    return {"ans_ls": await _session.multimodal_generate(multimodal_path, prompt_ls, system_prompt, image_tag)}


def vllm_shutdown() -> None:
    """Shut the vLLM engine down and free its memory; harmless with other backends."""
    if _session.backend is not None and _session.backend.name == "vllm":
        release()


def release() -> None:
    """Close whichever backend generation_init built (genrun-serve, on its way out)."""
    _session.release()


__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]
