"""The small genrun-* commands (genrun-score, -cache, -check, -compare, -merge, -summary), one
module each, and how every one of them ends: a user's mistake is one line on stderr and exit
2; Ctrl-C or SIGTERM is one line and exit 130 or 143, after the command's own clean-up (a file
being written under a temporary name is removed, never left under its final name).

May use: everything below the faces (engine, reports, rundir, scoring, prompt, dataset,
settings, backend, assets); never genrun.cli, genrun.api or genrun.serve.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, NoReturn

from genrun.errors import Terminated, UserError, interrupted_code, raise_terminated


def run_command(prog: str, body: Callable[[], int | None]) -> None:
    """Run a command's body; a non-zero return value is the exit code."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        code = body()
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(prog, str(exc))
    except KeyboardInterrupt as exc:
        print(f"{prog}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; nothing was left "
              "half-written (run it again to finish)", file=sys.stderr)
        sys.exit(interrupted_code(exc))
    if code:
        sys.exit(code)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)
