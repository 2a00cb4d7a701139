"""Settings: where conf/ lives, the schemas and resolvers Hydra composes with, and the one
place the composed root config is read.

`load(cfg)` turns Hydra's composed config into typed `Settings` once, at the edge (the CLI,
genrun-score, genrun-cache explain, genrun-serve); every component is then handed its own
slice (`settings.dataset`, `settings.scoring`, ...), never the root config.

May use: genrun.backend (each backend's schema is made from its signature), genrun.assets
(the model resolvers), genrun.errors, Hydra and OmegaConf.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeVar, cast

from genrun.errors import UserError
from genrun.settings.schema import (
    DATASET_OPERATIONAL,
    LOGLIKELIHOOD_MODES,
    MODES,
    BatchConfig,
    CacheConfig,
    DatasetConfig,
    ExtraConfig,
    FewshotConfig,
    FieldsConfig,
    GenrunConfig,
    JudgeConfig,
    Mode,
    SamplingConfig,
    ScoringConfig,
    TrackerConfig,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The config groups and keys whose values change answers: run.json keeps them, resume compares them.
ANSWER_KEYS = ("backend", "sampling", "extra", "dataset", "mode", "system_prompt", "image_tag", "seed")


T = TypeVar("T")


def plain_data(cfg: Any, **options: Any) -> dict[str, Any]:
    """A config node as plain data (OmegaConf.to_container), typed as the mapping it is."""
    from omegaconf import OmegaConf

    return cast(dict[str, Any], OmegaConf.to_container(cfg, **options))


def typed_object(schema: type[T], plain: Any) -> T:
    """Plain data checked against a dataclass schema, as that dataclass (OmegaConf.to_object)."""
    from omegaconf import OmegaConf

    return cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain)))


def conf_dir() -> str:
    """The copy of conf/ shipped inside the wheel, else the checkout's conf/ (absolute, so
    Hydra finds it from any folder)."""
    packaged = PACKAGE_DIR / "conf"
    return str(packaged if packaged.is_dir() else PACKAGE_DIR.parents[1] / "conf")


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """The run-wide keys that shape every row's messages."""

    mode: str = "generate"
    system_prompt: str = ""
    image_tag: str | None = None
    record_messages: bool = False
    chat_template: bool = True  # false: prompts as text (mode=choice and perplexity: always)
    fewshot_delimiter: str = GenrunConfig.fewshot_delimiter  # the defaults are the schema's
    target_delimiter: str = GenrunConfig.target_delimiter

    @property
    def as_text(self) -> bool:
        return not self.chat_template or self.mode in LOGLIKELIHOOD_MODES


@dataclasses.dataclass(frozen=True)
class ResumeOptions:
    dir: str | None = None
    retry_errors: bool = False
    allow_changed_dataset: bool = False


@dataclasses.dataclass(frozen=True)
class Settings:
    """The composed config, read once. The backend, sampling and extra stay plain data (a
    backend takes keys beyond any schema: +sampling.top_k=20, +backend.max_model_len=8192)."""

    backend: dict[str, Any]  # its _target_ and settings; a secret is never in it (genrun.credentials)
    sampling: dict[str, Any]
    extra: dict[str, Any]
    dataset: DatasetConfig
    scoring: ScoringConfig
    judge: JudgeConfig | None
    cache: CacheConfig
    batch: BatchConfig
    prompt: PromptOptions
    seed: int
    resume: ResumeOptions
    identity: dict[str, Any]  # the answer-changing config: run.json keeps it, resume compares it


