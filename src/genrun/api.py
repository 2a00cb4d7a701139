"""The reference's Python API: generation_init, generate, multimodal_generate,
multiturn_generate, vllm_shutdown. Same signatures, same {"ans_ls": [...]} results.

A row that fails after its retries gets the failed answer in ans_ls ("<error>", as the
reference's, so every later step of a pipeline still gets a list of strings), and its reason in
the `errors` list returned beside ans_ls (None where the row was answered) and in the log.
Where the page is silent, the functions behave as UltraRAG's own server does (see `Conventions`).

The functions work on one module-level `Session`; genrun-serve gives each HTTP client a
Session of its own, so one client's settings never reach another's answers.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Conventions:
    """What the page leaves open, chosen as UltraRAG's own generation server does unless said."""

    failed_answer: str = "<error>"  # ans_ls's string for a prompt that failed (its reason goes in errors)
    # Without an image_tag the page says the images are "appended to the end" of the prompt;
    # UltraRAG's server puts them first (genrun-serve --images-first, which --ultrarag folders set).
    images_first: bool = False
    # A multimodal_path shorter than prompt_ls is padded with no images, a longer one cut, with a
    # warning (UltraRAG's); strict_images makes either a mistake of the call instead.
    strict_images: bool = False


@dataclasses.dataclass
class Results:
    """One generate call's results: an answer per prompt, and each one's error (None if answered)."""

    answers: list[str]
    errors: list[str | None]

    def result(self) -> Dict[str, List[Any]]:
        return {"ans_ls": self.answers, "errors": self.errors}


class Session:
    """What generation_init builds and the generate calls answer with: a backend, the rule for
    images (genrun-serve over HTTP reads local files only under the operator's folder) and the
    conventions where the page is silent."""

    def __init__(self, images: ImagePolicy | None = None, conventions: Conventions | None = None) -> None:
        self.backend: Backend | None = None
        self.images = images or ImagePolicy()
        self.conventions = conventions or Conventions()

    def init(self, backend_configs: Dict[str, Any], sampling_params: Dict[str, Any],
             extra_params: Optional[Dict[str, Any]] = None, backend: str = "vllm") -> None:
        """Build the backend, freeing the previous one first (its settings checked before)."""
        cls, settings = backend_settings(backend_configs, backend)
        self.release()
        self.backend = build(config_of(cls, settings), sampling_params, extra_params)

    async def generate(self, prompt_ls: List[Union[str, Dict[str, Any]]], system_prompt: str = "") -> Results:
        return await self.answer("generate", [{"prompt": p} for p in prompt_ls], PromptSettings(system_prompt))

    async def multiturn_generate(self, messages: List[Dict[str, str]], system_prompt: str = "") -> Results:
        if not isinstance(messages, list):
            raise UserError(f"messages must be a list of {{'role', 'content'}} turns, got {type(messages).__name__}")
        if all(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            log.info("multiturn_generate: no user or assistant turn; nothing to answer")
            return Results([], [])  # UltraRAG's server answers no turns with no answers
        # The page adds the global system prompt to the context: before the conversation's own.
        settings = PromptSettings(system_prompt, system_beside_own=True)
        return await self.answer("multiturn", [{"messages": messages}], settings)

    async def multimodal_generate(self, multimodal_path: List[List[str]], prompt_ls: List[Union[str, Dict[str, Any]]],
                                  system_prompt: str = "", image_tag: Optional[str] = None) -> Results:
        paths = list(multimodal_path)
        if len(paths) != len(prompt_ls):
            said = f"multimodal_path has {len(paths)} entries for {len(prompt_ls)} prompts"
            if self.conventions.strict_images:
                raise UserError(said)
            log.warning("%s: %s", said, "the prompts without an entry get no images" if len(paths) < len(prompt_ls)
                        else "the entries past the last prompt are left out")
            paths = [*paths[:len(prompt_ls)], *([[]] * (len(prompt_ls) - len(paths)))]
        rows = [{"prompt": p, "images": images} for images, p in zip(paths, prompt_ls)]
        settings = PromptSettings(system_prompt, image_tag, images=self.images,
                                  images_first=self.conventions.images_first)
        return await self.answer("multimodal", rows, settings)

    def release(self) -> None:
        """Close the backend (and free its engine's memory)."""
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()

    async def answer(self, mode: str, rows: list[dict[str, Any]], settings: PromptSettings) -> Results:
        if self.backend is None:
            raise UserError("call generation_init(...) before generating")
        build_request = request_builder(mode, API_FIELDS, settings, label="prompt")
        failed = self.conventions.failed_answer
        answers: list[str] = [failed] * len(rows)
        errors: list[str | None] = ["not answered"] * len(rows)
        answered = 0
        tell = progress.get()

        def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
            nonlocal answered
            if completion.error is not None or completion.answer is None:
                errors[request.index] = completion.error or "no answer"
                log.warning("prompt %d failed: %s", request.index, errors[request.index])
            else:
                answers[request.index], errors[request.index] = completion.answer, None
            answered += 1
            if tell is not None:
                tell(answered, len(rows))

        await answer(self.backend, (build_request(i, row) for i, row in enumerate(rows)), on_answer)
        return Results(answers, errors)


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
    """Answer each prompt (a string or an OpenAI-style dict), in input order: {"ans_ls": [...],
    "errors": [...]}, a failed prompt's answer "<error>" and its reason in errors."""
    return (await _session.generate(prompt_ls, system_prompt)).result()


async def multiturn_generate(messages: List[Dict[str, str]], system_prompt: str = "") -> Dict[str, List[str]]:
    """Answer one conversation (a list of {"role", "content"} turns) with one answer; none for no
    turns. system_prompt goes first, before the conversation's own system turn."""
    return (await _session.multiturn_generate(messages, system_prompt)).result()


async def multimodal_generate(
    multimodal_path: List[List[str]],
    prompt_ls: List[Union[str, Dict[str, Any]]],
    system_prompt: str = "",
    image_tag: Optional[str] = None,
) -> Dict[str, List[str]]:
    """Answer each prompt with its images: multimodal_path[i] lists the images of prompt i
    (local paths, http(s) URLs or data URLs; a bare string is one image). With image_tag, each
    tag in a prompt is replaced by the next image; without it the images follow the text
    (Conventions.images_first: before it). A shorter multimodal_path is padded with no images."""
    return (await _session.multimodal_generate(multimodal_path, prompt_ls, system_prompt, image_tag)).result()


def vllm_shutdown() -> None:
    """Shut the vLLM engine down and free its memory; harmless with other backends."""
    if _session.backend is not None and _session.backend.name == "vllm":
        release()


def release() -> None:
    """Close whichever backend generation_init built (genrun-serve, on its way out)."""
    _session.release()


__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]
