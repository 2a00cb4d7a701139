"""genrun-serve as UltraRAG runs it: the folder `genrun-serve --ultrarag` writes, started the way
UltraRAG's client starts a server (`python <folder>/src/<name>.py` over stdio, from a fastmcp
`Client({"mcpServers": ...})`), in an environment that holds UltraRAG's client: fastmcp 3.4 and
the MCP SDK 1.x it needs, beside genrun (UltraRAG itself is not on PyPI; its client is fastmcp's).
The model server is a real one on 127.0.0.1 that fails the rows it is told to."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import overlay_venv
from genrun.testing.fault_server import FaultServer
from test_api import PARAMETER_YAML

DEMO = Path(__file__).resolve().parents[1] / "src/genrun/data/demo_vqa"
RED, BLUE = str(DEMO / "red_square.png"), str(DEMO / "blue_circle.png")
ULTRARAG_CLIENT = ["fastmcp>=3.3.1,<3.4.5", "mcp>=1.24,<2"]  # UltraRAG 015e838's pyproject, and what fastmcp needs


@pytest.fixture(scope="module")
def ultrarag_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with UltraRAG's client (fastmcp 3.4, mcp 1.x) over this one's
    packages, genrun included: its own site-packages come first, so the MCP SDK is 1.x there."""
    python = overlay_venv(tmp_path_factory.mktemp("ultrarag-env"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *ULTRARAG_CLIENT],
                   check=True, stdout=subprocess.DEVNULL)
    versions = subprocess.run([str(python), "-c", "import importlib.metadata as m, genrun.serve.sdk as sdk; "
                               "print(m.version('mcp'), m.version('fastmcp'), sdk.MAJOR)"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert versions[0].startswith("1.") and versions[1].startswith("3.") and versions[2] == "1", versions
    return python


# What UltraRAG's client does, step by step (src/ultrarag/client.py): one fastmcp Client over the
# pipeline's servers, `build` with the parameter file, then the tools with the parameters and
# pipeline variables, each result read as json.loads(result.content[0].text).
DRIVER = r'''
import asyncio, json, os, sys
from fastmcp import Client

folder, steps = sys.argv[1], json.loads(sys.argv[2])
name = os.path.basename(folder)
config = {"mcpServers": {"generation": {"command": "python", "args": [f"{folder}/src/{name}.py"],
                                        "env": os.environ.copy()}}}

async def main():
    said = []
    async with Client(config) as client:
        said.append(sorted(t.name for t in await client.list_tools()))
        for tool, arguments in steps:
            result = await client.call_tool(tool, arguments)
            said.append(json.loads(result.content[0].text) if result.content else None)
    print(json.dumps(said))

asyncio.run(main())
'''


def test_an_ultrarag_folder_builds_and_answers_with_a_failed_row(ultrarag_python: Path, tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "genrun.serve", "--ultrarag", "servers/genrun"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "servers" / "genrun"
    parameters = yaml.safe_load((folder / "parameter.yaml").read_text())
    assert parameters == yaml.safe_load(PARAMETER_YAML.replace("TINY", "openbmb/MiniCPM4-8B")) | {"backend": "vllm"}

    with FaultServer(work_s=0) as model:
        # What an UltraRAG user edits in the pipeline's parameter file: the backend and its server.
        page = dict(parameters, backend="openai")
        page["backend_configs"]["openai"]["base_url"] = model.url
        init = {k: page[k] for k in ("backend_configs", "sampling_params", "extra_params", "backend")}
        boxed = [{"role": "user", "content": {"type": "text", "text": t}} for t in ("ok 1", "poison 2", "ok 3")]
        own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ok 4"}]
        steps = [
            ["build", {"parameter_file": "servers/genrun/parameter.yaml"}],
            ["generation_init", init],
            ["generate", {"prompt_ls": boxed, "system_prompt": ""}],
            ["multiturn_generate", {"messages": own_system, "system_prompt": "You answer questions."}],
            ["multiturn_generate", {"messages": [], "system_prompt": ""}],
            ["multimodal_generate", {"multimodal_path": [[RED]], "prompt_ls": ["ok 5", "ok 6"], "system_prompt": "",
                                     "image_tag": None}],
            ["multimodal_generate", {"multimodal_path": [[RED, BLUE]], "prompt_ls": ["ok <img> 7 <img>"],
                                     "system_prompt": "", "image_tag": "<img>"}],
            ["vllm_shutdown", {}],
        ]
        env = {**os.environ, "PATH": f"{ultrarag_python.parent}{os.pathsep}{os.environ['PATH']}"}  # its `python`
        ran = subprocess.run([str(ultrarag_python), "-c", DRIVER, "servers/genrun", json.dumps(steps)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=240, env=env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        tools, built, initialised, generated, conversation, nothing, padded, tagged, shut = json.loads(ran.stdout)
        bodies = {body["messages"][-1]["content"] if isinstance(body["messages"][-1]["content"], str)
                  else next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text"): body
                  for body in model.bodies}

    assert tools == sorted(["build", "generation_init", "generate", "multimodal_generate", "multiturn_generate",
                            "vllm_shutdown"])
    assert built is None and initialised is None and shut is None
    server_yaml = yaml.safe_load((folder / "server.yaml").read_text())
    assert list(server_yaml) == ["path", "parameter", "tools", "prompts"]
    assert server_yaml["path"] == str(Path("servers/genrun/src/genrun.py"))
    assert server_yaml["tools"]["generate"] == {"input": {"prompt_ls": "prompt_ls", "system_prompt": "$system_prompt"},
                                                "output": ["ans_ls"]}
    assert server_yaml["tools"]["generation_init"] == {"input": {k: f"${k}" for k in init}}
    assert server_yaml["tools"]["vllm_shutdown"] == {"input": {}}

    # the failed row is a string, its reason beside it: the pipeline's next step takes List[str]
    assert generated["ans_ls"] == ["answer to ok 1", "<error>", "answer to ok 3"]
    assert generated["errors"][0] is None and generated["errors"][2] is None and "prompt rejected" in generated["errors"][1]
    # the page's system prompt is added to the context, before the conversation's own
    assert conversation["ans_ls"] == ["answer to ok 4"]
    assert [m["role"] for m in bodies["ok 4"]["messages"]] == ["system", "system", "user"]
    assert bodies["ok 4"]["messages"][0]["content"] == "You answer questions."
    assert nothing == {"ans_ls": [], "errors": []}
    # without a tag the images come first, as UltraRAG's own server sends them; a missing entry pads
    assert padded["ans_ls"] == ["answer to ok 5", "answer to ok 6"]
    red = "data:image/png;base64," + base64.b64encode(Path(RED).read_bytes()).decode()
    assert bodies["ok 5"]["messages"][-1]["content"] == [{"type": "image_url", "image_url": {"url": red}},
                                                         {"type": "text", "text": "ok 5"}]
    assert bodies["ok 6"]["messages"][-1]["content"] == [{"type": "text", "text": "ok 6"}]
    assert tagged["errors"] == [None] and [p["type"] for p in bodies["ok "]["messages"][-1]["content"]] == [
        "text", "image_url", "text", "image_url"]
    # the server's log (its stderr, never the protocol) says why a row failed and what was padded
    assert "prompt 1 failed" in ran.stderr and "the prompts without an entry get no images" in ran.stderr


def test_the_folder_is_refused_where_ultrarag_replaces_it(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "genrun.serve", "--ultrarag", "servers/generation"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 2 and "Traceback" not in made.stderr
    assert made.stderr.startswith("genrun-serve: error: --ultrarag servers/generation: UltraRAG's demo mode and UI")
    assert not (tmp_path / "servers").exists()


def test_a_folder_for_http_is_refused(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "genrun.serve", "--ultrarag", "servers/genrun", "--http", "8765"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert made.returncode == 2 and "UltraRAG starts its servers over stdio" in made.stderr
    assert not (tmp_path / "servers").exists()


def test_a_key_on_the_command_line_is_not_written_into_the_folder(tmp_path: Path) -> None:
    secret = "sk-never-in-a-file-4242"
    made = subprocess.run([sys.executable, "-m", "genrun.serve", "--ultrarag", "servers/genrun", "backend=openai",
                           f"backend.api_key={secret}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    launcher = (tmp_path / "servers/genrun/src/genrun.py").read_text()
    assert secret not in launcher and "'--images-first', 'backend=openai'" in launcher


def test_the_build_tool_writes_only_server_yaml_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    from genrun.errors import UserError
    from genrun.serve.ultrarag import write_server_yaml

    with pytest.raises(UserError, match="not a .yaml file"):
        write_server_yaml(str(tmp_path / "passwd"))
    (tmp_path / "parameter.yaml").write_text("- a list\n")
    with pytest.raises(UserError, match="holds list, not a mapping"):
        write_server_yaml(str(tmp_path / "parameter.yaml"))
    (tmp_path / "parameter.yaml").write_text("system_prompt: ''\n")
    with pytest.raises(UserError, match="server code not found"):
        write_server_yaml(str(tmp_path / "parameter.yaml"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parameter.yaml"]


def test_a_client_may_send_an_operators_number_as_an_integer() -> None:
    from genrun.serve.policy import Operator

    operator = Operator("openai", {"model_name": "m", "base_url": "http://127.0.0.1:9/v1", "base_delay": 1.0}, {}, {})
    _, settings = operator.admit({"openai": {"model_name": "m", "base_delay": 1}}, "openai")
    assert settings["base_delay"] == 1.0


def test_http_on_the_sdk_1x_checks_the_token_and_the_host(ultrarag_python: Path, tmp_path: Path) -> None:
    from conftest import free_port, wait_until_listening
    from test_serve_http import TOKEN, raw

    port = free_port()
    with FaultServer(work_s=0) as model, open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([str(ultrarag_python), "-m", "genrun.serve", "--http", str(port), "backend=openai",
                                   f"backend.base_url={model.url}"], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "GENRUN_SERVE_TOKEN": TOKEN})
        try:
            wait_until_listening(port, server, tmp_path / "serve.log")
            url = f"http://127.0.0.1:{port}/mcp"
            assert raw(url, token=None).status_code == 401 and raw(url).status_code == 200
            assert raw(f"{url}?token={TOKEN}", token=None).status_code == 200
            assert raw(url, Host="evil.example").status_code in (400, 421)
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert TOKEN not in (tmp_path / "serve.log").read_text()
