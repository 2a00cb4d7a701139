"""Errors genrun reports to the user as one line, without a traceback."""


class UserError(Exception):
    """A mistake in the config, the data or the environment that the user can fix.

    The message names the problem and the fix (the key, the file); the CLI prints it as one
    line and exits non-zero. HYDRA_FULL_ERROR=1 shows the traceback instead.
    """


class FatalBackendError(UserError):
    """The backend cannot answer any row (e.g. the server rejects the API key): stop the run."""


class RowError(ValueError):
    """One row cannot be sent (empty prompt, malformed turns): that row gets an error record."""


def cannot_write(path: object, exc: OSError, fix: str) -> UserError:
    """The one line for a write the disk refused (full, read-only, a file in the way)."""
    return UserError(f"cannot write {path}: {exc.strerror} (errno {exc.errno}); {fix}")


def one_line(text: object, limit: int = 500) -> str:
    """A message as one line of at most `limit` characters (an engine's errors span many)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's cancel, `kill`): ends a command as Ctrl-C does, with exit code 143."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def interrupted_code(exc: KeyboardInterrupt) -> int:
    return 143 if isinstance(exc, Terminated) else 130