def load(cfg: Any) -> Settings:
    """Settings from a composed config (a DictConfig); a key without a value is one line."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (or choose one: dataset=demo_qa)" if missing[0] == "dataset.path" else ""
        raise UserError(f"{missing[0]} has no value: set it on the command line, e.g. {missing[0]}=...{hint}")
    from omegaconf.errors import OmegaConfBaseException

    plain = plain_data(cfg, resolve=True, enum_to_str=True)
    # The typed groups as their dataclasses; backend, sampling and extra stay plain data.
    rest = {k: v for k, v in plain.items() if k not in ("hydra", "backend", "sampling", "extra")}
    try:
        typed = typed_object(GenrunConfig, {**rest, "backend": {}})
    except OmegaConfBaseException as exc:  # a key added with + that no schema has
        raise UserError(f"{str(exc).splitlines()[0]} (genrun --cfg job shows the config)") from None
    scoring = typed.scoring
    if plain.get("metric") is not None:  # the key before the scoring group
        print(f"genrun: warning: metric= is deprecated: use scoring.metrics={list(plain['metric'])}", file=sys.stderr)
        scoring = dataclasses.replace(scoring, metrics=list(plain["metric"]))
    return Settings(
        backend=plain["backend"], sampling=plain["sampling"], extra=plain["extra"], dataset=typed.dataset,
        scoring=scoring, judge=typed.judge, cache=typed.cache, batch=typed.batch,
        prompt=PromptOptions(str(plain["mode"]), typed.system_prompt, typed.image_tag, typed.record_messages,
                             typed.chat_template, typed.fewshot_delimiter, typed.target_delimiter),
        seed=typed.seed, resume=ResumeOptions(typed.resume, typed.retry_errors, typed.resume_allow_changed_dataset),
        identity=identity(plain))


def load_generation(cfg: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Only the backend (with its _target_), sampling and extra of a composed config: what
    genrun-serve builds its backend from (no dataset needed)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        backend, sampling, extra = (plain_data(cfg[key], resolve=True, throw_on_missing=True)
                                    for key in ("backend", "sampling", "extra"))
        return backend, sampling, extra
    except OmegaConfBaseException as exc:
        raise UserError(f"{str(exc).splitlines()[0]}") from None


def load_judge(cfg: Any) -> JudgeConfig | None:
    """Only the judge of a composed config (genrun-score judges a finished run)."""
    from omegaconf.errors import OmegaConfBaseException

    if cfg.get("judge") is None:
        return None
    try:
        plain = plain_data(cfg.judge, resolve=True)  # the judge's backend stays plain data
        return typed_object(JudgeConfig, plain)
    except OmegaConfBaseException as exc:
        raise UserError(f"judge: {str(exc).splitlines()[0]}") from None


def load_tracker(cfg: Any) -> TrackerConfig:
    """Only the tracker of a composed config (genrun.trackers' Hydra callback)."""
    plain = plain_data(cfg.tracker, resolve=True) if cfg.get("tracker") is not None else {}
    return typed_object(TrackerConfig, plain)


def plain_job_config(cfg: Any) -> dict[str, Any]:
    """A job's config as plain data, resolved, without hydra's node (whose sweep keys do not
    resolve in a single run): what a tracker records as the run's parameters."""
    from omegaconf import OmegaConf

    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return plain_data(job, resolve=True, enum_to_str=True)


def dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys ({"sampling": {"top_p": 0.8}} -> {"sampling.top_p": 0.8}):
    how a config or a run.json is compared and logged key by key."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(dotted(inner, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def identity(plain: dict[str, Any]) -> dict[str, Any]:
    """The part of the config that changes answers: each backend's operational settings
    (concurrency, batch size, ...) and the dataset's (limit, streaming) left out."""
    from hydra.utils import get_class

    operational = {"backend": getattr(get_class(plain["backend"]["_target_"]), "operational", ()),
                   "dataset": DATASET_OPERATIONAL}
    subset: dict[str, Any] = {}
    for key in ANSWER_KEYS:
        value = plain.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in operational.get(key, ())}
        subset[key] = value
    shots = (subset.get("dataset") or {}).get("fewshot")
    if isinstance(shots, dict) and shots.get("sampler", "fixed") == "fixed" and not shots.get("per_group"):
        # the defaults of keys added later: a run made before them still resumes
        subset["dataset"] = {**subset["dataset"], "fewshot": {k: v for k, v in shots.items()
                                                              if k not in ("sampler", "per_group")}}
    if not plain.get("chat_template", True) or plain.get("mode") in LOGLIKELIHOOD_MODES:  # (so older runs still resume)
        subset["text_prompt"] = {k: plain.get(k) for k in ("fewshot_delimiter", "target_delimiter")}
    return subset


def compose(overrides: list[str]) -> Any:
    """The config `genrun` would compose from these overrides (a DictConfig)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"{' '.join(overrides)}: {str(exc).splitlines()[0]}") from None


def load_saved(run_dir: Path) -> Settings:
    """The settings a run was made with, from its .hydra/config.yaml."""
    from omegaconf import OmegaConf

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir}: no .hydra/config.yaml to read its settings from")
    return load(OmegaConf.load(saved))


def dirname(text: str, limit: int = 200) -> str:
    """A sweep job's folder name from its overrides: no slashes (paths in values), bounded length."""
    name = str(text).replace("/", "_")
    return name if len(name) <= limit else name[:limit]


def register() -> None:
    """The schemas (each backend's from its signature) and resolvers, before any compose."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from genrun.backend import backend_class, backend_names, settings_schema

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=GenrunConfig)
    for name in backend_names():
        cs.store(group="backend", name=f"base_{name}", node=settings_schema(backend_class(name)))
    for group, node in (("sampling", SamplingConfig), ("extra", ExtraConfig), ("dataset", DatasetConfig),
                        ("scoring", ScoringConfig), ("cache", CacheConfig), ("batch", BatchConfig)):
        cs.store(group=group, name=f"base_{group}", node=node)

    def tiny_model(kind: str = "chat") -> str:
        from genrun.assets.tiny_model import cached_tiny_model

        return cached_tiny_model(kind)

    def demo_model() -> str:
        from genrun.assets.demo_model import demo_model as build

        return build()

    OmegaConf.register_new_resolver("genrun.data", lambda name: str(PACKAGE_DIR / "data" / name), replace=True)
    OmegaConf.register_new_resolver("genrun.tiny_model", tiny_model, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("genrun.demo_model", demo_model, replace=True, use_cache=True)
    def humaneval() -> str:
        from genrun.assets.humaneval import humaneval_path

        return humaneval_path()

    OmegaConf.register_new_resolver("genrun.humaneval", humaneval, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("genrun.dirname", dirname, replace=True)
    OmegaConf.register_new_resolver("genrun.or", lambda a, b: a if a not in (None, "") else b, replace=True)


register()

__all__ = ["MODES", "BatchConfig", "CacheConfig", "DatasetConfig", "FewshotConfig", "FieldsConfig", "JudgeConfig",
           "Mode", "PromptOptions", "ResumeOptions", "ScoringConfig", "Settings", "compose", "conf_dir", "load",
           "dotted", "load_generation", "load_judge", "load_saved", "load_tracker", "plain_job_config", "register"]
