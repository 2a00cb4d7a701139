"""The MCP server: the seed's five tools, with the reference's names, arguments and
{"ans_ls": [...]} results, each call routed to its session (serve.sessions); a bearer token
checked on HTTP through the SDK's TokenVerifier hook.

No `from __future__ import annotations` here: the SDK reads the tools' annotations at runtime.
"""

import contextlib
import hmac
import math
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, TypedDict, TypeVar, Union, cast

from genrun import api
from genrun.errors import UserError, one_line

T = TypeVar("T")
INSTRUCTIONS = ("The reference generation server's tools: generation_init builds the backend the generate tools "
                "use; generate, multimodal_generate and multiturn_generate answer prompts; vllm_shutdown frees the "
                "engine. Answers come in input order; a prompt that failed gets the failed answer (\"<error>\" unless "
                "the server's operator chose another), and its reason in `errors` at the same place.")


class Answers(TypedDict):
    """The reference's result, as the tool's structured content too: one string per prompt (a
    prompt that failed gets the operator's failed answer, "<error>" by default, as the
    reference's), and beside it each prompt's error (null where it was answered)."""

    ans_ls: List[str]
    errors: List[Optional[str]]


PROMPTS = ("a list of prompts: each a string, or an OpenAI-style dict "
           '({"role": "user", "content": ...}, or {"content": {"text": ...}}, {"text": ...})')
DESCRIPTIONS = {
    "generation_init": (
        "Build the backend the generate tools use, freeing the one before. backend: 'vllm', 'openai' or 'hf'. "
        "backend_configs: settings by backend, as parameter.yaml holds them ({'hf': {'model_name_or_path': ..., "
        "'batch_size': 8}, 'openai': {'model_name': ..., 'base_url': ..., 'concurrency': 8}, 'vllm': {...}}); "
        "only the chosen backend's are used, and an unknown key is an error. sampling_params: temperature, top_p, "
        "max_tokens (and top_k, stop, seed, n, ...). extra_params: e.g. {'chat_template_kwargs': "
        "{'enable_thinking': false}}. Over HTTP the settings hold for this session only, and the backend and "
        "model are the server operator's unless it allowed others."),
    "generate": (
        f"Answer each prompt. prompt_ls: {PROMPTS}. system_prompt: a system message put first when not empty. "
        'Returns {"ans_ls": [...], "errors": [...]}: one answer per prompt, in order; a prompt that failed gets the '
        'failed answer ("<error>") and its reason in errors (null where answered).'),
    "multimodal_generate": (
        "Answer each prompt with its images. multimodal_path: one list of images per prompt (local paths, "
        f"http(s) or data URLs). prompt_ls: {PROMPTS}. system_prompt: as for generate. image_tag: e.g. '<img>': "
        "each tag in a prompt is replaced by the next image; null appends them to the text (before it, where the "
        "server was started with --images-first, as UltraRAG's own server does). A shorter multimodal_path is "
        'padded with no images. Returns {"ans_ls": [...], "errors": [...]}, as generate does.'),
    "multiturn_generate": (
        "Answer one conversation. messages: its turns, [{'role': 'user'|'assistant'|'system', 'content': ...}], "
        'ending with a user turn. system_prompt: a system message put first, before the conversation\'s own. '
        'Returns {"ans_ls": [answer], "errors": [...]}; {"ans_ls": [], "errors": []} for no turns.'),
    "vllm_shutdown": "Shut the vLLM engine down and free its memory; does nothing with the other backends.",
    "build": ("UltraRAG's build step (stdio only): write server.yaml beside parameter_file, mapping each tool's "
              "inputs to $parameters of that file or to pipeline variables, and naming its outputs."),
}


