"""Running a model's program in a sandbox: its own process and temporary folder, a clean
environment, rlimits on CPU time, memory, processes, open files and file size, a wall-clock
timeout, and, with bubblewrap (`isolation=bwrap`, Debian's `bubblewrap`), its own network
namespace with no interface but a downed loopback, its own PID namespace (killed whole on
timeout), a read-only view of the system with home folders and /tmp replaced by empty ones,
and write access to its folder only. Run as root, the program runs as `nobody`, so the
process limit counts its processes alone.

`isolation=rlimits` (no bubblewrap) keeps the folder, the environment and the limits (the
process limit binds no root), but the program can reach the network and read and write what
the user can: for trusted code only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from genrun.errors import UserError

NOBODY = 65534
OUTPUT_KEPT = 2000  # characters of the program's output kept in the record


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    processes: int = 32
    file_mb: int = 16
    open_files: int = 64


def isolation_of(asked: str) -> str:
    """auto: bwrap where it is installed, else an error naming the fix (rlimits only on request)."""
    if asked not in ("auto", "bwrap", "rlimits"):
        raise UserError(f"scoring.sandbox={asked!r}: choose auto, bwrap or rlimits")
    if asked == "rlimits":
        return asked
    tools = ["bwrap", "prlimit", *(["setpriv"] if os.geteuid() == 0 else [])]  # setpriv: root runs it as nobody
    if any(shutil.which(tool) is None for tool in tools):
        raise UserError("scoring.metrics=[code_pass] runs the model's code in bubblewrap, which is not installed: "
                        "apt-get install bubblewrap (or scoring.sandbox=rlimits for trusted code: no network "
                        "or file isolation)")
    return "bwrap"


def limit_args(limits: Limits) -> list[str]:
    mb = 1 << 20
    return ["prlimit", f"--as={limits.memory_mb * mb}", f"--cpu={limits.cpu_s}", f"--fsize={limits.file_mb * mb}",
            f"--nproc={limits.processes}", f"--nofile={limits.open_files}", "--core=0", "--"]


def bwrap_command(folder: Path, program: Path, limits: Limits) -> list[str]:
    prefix = Path(sys.base_prefix).resolve()
    command = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--tmpfs", "/tmp", "--tmpfs", "/home", "--tmpfs", "/root", "--tmpfs", "/run",
               "--ro-bind", str(prefix), str(prefix), "--bind", str(folder), str(folder), "--chdir", str(folder),
               "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", str(folder),
               "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--", *limit_args(limits)]
    if os.geteuid() == 0:
        command += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs", "--"]
    return [*command, str(prefix / "bin" / Path(sys.executable).name), "-I", str(program)]


def _rlimits(limits: Limits) -> None:  # runs in the child, before exec
    import resource

    mb = 1 << 20
    for name, value in ((resource.RLIMIT_AS, limits.memory_mb * mb), (resource.RLIMIT_CPU, limits.cpu_s),
                        (resource.RLIMIT_FSIZE, limits.file_mb * mb), (resource.RLIMIT_NPROC, limits.processes),
                        (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))  # (the process limit does not bind root)


def run(program: str, limits: Limits, isolation: str) -> dict[str, Any]:
    """Run one program; `passed` when it exits 0 within the limits (as HumanEval's grader
    decides), with a status line and the end of its output."""
    folder = Path(tempfile.mkdtemp(prefix="genrun-code-"))
    try:
        script = folder / "program.py"
        script.write_text(program, encoding="utf-8", errors="surrogateescape")
        output = folder / "output.txt"
        if os.geteuid() == 0:
            for path in (folder, script):
                os.chown(path, NOBODY, NOBODY)
        with open(output, "wb") as sink:
            if os.geteuid() == 0:
                os.chown(output, NOBODY, NOBODY)
            if isolation == "bwrap":
                process = subprocess.Popen(bwrap_command(folder, script, limits), stdin=subprocess.DEVNULL,
                                           stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
            else:
                process = subprocess.Popen([sys.executable, "-I", str(script)], cwd=folder, stdin=subprocess.DEVNULL,
                                           stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                           env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
                                           preexec_fn=lambda: _rlimits(limits))  # noqa: PLW1509
            try:
                code = process.wait(limits.wall_s)
                status = exit_status(code, isolation)
            except subprocess.TimeoutExpired:
                kill(process)
                code, status = None, f"timed out after {limits.wall_s:g}s"
        said = output.read_bytes()[-OUTPUT_KEPT * 4:].decode("utf-8", errors="replace")[-OUTPUT_KEPT:]
        return {"passed": code == 0, "status": status, "output": said}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def exit_status(code: int, isolation: str) -> str:
    if code == 0:
        return "passed"
    signalled = -code if code < 0 else code - 128 if isolation == "bwrap" and code > 128 else 0  # bwrap: 128 + N
    if signalled in signal.valid_signals():
        reason = {signal.SIGKILL: " (the CPU or memory limit, or killed)", signal.SIGXCPU: " (the CPU time limit)",
                  signal.SIGXFSZ: " (the file size limit)"}.get(signal.Signals(signalled), "")
        return f"killed by {signal.Signals(signalled).name}{reason}"
    return f"failed (exit {code})"


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # bwrap's own group; its PID namespace goes with it
    except ProcessLookupError:
        pass
    process.wait()
