"""Secrets given on the command line: API keys, auth tokens, and credentials inside URLs.

A secret never reaches Hydra, so it is in no `.hydra/` file, `multirun.yaml`, sweep folder
name, summary, run.json or log. `hide(args)` takes each override whose key names a secret
(`backend.api_key=...`, `judge.backend.api_key=...`) out of the command line and keeps its
value in the environment variable `GENRUN_SECRET__<KEY>` (dots as `__`); an override whose
value is a URL with credentials (`http://user:key@host/v1`) stays, redacted
(`http://***@host/v1`), and the real URL travels the same way. Whoever builds the component
at that config path (the backend factory) hands it `for_component(path)`.

Secrets are recognised by what they are (an API key, an auth token, a password, URL
credentials), not by a substring of a name: `sampling.max_tokens` is no secret.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable

PREFIX = "GENRUN_SECRET__"
# The last part of a key that names a secret.
SECRET_NAMES = re.compile(
    r"^(?:\w*_)?(?:api_key|apikey|secret|password|passwd)$|^(?:auth_|access_|api_|bearer_|hf_|refresh_)?token$",
    re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@", re.IGNORECASE)
OVERRIDE = re.compile(r"^(?P<prefix>[+~]*)(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)$", re.DOTALL)
# Environment variables that hold keys genrun's backends read; their values are redacted from logs too.
KEY_VARIABLES = ("OPENAI_API_KEY", "GENRUN_SERVE_TOKEN")
REDACTED = "***"


def is_secret_key(key: str) -> bool:
    """Whether a config key (dotted) names a secret: its last part is an API key, token, ..."""
    return bool(SECRET_NAMES.match(key.rsplit(".", 1)[-1]))


def redact_url(text: str) -> str:
    """Credentials inside URLs replaced: http://user:key@host -> http://***@host."""
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def has_url_credentials(text: str) -> bool:
    return bool(URL_CREDENTIALS.search(text))


def variable(key: str) -> str:
    """The environment variable that carries the secret of a config key."""
    return PREFIX + key.upper().replace(".", "__")


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def hide(args: Iterable[str], components: Iterable[str] = ("backend", "judge.backend")) -> list[str]:
    """The command line without its secrets, which move into the environment (see the module
    docstring). A secret for a config path that takes none is a mistake, named in one line."""
    from genrun.errors import UserError

    components = tuple(components)
    kept = []
    for arg in args:
        match = OVERRIDE.match(arg)
        if match is None or match["prefix"].startswith("~") or match["key"].startswith("hydra."):
            kept.append(arg)
            continue
        key, value = match["key"], unquote(match["value"])
        path = key.rpartition(".")[0]
        secret_name, secret_url = is_secret_key(key), has_url_credentials(value)
        if not (secret_name or secret_url):
            kept.append(arg)
            continue
        if path not in components:
            raise UserError(f"{key}: genrun takes secrets only for {', '.join(components)} (the value was not "
                            "saved anywhere); put it in the environment variable the tool reads instead")
        os.environ[variable(key)] = value
        if not secret_name:  # the URL stays in the config, without its credentials
            kept.append(f"{match['prefix']}{key}='{redact_url(value)}'")
    return kept


def for_component(path: str) -> dict[str, Any]:
    """The secrets given on the command line for the component at config path `path`, as its
    keyword arguments (e.g. {"api_key": ...} for "judge.backend")."""
    head = variable(path) + "__"
    found = {}
    for name, value in os.environ.items():
        if name.startswith(head) and "__" not in name[len(head):]:
            found[name[len(head):].lower()] = value
    return found


def known_values() -> list[str]:
    """Secret values this process knows of, longest first (so a key inside another is caught)."""
    values = {v for k, v in os.environ.items() if (k.startswith(PREFIX) or k in KEY_VARIABLES) and len(v) >= 4}
    values |= {m["userinfo"] for v in list(values) for m in URL_CREDENTIALS.finditer(v)}
    return sorted(values, key=len, reverse=True)


def redact(text: str, values: Iterable[str] | None = None) -> str:
    """Text with every known secret value and URL credentials replaced by ***."""
    for value in known_values() if values is None else values:
        if value in text:
            text = text.replace(value, REDACTED)
    return redact_url(text)


class RedactingFilter(logging.Filter):
    """A log handler's filter: no secret reaches a log line (genrun.log, the console)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def guard_logs() -> None:
    """Put the redacting filter on every handler of the root logger (Hydra's console and file)."""
    guard = RedactingFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(guard)
