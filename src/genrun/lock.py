"""One writer per run directory: an OS file lock held for the life of the run.

flock belongs to the open file, so the kernel releases it when the process ends in any way
(kill -9 included): a lock is never stale. The file's text says who holds it, for the
message a second process prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from genrun.errors import UserError, cannot_write

LOCK_NAME = ".genrun.lock"


class RunDirInUse(UserError):
    """Another process holds the run directory: this one must not write anything there."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._file = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
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
                "or give this run another hydra.run.dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.write(f"genrun process {os.getpid()} on {socket.gethostname()} (since {started})\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None
