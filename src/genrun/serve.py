"""`genrun-serve`: the seed's five functions as the tools of an MCP server.

The reference serves generation_init, generate, multimodal_generate, multiturn_generate and
vllm_shutdown as MCP tools, and its pipelines call them by name; this server has the same
tool names, argument names and `{"ans_ls": [...]}` results, answered by genrun.api (so by
genrun's backends, retries and checks). A prompt that failed is null, never "<error>".

    genrun-serve [--http [HOST:]PORT] [OVERRIDES ...]

stdio by default (stdout is the protocol: every log goes to stderr, vLLM's included);
streamable HTTP on 127.0.0.1 with --http. Hydra overrides, as for `genrun`, start the
server with a backend already built; a client's generation_init replaces it.
"""


import argparse
import contextlib
import logging
import math
import os
import sys
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, TypedDict, TypeVar, Union

from genrun import api
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)
T = TypeVar("T")


class Answers(TypedDict):
    """The reference's result, as the tool's structured content too."""

    ans_ls: List[Optional[str]]


PROMPTS = ("a list of prompts: each a string, or an OpenAI-style dict "
           '({"role": "user", "content": ...}, or {"content": {"text": ...}}, {"text": ...})')
DESCRIPTIONS = {
    "generation_init": (
        "Build the backend the generate tools use, freeing the one before. backend: 'vllm', 'openai' or 'hf'. "
        "backend_configs: settings by backend, as parameter.yaml holds them ({'hf': {'model_name_or_path': ..., "
        "'batch_size': 8}, 'openai': {'model_name': ..., 'base_url': ..., 'concurrency': 8}, 'vllm': {...}}); "
        "only the chosen backend's are used, and an unknown key is an error. sampling_params: temperature, top_p, "
        "max_tokens (and top_k, stop, seed, n, ...). extra_params: e.g. {'chat_template_kwargs': "
        "{'enable_thinking': false}}."),
    "generate": (
        f"Answer each prompt. prompt_ls: {PROMPTS}. system_prompt: a system message put first when not empty. "
        'Returns {"ans_ls": [...]}: one answer per prompt, in order; null for a prompt that failed.'),
    "multimodal_generate": (
        "Answer each prompt with its images. multimodal_path: one list of images per prompt (local paths, "
        f"http(s) or data URLs). prompt_ls: {PROMPTS}. system_prompt: as for generate. image_tag: e.g. '<img>': "
        "each tag in a prompt is replaced by the next image; null puts the images after the text. "
        'Returns {"ans_ls": [...]}, one per prompt; null for a prompt that failed.'),
    "multiturn_generate": (
        "Answer one conversation. messages: its turns, [{'role': 'user'|'assistant'|'system', 'content': ...}], "
        'ending with a user turn. system_prompt: as for generate. Returns {"ans_ls": [answer]} (null if it failed).'),
    "vllm_shutdown": "Shut the vLLM engine down and free its memory; does nothing with the other backends.",
}