def build_server(gate: Any, start: Optional[Callable[[], Awaitable[None]]] = None, token: str | None = None,
                 url: str | None = None, http: Optional[Dict[str, Any]] = None) -> Any:
    """The MCP server. start: builds the backend as the server starts (on stdio by then the
    SDK has pointed fd 1 at stderr, so an engine's processes, which inherit it, cannot write
    into the protocol). token: the bearer token every HTTP request must carry. http: the
    streamable HTTP settings (sdk.make_server); without them (stdio) UltraRAG's `build` tool
    is served too, which writes a file and so is the local user's alone."""
    from genrun.serve.sdk import Context, make_server

    @contextlib.asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict]:
        if start is not None:
            await as_tool(start())
        yield {}

    auth: dict[str, Any] = {}
    if token is not None:
        from mcp.server.auth.settings import AuthSettings

        settings = AuthSettings(issuer_url=cast(Any, url), resource_server_url=None)  # the SDK reads the URL text
        auth = {"token_verifier": TokenCheck(token), "auth": settings}
    server = make_server("genrun", INSTRUCTIONS, version(), lifespan, http, **auth)

    @server.tool(description=DESCRIPTIONS["generation_init"])
    async def generation_init(backend_configs: Dict[str, Any], sampling_params: Dict[str, Any], ctx: Context,
                              extra_params: Optional[Dict[str, Any]] = None, backend: str = "vllm") -> None:
        await as_tool(gate.init(ctx, backend_configs, sampling_params, extra_params, backend))

    @server.tool(description=DESCRIPTIONS["generate"])
    async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], ctx: Context,
                       system_prompt: str = "") -> Answers:
        return await answered(gate, ctx, lambda s: s.generate(prompt_ls, system_prompt))

    @server.tool(description=DESCRIPTIONS["multimodal_generate"])
    async def multimodal_generate(multimodal_path: List[List[str]], prompt_ls: List[Union[str, Dict[str, Any]]],
                                  ctx: Context, system_prompt: str = "", image_tag: Optional[str] = None) -> Answers:
        return await answered(gate, ctx, lambda s: s.multimodal_generate(multimodal_path, prompt_ls, system_prompt,
                                                                         image_tag))

    @server.tool(description=DESCRIPTIONS["multiturn_generate"])
    async def multiturn_generate(messages: List[Dict[str, Any]], ctx: Context, system_prompt: str = "") -> Answers:
        return await answered(gate, ctx, lambda s: s.multiturn_generate(messages, system_prompt))

    @server.tool(description=DESCRIPTIONS["vllm_shutdown"])
    async def vllm_shutdown(ctx: Context) -> None:
        await as_tool(gate.shutdown(ctx))

    if http is None:
        @server.tool(description=DESCRIPTIONS["build"])
        async def build(parameter_file: str) -> None:
            from genrun.serve.ultrarag import write_server_yaml

            async def write() -> None:
                write_server_yaml(parameter_file)

            await as_tool(write())

    return server


class TokenCheck:
    """The SDK's TokenVerifier for one bearer token (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="genrun-serve", scopes=[])
        return None


async def answered(gate: Any, ctx: Any, call: Callable[[api.Session], Awaitable[api.Results]]) -> Answers:
    async def work() -> Answers:
        async with gate.session(ctx) as session:
            results = await with_progress(ctx, lambda: call(session))
            return cast(Answers, results.result())

    return await as_tool(work())


async def as_tool(work: Awaitable[T]) -> T:
    """A user's mistake (a bad argument, no generation_init yet) is a tool error of one line;
    the server goes on serving."""
    try:
        return await work
    except UserError as exc:
        raise tool_error(exc) from None


def tool_error(exc: UserError) -> Exception:
    from genrun.serve.sdk import ToolError

    return ToolError(one_line(str(exc)))


async def with_progress(ctx: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run a generate call, sending the client a progress notification as each prompt is
    answered (when it asked for them). A client's cancellation cancels the call: no new
    batch starts, and vLLM and the openai backend abort what is in flight."""
    import anyio

    send, receive = anyio.create_memory_object_stream[tuple[int, int]](math.inf)

    async def report() -> None:
        async with receive:
            async for done, total in receive:
                await ctx.report_progress(done, total, f"{done} of {total} answered")

    mistake: UserError | None = None
    hook = api.progress.set(lambda done, total: send.send_nowait((done, total)))
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(report)
            async with send:  # closed when the call ends, which ends report()
                try:
                    result = await call()
                except UserError as exc:  # raised outside the task group, or it comes as an exception group
                    mistake = exc
    finally:
        api.progress.reset(hook)
    if mistake is not None:
        raise tool_error(mistake) from None
    return result


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("genrun")
