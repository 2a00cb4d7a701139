"""genrun-serve, driven by the official MCP SDK's own client: over stdio (the tools, the page's
parameter.yaml values on a tiny hf model, every generate tool, progress, tool errors, a
cancelled call, vLLM with its logs kept off stdout) and once over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client  # the `serve` extra, which scripts/test.sh installs
from mcp.client.stdio import StdioServerParameters

from conftest import VLLM_CPU, free_port, wait_until_listening
from genrun.testing.fault_server import FaultServer
from test_api import PARAMETER_YAML

DEMO = Path(__file__).resolve().parents[1] / "src/genrun/data/demo_vqa"
RED, BLUE = str(DEMO / "red_square.png"), str(DEMO / "blue_circle.png")
TOOLS = {  # the page's functions and their arguments, in order
    "generation_init": ["backend_configs", "sampling_params", "extra_params", "backend"],
    "generate": ["prompt_ls", "system_prompt"],
    "multimodal_generate": ["multimodal_path", "prompt_ls", "system_prompt", "image_tag"],
    "multiturn_generate": ["messages", "system_prompt"],
    "vllm_shutdown": [],
}
STDIO_TOOLS = [*TOOLS, "build"]  # UltraRAG's build step, which writes a file: the local user's alone


def serve(*args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "genrun.serve", *args], env=dict(os.environ))


def answers(result: Any) -> list[str | None]:
    """ans_ls from a tool result, read as the reference's pipelines read it (the text is JSON)."""
    assert not result.is_error, result.content
    from_text = json.loads(result.content[0].text)
    assert result.structured_content == from_text and list(from_text) == ["ans_ls", "errors"]
    assert [e is None for e in from_text["errors"]] == [a != "<error>" for a in from_text["ans_ls"]]
    return from_text["ans_ls"]


def error_line(result: Any) -> str:
    assert result.is_error and len(result.content) == 1
    text = result.content[0].text
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.engine
def test_the_five_tools_over_stdio_with_the_pages_values(tiny_model: str, genrun_cache: Path) -> None:
    from genrun.assets.tiny_model import cached_tiny_model

    page = yaml.safe_load(PARAMETER_YAML.replace("TINY", tiny_model))
    page["sampling_params"]["max_tokens"] = 8
    vision = cached_tiny_model("vision")

    async def session() -> None:
        async with Client(serve()) as client:
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == STDIO_TOOLS
            for tool in listed[:len(TOOLS)]:
                assert list(tool.input_schema["properties"]) == TOOLS[tool.name] and tool.description

            assert "call generation_init" in error_line(await client.call_tool("generate", {"prompt_ls": ["hi"]}))
            init = {k: page[k] for k in ("backend_configs", "sampling_params", "extra_params", "backend")}
            assert not (await client.call_tool("generation_init", init)).is_error

            progress: list[tuple[float, float | None]] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total))

            prompts = ["What is 2+2?", {"role": "user", "content": "Name a colour."}, {"text": "Hello"}, ""]
            result = await client.call_tool("generate", {"prompt_ls": prompts, "system_prompt": page["system_prompt"]},
                                            progress_callback=on_progress)
            got = answers(result)
            assert len(got) == 4 and all(isinstance(a, str) for a in got[:3]) and got[3] == "<error>"  # "" fails alone
            assert progress[-1] == (4, 4) and [p[0] for p in progress] == sorted(p[0] for p in progress)

            turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "How are you?"}]
            assert len(answers(await client.call_tool("multiturn_generate", {"messages": turns}))) == 1

            # bad arguments: one line each, and the server goes on serving
            bad = {**init, "backend_configs": {"hf": {**page["backend_configs"]["hf"], "batchsize": 4}}}
            assert "backend_configs.hf.batchsize" in error_line(await client.call_tool("generation_init", bad))
            assert (await client.call_tool("generate", {"prompt_ls": 5})).is_error
            assert len(answers(await client.call_tool("generate", {"prompt_ls": ["still here?"]}))) == 1

            assert not (await client.call_tool("vllm_shutdown", {})).is_error  # harmless on hf
            vision_init = {"backend_configs": {"hf": {"model_name_or_path": vision, "batch_size": 4}},
                           "sampling_params": {"temperature": 0, "max_tokens": 4}, "backend": "hf"}
            assert not (await client.call_tool("generation_init", vision_init)).is_error
            result = await client.call_tool("multimodal_generate", {
                "multimodal_path": [[RED], [RED, BLUE], ["missing.png"]],
                "prompt_ls": ["What colour? <img>", "<img> or <img>?", "And <img>?"], "image_tag": "<img>"})
            got = answers(result)
            assert all(isinstance(a, str) for a in got[:2]) and got[2] == "<error>"

    asyncio.run(session())


