"""The config's schemas: one dataclass per config group, registered in Hydra's ConfigStore
(genrun.settings.register), so a wrong type or an unknown key fails at launch. Each default
is written here once; conf/ holds the presets.

May use: nothing of genrun's (the backends' schemas are made from their signatures, in
genrun.backend).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

# The config's `mode` choices; genrun.prompt.modes says how each turns a row into messages.
MODES = ("generate", "multimodal", "multiturn", "choice", "perplexity")
# The modes that score log-likelihoods of text rather than generate: prompts always go as text.
LOGLIKELIHOOD_MODES = ("choice", "perplexity")


class Mode(enum.Enum):
    """The modes as the config's enum (OmegaConf checks a value against it)."""

    generate = "generate"
    multimodal = "multimodal"
    multiturn = "multiturn"
    choice = "choice"
    perplexity = "perplexity"


assert tuple(m.value for m in Mode) == MODES

# dataset keys that change which rows a run reads now, not its answers: they may differ on resume
DATASET_OPERATIONAL = frozenset({"limit", "streaming"})


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
    sampler: str = "fixed"  # fixed (one draw for every row), first_n, random (a draw per row)
    per_group: Optional[str] = None  # a column: a row's examples share its value (MMLU's subject)


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
    # Jinja2 for a system prompt per row, instead of system_prompt (lm-eval's `description`)
    system_template: Optional[str] = None
    # mode=choice: one Jinja2 template per choice, instead of fields.choices (MMLU's letters)
    choice_templates: Optional[List[str]] = None
    # mode=choice, partial scoring (winogrande): one Jinja2 context per choice; the prompt is then
    # the continuation every context is scored with
    context_templates: Optional[List[str]] = None
    # mode=perplexity: Jinja2 for the text whose words and bytes the log-likelihood is divided
    # by, when not the scored text itself (wikitext counts its page before detokenizing)
    units_template: Optional[str] = None
    fewshot: FewshotConfig = field(default_factory=FewshotConfig)


@dataclass
class ScoringConfig:
    metrics: List[str] = field(default_factory=lambda: ["accuracy", "exact_match", "f1"])
    extract: str = "none"  # none | choice | number | boxed | regex
    pattern: Optional[str] = None  # for extract=regex
    # code_pass (genrun.scoring.code, sandbox): where the code is, the sandbox and its limits
    code_from: str = "fence"  # fence: the last fenced block, else the whole answer | answer
    sandbox: str = "auto"  # auto (bubblewrap, or an error) | bwrap | rlimits (trusted code only)
    code_timeout_s: float = 10.0
    code_memory_mb: int = 1024
    code_workers: Optional[int] = None  # programs at once; null: the machine's cores
    # extract=choice: when the letter and the choice's text name different choices (genrun.scoring.extract)
    choice_policy: str = "letter"  # letter: the letter wins | text: the text wins (lm-eval) | strict: wrong
    group_by: Optional[str] = None  # a column: each group's scores, and the macro mean over groups
    cluster_by: Optional[str] = None  # a column: intervals robust to rows of one cluster being alike
    max_truncated: float = 0.05  # above this share of answers at the token cap, the run ends with a warning
    strict: bool = False  # ... and exits 1


@dataclass
class CacheConfig:
    enabled: bool = False
    path: Optional[str] = None  # null: responses.sqlite in genrun's cache folder (GENRUN_CACHE)


@dataclass
class BatchConfig:
    """OpenAI Batch API files (genrun.engine.batch_files). backend.batch=true sends a run as a batch job."""

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
class TrackerConfig:
    """An experiment tracker (`tracker=mlflow`, `tracker=wandb`; genrun.trackers): never a reason to lose a run."""

    kind: str = MISSING  # mlflow | wandb
    tracking_uri: Optional[str] = None  # mlflow: a server (http://...); null: MLFLOW_TRACKING_URI, else ./mlflow.db
    experiment: str = "genrun"  # MLflow's experiment, W&B's project
    entity: Optional[str] = None  # W&B's entity (team); null: its default
    max_rows: int = 1000  # rows in the tracker's table (the whole answers.jsonl goes as a file)
    progress_s: float = 10.0  # seconds between live counts of rows answered (0: none)


@dataclass
class GenrunConfig:
    backend: Any = MISSING
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    extra: ExtraConfig = field(default_factory=ExtraConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    judge: Optional[JudgeConfig] = None
    tracker: Optional[TrackerConfig] = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    mode: Mode = Mode.generate
    system_prompt: str = ""
    image_tag: Optional[str] = None
    # false: the prompt goes to the model as text, with no chat template (base models; mode=choice always)
    chat_template: bool = True
    fewshot_delimiter: str = "\n\n"  # as text: between few-shot examples, and before the row's prompt
    target_delimiter: str = " "  # as text: between a prompt and its answer (a few-shot example's, a choice)
    seed: int = 0
    record_messages: bool = False  # each record keeps the whole conversation sent, as `messages_sent`
    resume: Optional[str] = None
    retry_errors: bool = False
    resume_allow_changed_dataset: bool = False
    metric: Optional[List[str]] = None  # deprecated: scoring.metrics
