"""genrun-serve over HTTP, tried as an attacker would: a real server process on 127.0.0.1, the
SDK's own client (and raw HTTP for the header checks), the operator's key in its environment.
No key reaches a server a client chose, no client-named code runs, no file outside
--image-root leaves, one session never moves another's prompts, and every request needs the
token; secrets given on genrun's command line land in no file of a run or sweep."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import free_port, run_cli, wait_until_listening, write_jsonl
from genrun.testing.fault_server import FaultServer

DEMO = Path(__file__).resolve().parents[1] / "src/genrun/data/demo_vqa"
OPERATOR_KEY = "sk-operator-SECRET-31337"
TOKEN = "serve-token-for-the-tests-0123456789"


@contextlib.contextmanager
def served(tmp_path: Path, *args: str, http: str | None = None, port: int | None = None,
           env: dict | None = None) -> Iterator[str]:
    """genrun-serve --http in its own process, the operator's key and the token in its
    environment; yields its URL once it accepts connections, and checks its log after."""
    port = port or free_port()
    log_path = tmp_path / f"serve-{port}.log"
    environment = {**os.environ, "OPENAI_API_KEY": OPERATOR_KEY, "GENRUN_SERVE_TOKEN": TOKEN, **(env or {})}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "genrun.serve", "--http", http or str(port), *args],
                                  stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            wait_until_listening(port, server, log_path)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.terminate()
            server.wait(timeout=30)
    said = log_path.read_text()
    assert OPERATOR_KEY not in said and TOKEN not in said


def client(url: str, token: str = TOKEN) -> Client:
    """The SDK's client with the bearer token, as a real MCP client sends it."""
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(
        headers={"Authorization": f"Bearer {token}"})))


def answers(result: Any) -> list[str | None]:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)["ans_ls"]


def refusal(result: Any) -> str:
    assert result.is_error and len(result.content) == 1
    text = result.content[0].text
    assert "\n" not in text and "Traceback" not in text
    return text


def openai_init(url: str, **more: Any) -> dict:
    return {"backend": "openai", "backend_configs": {"openai": {"model_name": "fake", "base_url": url, **more}},
            "sampling_params": {"max_tokens": 8}}


def test_the_operators_key_never_reaches_a_server_a_client_names(tmp_path: Path) -> None:
    with FaultServer(work_s=0) as operators, FaultServer(work_s=0) as attackers:
        async def attack(url: str) -> None:
            async with client(url) as session:
                refused = refusal(await session.call_tool("generation_init", openai_init(attackers.url)))
                assert "backend_configs.openai.base_url cannot be set by a client" in refused
                refused = refusal(await session.call_tool("generation_init", openai_init(
                    operators.url, api_key="sk-guess")))
                assert "backend_configs.openai.api_key cannot be set" in refused and "sk-guess" not in refused
                # the operator's own server, with sampling of the client's: allowed
                assert not (await session.call_tool("generation_init", openai_init(operators.url))).is_error
                assert answers(await session.call_tool("generate", {"prompt_ls": ["ok 1"]})) == ["answer to ok 1"]

        for start in ([], [f"backend.api_key={OPERATOR_KEY}"]):  # the key from the environment, or given at start
            environment = {} if start == [] else {"OPENAI_API_KEY": ""}
            with served(tmp_path, "backend=openai", f"backend.base_url={operators.url}", "backend.model_name=fake",
                        *start, env=environment) as url:
                asyncio.run(attack(url))
        assert attackers.bodies == [] and operators.auth_headers == {f"Bearer {OPERATOR_KEY}"}

        async def allowed_elsewhere(url: str) -> None:  # the operator allows the other server: no key goes there
            async with client(url) as session:
                assert not (await session.call_tool("generation_init", openai_init(attackers.url))).is_error
                assert answers(await session.call_tool("generate", {"prompt_ls": ["ok 2"]})) == ["answer to ok 2"]

        with served(tmp_path, "--allow-base-url", attackers.url, "backend=openai", f"backend.base_url={operators.url}",
                    "backend.model_name=fake") as url:
            asyncio.run(allowed_elsewhere(url))
    assert len(attackers.bodies) == 1 and attackers.auth_headers == {"Bearer EMPTY"}


