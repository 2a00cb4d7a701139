"""The one way genrun builds a backend, used by the run, the judge, the Python API, the Batch
file paths and genrun-serve: from its config (a `_target_` and the backend's settings, as
the backend group holds it), the run's sampling, extra and seed, and the secrets given on the
command line for its config path (genrun.credentials)."""

from __future__ import annotations

from typing import Any, Mapping, cast

from genrun import credentials
from genrun.backend.base import Backend
from genrun.errors import UserError


def build(config: Mapping[str, Any], sampling: Mapping[str, Any] | None = None,
          extra: Mapping[str, Any] | None = None, seed: int | None = None, secrets_of: str | None = None) -> Backend:
    """The backend a config describes. seed None: the backend's own default. secrets_of: the
    config path ("backend", "judge.backend") whose command-line secrets it is handed."""
    from hydra.utils import instantiate

    cls = class_of(config)
    if cls.replicable and any(k in config for k in ("data_parallel_size", "tensor_parallel_size", "ray_address")):
        from omegaconf import DictConfig, OmegaConf

        from genrun.backend.replicas import Replicas, replica_configs

        plain = cast(dict[str, Any], OmegaConf.to_container(config) if isinstance(config, DictConfig) else dict(config))
        if plain.get("ray_address"):  # engines as actors on a Ray cluster
            from genrun.backend.ray_replicas import on_ray

            return on_ray(cls, plain, sampling, extra, seed, build=build)
        configs = replica_configs(plain)
        if configs is not None:  # several engines, one process each
            from genrun.backend.engine_processes import Replica

            return Replicas(cls, configs, sampling, extra, seed, build=build, transport=Replica)
        config = {k: v for k, v in plain.items() if k != "data_parallel_size"}
    arguments: dict[str, Any] = {"sampling": dict(sampling or {}), "extra": dict(extra or {})}
    if seed is not None:
        arguments["seed"] = seed
    if secrets_of is not None:
        arguments.update(credentials.for_component(secrets_of))
    try:
        return instantiate(dict(config), **arguments, _convert_="all")
    except Exception as exc:
        failure = build_failure(exc, secrets_of or "backend")
        if failure is exc:
            raise
        raise failure from exc


def target(cls: type[Backend]) -> str:
    """The `_target_` of a backend class (resume compares it, so module paths stay put)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def class_of(config: Mapping[str, Any]) -> type[Backend]:
    from hydra.utils import get_class

    return get_class(str(config["_target_"]))


def config_of(cls: type[Backend], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"_target_": target(cls), **settings}


def for_batch_file(config: Mapping[str, Any], sampling: Mapping[str, Any], extra: Mapping[str, Any],
                   seed: int | None) -> Any:
    """The backend whose requests a Batch file holds: the openai backend as configured, or for a
    local engine (vllm, hf) the same requests to its model path, as vLLM's run_batch serves it.
    No engine starts."""
    from genrun.backend.openai import OpenAIBackend

    if class_of(config) is OpenAIBackend:
        return build(config, sampling, extra, seed, secrets_of="backend")
    return build(config_of(OpenAIBackend, {"model_name": str(config["model_name_or_path"])}), sampling, extra, seed)


def build_failure(exc: Exception, where: str) -> Exception:
    """What to report when Hydra could not build a backend: Hydra wraps the backend's own
    error, and a user's mistake is reported as itself, in one line."""
    from hydra.errors import InstantiationException

    if not isinstance(exc, InstantiationException):
        return exc
    cause = exc.__cause__
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, ImportError):
        root: BaseException = cause
        while root.__cause__ is not None:
            root = root.__cause__
        return UserError(f"{where} cannot be loaded: {root}; install its extra, e.g. pip install 'genrun[vllm]'")
    if isinstance(cause, TypeError) and "unexpected keyword" in str(cause):
        return UserError(f"{where}: {cause}")
    return exc