def build_server(start: Optional[dict[str, Any]] = None) -> Any:
    """The MCP server. start: generation_init's arguments for a backend built as the stdio
    session opens: by then the SDK has pointed fd 1 at stderr, so an engine's processes,
    which inherit it, cannot write into the protocol."""
    import anyio
    from mcp.server.mcpserver import Context, MCPServer

    one_at_a_time = anyio.Lock()  # one backend, one call on it at a time

    @contextlib.asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict]:
        if start is not None:
            await anyio.to_thread.run_sync(lambda: api.generation_init(**start))
        yield {}

    server = MCPServer("genrun", instructions=__doc__.split("\n\n")[1], version=version(), lifespan=lifespan,
                       log_level="WARNING")

    @server.tool(description=DESCRIPTIONS["generation_init"])
    async def generation_init(backend_configs: Dict[str, Any], sampling_params: Dict[str, Any],
                              extra_params: Optional[Dict[str, Any]] = None, backend: str = "vllm") -> None:
        async with one_at_a_time:
            await as_tool(anyio.to_thread.run_sync(
                lambda: api.generation_init(backend_configs, sampling_params, extra_params, backend)))

    @server.tool(description=DESCRIPTIONS["generate"])
    async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], ctx: Context,
                       system_prompt: str = "") -> Answers:
        async with one_at_a_time:
            return await with_progress(ctx, lambda: api.generate(prompt_ls, system_prompt))

    @server.tool(description=DESCRIPTIONS["multimodal_generate"])
    async def multimodal_generate(multimodal_path: List[List[str]], prompt_ls: List[Union[str, Dict[str, Any]]],
                                  ctx: Context, system_prompt: str = "", image_tag: Optional[str] = None) -> Answers:
        async with one_at_a_time:
            return await with_progress(
                ctx, lambda: api.multimodal_generate(multimodal_path, prompt_ls, system_prompt, image_tag))

    @server.tool(description=DESCRIPTIONS["multiturn_generate"])
    async def multiturn_generate(messages: List[Dict[str, Any]], ctx: Context, system_prompt: str = "") -> Answers:
        async with one_at_a_time:
            return await with_progress(ctx, lambda: api.multiturn_generate(messages, system_prompt))

    @server.tool(description=DESCRIPTIONS["vllm_shutdown"])
    async def vllm_shutdown() -> None:
        async with one_at_a_time:
            await as_tool(anyio.to_thread.run_sync(api.vllm_shutdown))

    return server


async def as_tool(work: Awaitable[T]) -> T:
    """A user's mistake (a bad argument, no generation_init yet) is a tool error of one line;
    the server goes on serving."""
    try:
        return await work
    except UserError as exc:
        raise tool_error(exc) from None


def tool_error(exc: UserError) -> Exception:
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(one_line(str(exc)))


async def with_progress(ctx: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run a generate call, sending the client a progress notification as each prompt is
    answered (when it asked for them). A client's cancellation cancels the call: no new
    batch starts, and vLLM and the openai backend abort what is in flight."""
    import anyio

    send, receive = anyio.create_memory_object_stream(math.inf)

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


def start_settings(overrides: list[str]) -> Optional[dict[str, Any]]:
    """generation_init's arguments from `genrun`-style overrides (backend=..., sampling...),
    composed as the CLI composes them; None without overrides."""
    if not overrides:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from hydra.utils import get_class
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from genrun.config import conf_dir

    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        settings = OmegaConf.to_container(cfg.backend, resolve=True, throw_on_missing=True)
        name = get_class(settings.pop("_target_")).name
        return {"backend_configs": {name: settings}, "backend": name,
                "sampling_params": OmegaConf.to_container(cfg.sampling, resolve=True),
                "extra_params": OmegaConf.to_container(cfg.extra, resolve=True)}
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"{' '.join(overrides)}: {str(exc).splitlines()[0]}") from None


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("genrun")


def http_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise UserError(f"--http {text}: give a port, or HOST:PORT (e.g. --http 8765 or --http 127.0.0.1:8765)")
    return host or "127.0.0.1", int(port)


def main(argv: Optional[list[str]] = None) -> None:
    from genrun.cli import secrets_to_environment

    parser = argparse.ArgumentParser(prog="genrun-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", metavar="[HOST:]PORT",
                        help="serve streamable HTTP at http://HOST:PORT/mcp (HOST: 127.0.0.1) instead of stdio")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for genrun: backend=hf backend.KEY=VALUE ...")
    args = parser.parse_args(secrets_to_environment(sys.argv[1:] if argv is None else argv))
    # stdout is the protocol on stdio: every log goes to stderr, vLLM's own logger included.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import mcp  # noqa: F401 - the `serve` extra
    except ImportError:
        print("genrun-serve: error: it needs the MCP SDK: pip install 'genrun[serve]'", file=sys.stderr)
        sys.exit(2)
    try:
        start = start_settings(args.overrides)
        if args.http:
            host, port = http_address(args.http)
            if start is not None:  # before serving: each HTTP session enters the server's lifespan anew
                api.generation_init(**start)
            log.info("genrun-serve: MCP over streamable HTTP at http://%s:%d/mcp", host, port)
            build_server().run("streamable-http", host=host, port=port)
        else:
            build_server(start).run("stdio")
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"genrun-serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        api.release()  # the engine and its memory go with the server


if __name__ == "__main__":
    main()