def model_with_remote_code(tiny_model: str, folder: Path, marker: Path) -> Path:
    """The tiny model, with a config whose auto_map points at a .py file beside it that would
    write `marker` if it ever ran."""
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    pass\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    return folder


@pytest.mark.engine
def test_no_code_a_client_names_runs_in_the_server(tmp_path: Path, tiny_model: str) -> None:
    marker = tmp_path / "pwned"
    evil = model_with_remote_code(tiny_model, tmp_path / "evil-model", marker)
    hf = {"backend": "hf", "sampling_params": {"max_tokens": 4},
          "backend_configs": {"hf": {"model_name_or_path": str(evil), "trust_remote_code": True}}}

    async def attack(url: str, allowed: bool) -> None:
        async with client(url) as session:
            result = await session.call_tool("generation_init", hf)
            if not allowed:
                assert "is not a model this server's operator allows" in refusal(result)
                plain = {**hf, "backend_configs": {"hf": {"model_name_or_path": str(evil)}}}
                assert "is not a model this server's operator allows" in refusal(
                    await session.call_tool("generation_init", plain))
                return
            assert "trust_remote_code cannot be set" in refusal(result)
            plain = {**hf, "backend_configs": {"hf": {"model_name_or_path": str(evil)}}}
            result = await session.call_tool("generation_init", plain)  # allowed: loaded without its code
            if not result.is_error:
                assert len(answers(await session.call_tool("generate", {"prompt_ls": ["Hi"]}))) == 1

    with FaultServer(work_s=0) as operators:
        common = ["backend=openai", f"backend.base_url={operators.url}", "backend.model_name=fake"]
        with served(tmp_path, *common) as url:
            asyncio.run(attack(url, allowed=False))
        with served(tmp_path, "--allow-model", str(evil), *common) as url:
            asyncio.run(attack(url, allowed=True))
    assert not marker.exists()


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_no_file_outside_the_image_root_leaves_the_server(tmp_path: Path) -> None:
    root, outside = tmp_path / "images", tmp_path / "private"
    root.mkdir(), outside.mkdir()
    shutil.copy(DEMO / "red_square.png", root / "red.png")
    secret_image = outside / "secret.png"
    secret_image.write_bytes((DEMO / "blue_circle.png").read_bytes() + b"TRAILING-SECRET-BYTES")
    (root / "link.png").symlink_to(secret_image)
    home = Path.home() / f".genrun-test-{os.getpid()}.png"
    shutil.copy(secret_image, home)
    try:
        paths = [[str(secret_image)], ["../private/secret.png"], ["link.png"], [f"~/{home.name}"],
                 ["http://127.0.0.1:9/x.png"], ["red.png"], [data_url(DEMO / "green_triangle.png")]]
        with FaultServer(work_s=0) as operators:
            async def attack(url: str) -> list[str | None]:
                async with client(url) as session:
                    result = await session.call_tool("multimodal_generate", {
                        "multimodal_path": paths, "prompt_ls": [f"ok {i} <img>" for i in range(len(paths))],
                        "image_tag": "<img>"})
                    return answers(result)

            with served(tmp_path, "--image-root", str(root), "backend=openai", f"backend.base_url={operators.url}",
                        "backend.model_name=fake") as url:
                got = asyncio.run(attack(url))
        assert got[:5] == ["<error>"] * 5 and got[5] == "answer to ok 5 " and got[6] == "answer to ok 6 "
        sent = json.dumps(operators.bodies)
        assert len(operators.bodies) == 2 and "TRAILING-SECRET-BYTES" not in sent
        leaked = base64.b64encode((DEMO / "blue_circle.png").read_bytes()).decode()[:200]
        assert leaked not in sent  # not even the image part of the private file
    finally:
        home.unlink(missing_ok=True)


