"""`python -m genrun` for the tests, from an interpreter that has done its imports already.

Every CLI run in the suite is still a process of its own, with its own arguments, folder,
environment and output, run through genrun's __main__ and ended as Python ends (atexit handlers
and all). What it does not pay again is importing torch, transformers, datasets and Hydra:
8-12 s a run on two cores, which was a third of the suite's time. One helper process (this
file, run as a script) imports them once; for each run it forks a waiter, which forks the run
and reports its pid and exit code back over a Unix socket. The run's stdout and stderr are the
caller's own files, passed over that socket.

A run whose environment changes what Python imports (a PYTHON* variable) needs a fresh
interpreter: `wants_fresh_interpreter` says so, and conftest.run_cli starts one."""

from __future__ import annotations

import gc
import importlib
import json
import locale
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# What a genrun run imports that costs seconds. Not vllm, mlflow or wandb: a run that uses one
# imports it itself, after the fork, as a user's run does.
PRELOAD = ("genrun.cli", "genrun.engine.job", "genrun.backend.hf", "genrun.backend.openai", "openai", "datasets",
           "torch", "transformers.models.llama.modeling_llama", "transformers.generation.utils")


def wants_fresh_interpreter(env: dict[str, str], helper_env: dict[str, str]) -> bool:
    """True when `env` sets a PYTHON* variable differently from the environment the helper started in."""
    names = {k for k in (*env, *helper_env) if k.startswith("PYTHON")}
    return any(env.get(k) != helper_env.get(k) for k in names)


def text(data: bytes) -> str:
    """Bytes as subprocess.run(text=True) gives them: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def recv_line(conn: socket.socket) -> bytes:
    """One line, read a byte at a time: the pid and the exit code can arrive together, and each
    read must leave the next line on the socket."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("the forked run's waiter closed the connection")
        line += byte
    return line


class ForkServer:
    """The test side: starts the helper once, then runs `python -m genrun ARGS` through it."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="genrun-forks-")
        self.address = os.path.join(self.folder, "socket")
        self.log = os.path.join(self.folder, "helper.log")
        self.env = dict(os.environ)  # what the helper's imports saw
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, __file__, self.address], cwd=self.folder,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while not os.path.exists(self.address + ".ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the CLI fork helper did not start: {open(self.log).read()[-3000:]}")
            time.sleep(0.05)

    def run(self, args: list[str], cwd: str | None, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "genrun", *args]
        request = json.dumps({"args": args, "cwd": str(cwd or os.getcwd()), "env": env}).encode() + b"\n"
        if self.process.poll() is not None:
            raise RuntimeError(f"the CLI fork helper has ended: {open(self.log).read()[-3000:]}")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.address)
            socket.send_fds(conn, [request], [out.fileno(), err.fileno()])
            pid = int(recv_line(conn))
            conn.settimeout(timeout)
            try:
                code = int(recv_line(conn))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run does on its timeout
                conn.settimeout(60)
                recv_line(conn)
                out.seek(0)
                err.seek(0)
                raise subprocess.TimeoutExpired(command, timeout, output=out.read(), stderr=err.read()) from None
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, code, text(out.read()), text(err.read()))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))
        os.rmdir(self.folder)


# --- the helper process -----------------------------------------------------------------

def serve(address: str) -> dict:
    """Import, then fork a waiter per connection. Returns only in a forked run, with its request."""
    sys.path[0] = os.getcwd()  # as the script's folder (tests/) would not be on a user's path
    for name in PRELOAD:
        importlib.import_module(name)
    # The imported objects are shared with every fork until written to: kept out of the garbage
    # collector's passes, which would otherwise copy them into each run (CPython's gc.freeze docs).
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped as they end
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    sys.stdout.flush()  # nothing of the helper's own may reach a run's output
    sys.stderr.flush()
    open(address + ".ready", "w").close()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            return wait_for_run(conn)
        conn.close()


def wait_for_run(conn: socket.socket) -> dict:
    """A waiter: fork the run (which returns its request), report its pid and exit code, end."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
    while not message.endswith(b"\n"):
        message += conn.recv(1 << 16)
    pid = os.fork()
    if pid == 0:
        conn.close()
        stdin = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((stdin, 0), (fds[0], 1), (fds[1], 2)):
            os.dup2(fd, target)
            os.close(fd)
        return json.loads(message)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def run_genrun(request: dict) -> None:
    """`python -m genrun ARGS` in this (forked) process, ended as that command ends."""
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # what `python -m` puts first
    sys.argv = ["-m", *request["args"]]
    try:
        runpy.run_module("genrun", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exit_code(exc.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        end_interpreter(None)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as Python ends on an uncaught Ctrl-C
        return
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    end_interpreter(code)


def exit_code(code: object) -> int:
    """sys.exit's argument as the interpreter turns it into a status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def end_interpreter(code: int | None) -> None:
    """What Python does on exit, in its order: wait for non-daemon threads, run atexit handlers,
    flush stdout and stderr. Then the process ends without the interpreter's final collection:
    the objects imported before the fork are frozen (see serve) and their modules' teardown is
    the helper's, not the run's (a fresh process's would only free them)."""
    import atexit
    import threading

    threading._shutdown()  # noqa: SLF001 - the call Py_Finalize makes first
    atexit._run_exitfuncs()  # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code is not None:
        os._exit(code)


if __name__ == "__main__":
    run_genrun(serve(sys.argv[1]))
