"""Config schemas (registered in Hydra's ConfigStore), resolvers, and where conf/ lives.

The CLI and the tests both import this module, so the schemas and resolvers exist before
any config is composed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from genrun.backend import backend_class, backend_names, settings_schema
from genrun.modes import MODES

PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> str:
    """The copy of conf/ shipped inside the wheel, else the checkout's conf/ (absolute, so
    Hydra finds it from any folder)."""
    packaged = PACKAGE_DIR / "conf"
    return str(packaged if packaged.is_dir() else PACKAGE_DIR.parents[1] / "conf")


# The config's `mode` choices: the modes of genrun.modes.MODES.
Mode = enum.Enum("Mode", {name: name for name in MODES})


@dataclass
class SamplingConfig:
    # Further keys (top_k, stop, seed, repetition_penalty, ...) are added with +sampling.KEY=V;
    # each backend checks them before it starts.
    temperature: float = 0.7
    top_p: float = 0.8
    max_tokens: int = 2048


@dataclass
class ExtraConfig:
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FieldsConfig:
    id: Optional[str] = None  # a column, or auto: the `id` column where there is one (null: the row index)
    prompt: Optional[str] = "prompt"
    images: Optional[str] = None
    messages: Optional[str] = None
    reference: Optional[str] = None
    choices: Optional[str] = None  # a list column: an integer reference is the index of the right one


@dataclass
class FewshotConfig:
    k: int = 0
    split: Optional[str] = None  # another split of dataset.path (a hub dataset)
    path: Optional[str] = None  # or another file
    seed: int = 1234


@dataclass
class DatasetConfig:
    path: str = MISSING
    name: Optional[str] = None
    split: str = "train"
    streaming: bool = True
    limit: Optional[int] = None
    num_shards: int = 1
    shard_index: int = 0
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    template: Optional[str] = None  # Jinja2 over the row's columns: builds the prompt
    reference_template: Optional[str] = None  # Jinja2 for the reference, instead of fields.reference
    fewshot: FewshotConfig = field(default_factory=FewshotConfig)


@dataclass
class ScoringConfig:
    metrics: List[str] = field(default_factory=lambda: ["accuracy", "exact_match", "f1"])
    extract: str = "none"  # none | choice | number | boxed | regex
    pattern: Optional[str] = None  # for extract=regex


@dataclass
class CacheConfig:
    enabled: bool = False
    path: Optional[str] = None  # null: responses.sqlite in genrun's cache folder (GENRUN_CACHE)


@dataclass
class BatchConfig:
    """OpenAI Batch API files (genrun.batch). backend.batch=true sends a run as a batch job."""

    export: Optional[str] = None  # write the run's requests to this Batch input file; send nothing
    results: Optional[str] = None  # read this Batch output file into the run as its records
    overwrite: bool = False  # batch.export may replace an existing file


@dataclass
class JudgeConfig:
    """An LLM that scores each answer (`judge=openai`, ...): any backend, a rubric, a verdict."""

    backend: Any = MISSING  # a backend config, as under `backend`
    sampling: Dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    template: str = (  # Jinja2 over question, reference and answer (and the record's other fields)
        "You are grading an answer to a question against a reference answer.\n\n"
        "Question: {{ question }}\nReference answer: {{ reference }}\nAnswer to grade: {{ answer }}\n\n"
        "Is the answer to grade correct, given the reference? Reply with one word: correct or incorrect.")
    verdict: str = "label"  # label: the last of `labels` named in the judge's text; number: its last number
    labels: Dict[str, float] = field(default_factory=lambda: {"correct": 1.0, "incorrect": 0.0})


@dataclass
class GenrunConfig:
    backend: Any = MISSING
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    extra: ExtraConfig = field(default_factory=ExtraConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    judge: Optional[JudgeConfig] = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    mode: Mode = Mode.generate
    system_prompt: str = ""
    image_tag: Optional[str] = None
    seed: int = 0
    record_messages: bool = False  # each record keeps the whole conversation sent, as `messages_sent`
    resume: Optional[str] = None
    retry_errors: bool = False
    resume_allow_changed_dataset: bool = False
    metric: Optional[List[str]] = None  # deprecated: scoring.metrics


def dirname(text: str, limit: int = 200) -> str:
    """A sweep job's folder name from its overrides: no slashes (paths in values), bounded length."""
    name = str(text).replace("/", "_")
    return name if len(name) <= limit else name[:limit]


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=GenrunConfig)
    for name in backend_names():  # each backend's schema is made from its __init__ signature
        cs.store(group="backend", name=f"base_{name}", node=settings_schema(backend_class(name)))
    cs.store(group="sampling", name="base_sampling", node=SamplingConfig)
    cs.store(group="extra", name="base_extra", node=ExtraConfig)
    cs.store(group="dataset", name="base_dataset", node=DatasetConfig)
    cs.store(group="scoring", name="base_scoring", node=ScoringConfig)
    cs.store(group="cache", name="base_cache", node=CacheConfig)
    cs.store(group="batch", name="base_batch", node=BatchConfig)

    def data_file(name: str) -> str:
        return str(PACKAGE_DIR / "data" / name)

    def tiny_model(kind: str = "chat") -> str:
        from genrun.tiny_model import cached_tiny_model

        return cached_tiny_model(kind)

    OmegaConf.register_new_resolver("genrun.data", data_file, replace=True)
    def demo_model() -> str:
        from genrun.demo_model import demo_model as build

        return build()

    OmegaConf.register_new_resolver("genrun.tiny_model", tiny_model, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("genrun.demo_model", demo_model, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("genrun.dirname", dirname, replace=True)
    OmegaConf.register_new_resolver("genrun.or", lambda a, b: a if a not in (None, "") else b, replace=True)


register()