def test_one_sessions_init_never_moves_another_sessions_prompts(tmp_path: Path) -> None:
    with FaultServer(work_s=0) as operators, FaultServer(work_s=0) as others:
        async def two_clients(url: str) -> None:
            async with client(url) as a, client(url) as b:
                assert answers(await a.call_tool("generate", {"prompt_ls": ["ok a1"]})) == ["answer to ok a1"]
                init = openai_init(others.url)
                init["sampling_params"] = {"max_tokens": 5, "temperature": 0.1}
                assert not (await b.call_tool("generation_init", init)).is_error
                assert answers(await b.call_tool("generate", {"prompt_ls": ["ok b1"]})) == ["answer to ok b1"]
                assert answers(await a.call_tool("generate", {"prompt_ls": ["ok a2"]})) == ["answer to ok a2"]
                init = openai_init(operators.url)
                init["sampling_params"] = {"max_tokens": 7, "temperature": 0.9}
                assert not (await a.call_tool("generation_init", init)).is_error
                assert answers(await a.call_tool("generate", {"prompt_ls": ["ok a3"]})) == ["answer to ok a3"]
                assert answers(await b.call_tool("generate", {"prompt_ls": ["ok b2"]})) == ["answer to ok b2"]

        with served(tmp_path, "--allow-base-url", others.url, "backend=openai", f"backend.base_url={operators.url}",
                    "backend.model_name=fake", "sampling.max_tokens=16", "sampling.temperature=0") as url:
            asyncio.run(two_clients(url))
    mine = {b["messages"][-1]["content"]: b for b in operators.bodies}
    theirs = {b["messages"][-1]["content"]: b for b in others.bodies}
    assert set(mine) == {"ok a1", "ok a2", "ok a3"} and set(theirs) == {"ok b1", "ok b2"}
    assert mine["ok a1"]["max_tokens"] == mine["ok a2"]["max_tokens"] == 16  # the operator's, untouched by b
    assert mine["ok a3"]["max_tokens"] == 7 and theirs["ok b2"]["max_tokens"] == 5  # a's init did not reach b
    assert operators.auth_headers == {f"Bearer {OPERATOR_KEY}"} and others.auth_headers == {"Bearer EMPTY"}


@pytest.mark.engine
def test_sessions_that_ask_for_the_same_model_share_one_engine(tmp_path: Path, tiny_model: str) -> None:
    from genrun.backend.hf import HFBackend
    from genrun.serve.policy import Operator
    from genrun.serve.sessions import Http

    operator = Operator("hf", {"model_name_or_path": tiny_model, "batch_size": 2}, {"max_tokens": 4}, {})
    gate = Http(operator)
    gate.start()

    class Ctx:  # the SDK's Context as a tool call over HTTP has it: its request's headers
        def __init__(self, sid: str) -> None:
            self.request_context = SimpleNamespace(request=SimpleNamespace(headers={"mcp-session-id": sid}))

    async def sessions() -> None:
        one, two = Ctx("one"), Ctx("two")
        await gate.init(two, {"hf": {}}, {"max_tokens": 2, "temperature": 0}, None, "hf")
        async with gate.session(one) as a:  # one call at a time on the engine: one session, then the other
            first = a.backend
            assert (await a.generate(["Hi"])).errors == [None]
        async with gate.session(two) as b:
            second = b.backend
        assert first.model is second.model  # the weights once in memory, each session its own sampling
        assert first.generate_kwargs["max_new_tokens"] == 4 and second.generate_kwargs["max_new_tokens"] == 2

    asyncio.run(sessions())
    engines = list(gate.engines.built.values())
    assert len(engines) == 1 and isinstance(engines[0].backend, HFBackend) and engines[0].users == 2
    gate.close()
    assert engines[0].backend.model is None


