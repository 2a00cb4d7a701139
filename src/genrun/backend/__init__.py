"""Backends: one file each, behind the small interface in genrun.backend.base.

A backend is a Backend subclass with `name = "NAME"` in genrun/backend/NAME.py, plus a preset
in conf/backend/NAME.yaml. Its __init__ signature is the one declaration of its settings:
the Hydra schema (`base_NAME`, with its `_target_`), the types the CLI and the Python API
check, and which settings are required (no default: MISSING) all follow from it. Beside the
backends: the one factory (build.py), the response cache (response_cache.py) and the backend
that puts it in front of another (cached.py), several engines as one (replicas.py, with their processes in
engine_processes.py and Ray actors in ray_replicas.py), the
servers behind the openai backend (servers.py), the sampling checks every backend runs,
structured outputs, request pacing, and the seam to vLLM's internals.

May use: genrun.assets (models built into the cache folder), genrun.credentials,
genrun.errors; the heavy libraries (torch, transformers, vllm, openai) only inside the
backend that needs them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any, Dict, List, Optional, cast

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from genrun.backend.base import Backend, Completion, Failure
from genrun.errors import UserError

# Arguments every backend takes from the run, not from its own settings.
RUN_ARGUMENTS = {"self", "sampling", "extra", "seed"}


def backend_names() -> list[str]:
    """Every backend in this package (importing a backend module is cheap: heavy libraries
    are imported when a backend is built)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(Backend.registry)


def backend_class(name: str) -> type[Backend]:
    if name not in backend_names():
        raise UserError(f"backend={name!r} is unknown (choose one of: {', '.join(backend_names())})")
    return Backend.registry[name]


def settings_schema(cls: type[Backend]) -> type:
    """The backend's Hydra schema: a dataclass with its _target_ and one field per setting."""
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, dataclasses.field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    for name, parameter in settings_parameters(cls).items():
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        if isinstance(default, collections.abc.Mapping):  # an immutable {} in the signature
            spec = dataclasses.field(default_factory=functools.partial(dict, default))
        else:
            spec = dataclasses.field(default=default)
        fields.append((name, omegaconf_type(hints.get(name, Any)), spec))
    return dataclasses.make_dataclass(f"{cls.__name__}Settings", fields)


def settings_parameters(cls: type[Backend]) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p for p in parameters if p.name not in RUN_ARGUMENTS
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}


def takes_more_settings(cls: type[Backend]) -> bool:
    """Whether __init__ takes **kwargs (vLLM's engine arguments) and checks those itself."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def omegaconf_type(hint: Any) -> Any:
    """The nearest type OmegaConf checks: it knows Optional but no other unions."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = omegaconf_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if len(rest) < len(args) else inner
    if hint in (int, float, bool, str):
        return hint
    if origin in (dict, collections.abc.Mapping):
        return Dict[str, Any]
    if origin in (list, collections.abc.Sequence):
        return List[Any]
    return Any


def checked_settings(cls: type[Backend], settings: typing.Mapping[str, Any], where: str) -> dict[str, Any]:
    """The Python API's settings, checked against the same schema as the CLI's config: an
    unknown key, a wrong type or a missing required value is one UserError naming it."""
    schema = OmegaConf.structured(settings_schema(cls))
    OmegaConf.set_struct(schema, not takes_more_settings(cls))
    try:
        merged = OmegaConf.merge(schema, dict(settings))
    except ConfigKeyError as exc:
        known = ", ".join(settings_parameters(cls))
        raise UserError(f"{where}.{exc.key} is not a setting of the {cls.name} backend (settings: {known})") from None
    except ValidationError as exc:
        said = (exc.msg or str(exc)).splitlines()[0]
        raise UserError(f"{where}.{exc.key}={settings.get(str(exc.key))!r}: {said}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise UserError(f"{where}.{missing[0]} has no value: the {cls.name} backend needs it")
    values = cast(dict[str, Any], OmegaConf.to_container(merged))
    values.pop("_target_")
    return values


__all__ = ["Backend", "Completion", "Failure", "backend_class", "backend_names", "checked_settings",
           "settings_schema"]
