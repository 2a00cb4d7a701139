"""One writer per run directory: an OS file lock held for the life of the run.

flock belongs to the open file, so the kernel releases it when the process ends in any way
(kill -9 included): a lock is never stale. The file's text says who holds it, for the
message a second process prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genrun.errors import UserError, cannot_write

LOCK_NAME = ".genrun.lock"


class RunDirInUse(UserError):
    """Another process holds the run directory: this one must not write anything there."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class RunLock:
    """quiet: only look whether anyone holds it (the lock file keeps its holder's name)."""

    def __init__(self, run_dir: Path, quiet: bool = False) -> None:
        self.path = run_dir / LOCK_NAME
        self.quiet = quiet
        self._file: Any = None  # the open lock file while held

    def __enter__(self) -> RunLock:
        try:
            if not self.quiet:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "r" if self.quiet else "a+", encoding="utf-8")
        except OSError as exc:  # a read-only or full disk, a file where the folder should be
            raise cannot_write(self.path.parent, exc, "choose another hydra.run.dir") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirInUse(
                f"{self.path.parent} is in use by {holder}: wait for it to finish (or stop it), "
                "or give this run another hydra.run.dir", holder) from None
        self._file = handle
        if self.quiet:
            return self
        handle.seek(0)
        handle.truncate()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(f"genrun process {os.getpid()} on {socket.gethostname()} (since {started})\n")
        handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None