def raw(url: str, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    """A raw initialize request, as a browser page or a script would send it."""
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    return httpx.post(url, json=body, headers={k.replace("_", "-"): v for k, v in sent.items()}, timeout=10)


@pytest.mark.parametrize("bind", ["loopback", "all interfaces"])
def test_every_request_needs_the_token_and_a_known_host(tmp_path: Path, bind: str) -> None:
    with FaultServer(work_s=0) as operators:
        port = free_port()
        http = str(port) if bind == "loopback" else f"0.0.0.0:{port}"
        args = ["--allowed-host", "genrun.example", "backend=openai", f"backend.base_url={operators.url}"]
        with served(tmp_path, *args, http=http, port=port) as served_url:
            assert raw(served_url, token=None).status_code == 401
            assert raw(served_url, token="wrong-token").status_code == 401
            assert raw(served_url, Host="evil.example").status_code == 421
            assert raw(served_url, Host=f"evil.example:{port}").status_code == 421
            assert raw(served_url, Origin="http://evil.example").status_code == 403
            assert raw(served_url, Host=f"genrun.example:{port}").status_code == 200
            assert raw(served_url).status_code == 200

            async def listed() -> list[str]:
                async with client(served_url) as session:
                    return [t.name for t in (await session.list_tools()).tools]

            assert "generation_init" in asyncio.run(listed())
        said = "\n".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
        assert "genrun.example" in said and ("other machines can reach this port" in said) == (bind != "loopback")


def test_a_token_made_at_start_is_printed_once_and_required(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GENRUN_SERVE_TOKEN"}
    with FaultServer(work_s=0) as operators:
        server = subprocess.Popen([sys.executable, "-m", "genrun.serve", "--http", str(port), "backend=openai",
                                   f"backend.base_url={operators.url}"], stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = server.stderr.readline()
            while "Authorization: Bearer" not in line:
                assert line, "no token line"
                line = server.stderr.readline()
            token = line.rsplit("Bearer ", 1)[1].strip()
            assert len(token) >= 32
            wait_until_listening(port, server)
            url = f"http://127.0.0.1:{port}/mcp"
            assert raw(url, token=None).status_code == 401 and raw(url, token=token).status_code == 200
            # a client that can pass only a URL (UltraRAG's MCP config) gives it there; nothing logs it
            assert raw(f"{url}?token={token}", token=None).status_code == 200
            assert raw(f"{url}?token=wrong", token=None).status_code == 401
        finally:
            server.terminate()
            _, said = server.communicate(timeout=30)
        assert token not in said


@pytest.mark.parametrize("args, message", [
    (["--http", "80000"], "--http 80000: give a port from 1 to 65535"),
    (["--http", "[::1]"], "--http [::1]: give a port"),
    (["--http", "host:"], "--http host:: give a port"),
    (["--http", "0.0.0.0:8799", "--no-token"], "--no-token: serving on 0.0.0.0, reachable from other machines"),
    (["--image-root", "/no/such/folder", "--http", "8798"], "--image-root /no/such/folder: no such folder"),
])
def test_a_bad_http_setting_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "genrun.serve", *args, "backend=openai"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("genrun-serve: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr


def test_http_addresses() -> None:
    from genrun.serve.streamable import http_address

    assert http_address("8765") == ("127.0.0.1", 8765)
    assert http_address("0.0.0.0:1") == ("0.0.0.0", 1)
    assert http_address("[::1]:8765") == ("::1", 8765)


def grep(folder: Path, *secrets: str) -> list[str]:
    """Every file under folder (hidden ones and .hydra/ included) that holds one of secrets."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_keys_and_url_credentials_given_on_the_command_line_land_in_no_file(tmp_path: Path) -> None:
    judge_key, url_key = "sk-judge-SECRET-2718", "url-SECRET-1618"
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "answer": "x"} for i in range(3)])
    with FaultServer(work_s=0) as server, FaultServer(work_s=0, reply="correct") as judge:
        host_port = server.url.split("//", 1)[1]
        args = ["backend=openai", f"backend.base_url=http://user:{url_key}@{host_port}", "backend.model_name=fake",
                "dataset=default", f"dataset.path={data}", "dataset.fields.reference=answer", "judge=openai",
                f"judge.backend.base_url={judge.url}", "judge.backend.model_name=judge",
                f"judge.backend.api_key={judge_key}", "sampling.max_tokens=32"]
        single = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
        sweep = run_cli("-m", *args, "sampling.temperature=0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert single.returncode == 0, single.stderr[-2000:]
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert judge.auth_headers == {f"Bearer {judge_key}"}  # the judge got its key...
    assert len(server.bodies) == 9  # ...and the URL with credentials reached its server
    for output in (single.stdout + single.stderr, sweep.stdout + sweep.stderr):
        assert judge_key not in output and url_key not in output
    assert grep(tmp_path / "run", judge_key, url_key) == [] and grep(tmp_path / "sweep", judge_key, url_key) == []
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "sampling.max_tokens=32" in run_json["command"]  # a setting, not a secret: kept as given
    assert run_json["model"]["base_url"] == f"http://***@{host_port}"
    assert (tmp_path / "sweep" / "summary.md").is_file()
