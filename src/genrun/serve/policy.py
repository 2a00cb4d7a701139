"""What an HTTP client of genrun-serve may ask for: the operator's configuration (the backend
and settings the server was started with) is the ceiling; a client may set sampling, extra
and its system prompt, and the models and base URLs the operator allows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict

from genrun import credentials
from genrun.api import Conventions
from genrun.errors import UserError
from genrun.prompt.images import ImagePolicy

MODEL_KEYS = ("model_name_or_path", "model_name")


@dataclasses.dataclass
class Operator:
    """The operator's configuration, the ceiling for HTTP clients: the backend the server was
    started with (its overrides), the models and base URLs allowed besides, and the images."""

    backend: str
    settings: dict[str, Any]  # the backend's settings, its key (from the environment) included
    sampling: dict[str, Any]
    extra: dict[str, Any]
    models: frozenset[str] = frozenset()  # --allow-model
    base_urls: frozenset[str] = frozenset()  # --allow-base-url
    images: ImagePolicy = ImagePolicy(restricted=True, urls=False)
    conventions: Conventions = Conventions()  # where the page is silent (--failed-answer, --images-first)

    def __post_init__(self) -> None:
        from genrun.backend import backend_class, checked_settings

        # every setting spelled out, as a client's are once checked: equal settings, one engine
        self.settings = checked_settings(backend_class(self.backend), self.settings, "backend")

    def admit(self, backend_configs: Dict[str, Any], backend: str) -> tuple[type, dict[str, Any]]:
        """The backend and settings a client's generation_init gets, or a UserError of one line
        naming the first setting it may not choose. Settings it leaves out are the operator's."""
        from genrun.backend import backend_class, checked_settings

        cls = backend_class(backend)
        asked = dict(backend_configs.get(backend) or {}) if backend in backend_configs else dict(backend_configs)
        ours = backend == self.backend
        base = dict(self.settings) if ours else {}
        where = f"backend_configs.{backend}"
        for key in sorted(asked):
            value = asked[key]
            if ours and key in base and same(base[key], value) and not credentials.is_secret_key(key):
                continue
            if key in MODEL_KEYS:
                if allowed(value, self.models):
                    continue
                raise UserError(f"{where}.{key}={value!r} is not a model this server's operator allows "
                                "(genrun-serve --allow-model NAME)")
            if key == "base_url" and str(value).rstrip("/") in self.base_urls:
                continue
            raise UserError(f"{where}.{key} cannot be set by a client of this server: its operator configures it "
                            "(allowed: sampling_params, extra_params and the system prompt, and the models and "
                            "base URLs the operator allows with --allow-model and --allow-base-url)")
        settings = checked_settings(cls, {**base, **asked}, where)
        model = next((settings[k] for k in MODEL_KEYS if k in settings), None)
        operators_model = next((base[k] for k in MODEL_KEYS if k in base), None)
        if not (ours and same(model, operators_model)):  # a model the client named
            if not allowed(model, self.models):
                raise UserError(f"{where}: backend={backend} with model {model!r} is not a model this server's "
                                "operator allows (genrun-serve --allow-model NAME)")
            if "trust_remote_code" in settings:
                settings["trust_remote_code"] = False  # no code a client names runs in the server
        if "base_url" in settings:
            url = str(settings["base_url"]).rstrip("/")
            mine = ours and url == str(self.settings.get("base_url", "")).rstrip("/")
            if not mine and url not in self.base_urls:
                raise UserError(f"{where}.base_url is not one this server's operator allows "
                                "(genrun-serve --allow-base-url URL)")
            if not mine:  # the operator's key goes only to the server it was configured for
                settings["api_key"] = "EMPTY"
        return cls, settings


def same(a: Any, b: Any) -> bool:
    """Whether two settings are equal as values: numbers as numbers (a JavaScript client's 1 is
    the operator's 1.0), mappings whatever their order."""
    return json.dumps(as_value(a), sort_keys=True, default=str) == json.dumps(as_value(b), sort_keys=True, default=str)


def as_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): as_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_value(v) for v in value]
    return value


def allowed(model: Any, models: frozenset[str]) -> bool:
    """Whether a model (a path or a name) is one the operator allows; paths compare resolved."""
    if model is None:
        return False
    text = str(model)
    if text in models:
        return True
    path = Path(text).expanduser()
    return path.exists() and any(Path(m).expanduser().exists() and Path(m).expanduser().resolve() == path.resolve()
                                 for m in models)