def test_a_cancelled_call_stops_its_batch_and_the_server_keeps_serving() -> None:
    async def session(url: str, server: FaultServer) -> None:
        async with Client(serve()) as client:
            init = {"backend_configs": {"openai": {"model_name": "fake", "base_url": url, "concurrency": 1}},
                    "sampling_params": {"max_tokens": 8}, "backend": "openai"}
            assert not (await client.call_tool("generation_init", init)).is_error
            async with anyio.create_task_group() as tasks:  # cancelled once the first request arrived
                tasks.start_soon(client.call_tool, "generate", {"prompt_ls": [f"ok {i}" for i in range(40)]})
                while not server.bodies:
                    await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
            await anyio.sleep(1.0)
            sent = len(server.bodies)
            assert 1 <= sent < 10  # 0.2 s each, one at a time: the rest were never asked
            assert answers(await client.call_tool("generate", {"prompt_ls": ["ok again"]})) == ["answer to ok again"]
            assert len(server.bodies) == sent + 1

    with FaultServer(work_s=0.2) as server:
        asyncio.run(session(server.url, server))


@pytest.mark.engine
def test_vllm_over_stdio_logs_to_stderr_and_shuts_down(tiny_model: str) -> None:
    configs = {"vllm": {"model_name_or_path": tiny_model, "gpu_memory_utilization": VLLM_CPU["gpu_memory_utilization"],
                        "dtype": VLLM_CPU["dtype"], "max_model_len": VLLM_CPU["max_model_len"],
                        "enforce_eager": True}}

    async def session() -> None:
        # Any byte vLLM (or its engine process) wrote to stdout would break the protocol here.
        async with Client(serve()) as client:
            init = {"backend_configs": configs, "sampling_params": {"temperature": 0, "max_tokens": 6},
                    "backend": "vllm"}
            assert not (await client.call_tool("generation_init", init)).is_error
            assert len(answers(await client.call_tool("generate", {"prompt_ls": ["a", "b", "c"]}))) == 3
            assert not (await client.call_tool("vllm_shutdown", {})).is_error
            assert "call generation_init" in error_line(await client.call_tool("generate", {"prompt_ls": ["a"]}))

    asyncio.run(session())


@pytest.mark.engine
def test_streamable_http_on_loopback_with_a_backend_from_overrides(tiny_model: str, tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "genrun.serve", "--http", str(port), "--no-token", "backend=hf",
                               f"backend.model_name_or_path={tiny_model}", "sampling.max_tokens=4"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(port, server, tmp_path / "serve.log")

        async def session() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert [t.name for t in (await client.list_tools()).tools] == list(TOOLS)
                got = answers(await client.call_tool("generate", {"prompt_ls": ["Hi", "There"]}))  # no init needed
                assert len(got) == 2 and all(isinstance(a, str) for a in got)

        asyncio.run(session())
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_bad_override_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "genrun.serve", "backend=tgi"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.startswith("genrun-serve: error: backend=tgi")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_without_the_mcp_sdk_it_says_which_extra_to_install() -> None:
    hidden = "import sys; sys.modules['mcp'] = None; from genrun.serve import main; main([])"
    result = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == "genrun-serve: error: it needs the MCP SDK: pip install 'genrun[serve]'\n"
