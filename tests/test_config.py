"""Every option of every config group composes; schemas reject wrong types and unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from genrun.backend.hf import HFBackend
from genrun.settings import conf_dir

CONF = Path(conf_dir())
# Every config group, found from conf/ (hydra/ holds Hydra's own launcher presets).
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_every_group_is_tested() -> None:
    assert GROUPS == ["backend", "batch", "cache", "dataset", "experiment", "extra", "judge", "sampling", "scoring",
                      "task", "tracker"]


# What an option needs besides itself to compose into settings (a dataset path, or a model
# folder instead of the demo model's download).
NEEDS = {("experiment", "demo"): ["backend.model_name_or_path=/models/any"]}
# the presets that set a mode of their own
MODE_OF = {("task", "wikitext"): "perplexity",
           **{("task", name): "choice"
              for name in ("arc_easy", "arc_challenge", "mmlu", "piqa", "lambada_openai", "hellaswag",
                           "winogrande")}}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_reads_into_settings(group: str, option: str, tiny_model: str,
                                                        tmp_path: Path) -> None:
    from genrun.settings import load

    cfg = compose_with(f"{group}={option}", *NEEDS.get((group, option), []))
    assert cfg.mode.value == MODE_OF.get((group, option), "generate")
    if group == "backend":
        assert cfg.backend._target_.startswith("genrun.backend.")
    # Every value but a deliberately required one resolves.
    missing = OmegaConf.missing_keys(cfg)
    assert missing <= {"dataset.path"}, missing
    if missing:
        cfg = compose_with(f"{group}={option}", *NEEDS.get((group, option), []), "dataset.path=data.jsonl")
    settings = load(cfg)
    assert settings.identity["backend"]["_target_"] == settings.backend["_target_"]
    instantiate_cheap(group, option, settings, tmp_path)


def instantiate_cheap(group: str, option: str, settings, tmp_path: Path) -> None:
    """Build what the option configures, where that is cheap (no engine, no download)."""
    from genrun.backend.build import build
    from genrun.backend.response_cache import ResponseCache
    from genrun.prompt.builder import prompt_settings
    from genrun.scoring import Scorer

    Scorer.of(settings.scoring, mode=settings.prompt.mode)  # every option leaves a valid scoring
    prompt_settings(settings.dataset, settings.prompt)  # and templates that compile
    if group == "backend" and option == "openai":
        build(settings.backend, settings.sampling, settings.extra, settings.seed).close()
    if group == "judge" and option == "openai":
        build(settings.judge.backend, settings.judge.sampling, {}).close()
    if group == "tracker":
        check_tracker(option)
    if group == "cache" and settings.cache.enabled:
        ResponseCache(tmp_path / "cache.sqlite").close()
    if group == "dataset" and option != "default":
        from conftest import open_dataset

        mode = {"demo_chat": "multiturn", "demo_vqa": "multimodal"}.get(option, "generate")
        rows = open_dataset(OmegaConf.to_container(OmegaConf.structured(settings.dataset)), mode)
        assert rows.first


def check_tracker(option: str) -> None:
    """A tracker option names its kind and installs genrun's Hydra callback (built, not started)."""
    from hydra.utils import instantiate

    from genrun.settings import load_tracker
    from genrun.trackers.callback import TrackerCallback

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracker={option}"], return_hydra_config=True)
    assert load_tracker(cfg).kind == option
    callback = instantiate(cfg.hydra.callbacks.tracker)
    assert isinstance(callback, TrackerCallback)
    assert compose_with().get("tracker") is None  # no tracker unless asked for


def test_defaults_match_the_reference_page() -> None:
    cfg = compose_with()
    assert cfg.backend._target_ == "genrun.backend.vllm.VLLMBackend"
    assert cfg.backend.model_name_or_path == "openbmb/MiniCPM4-8B"
    assert cfg.backend.gpu_ids is None  # deliberate change: leave CUDA_VISIBLE_DEVICES alone
    assert cfg.backend.gpu_memory_utilization == 0.9
    assert OmegaConf.to_container(cfg.sampling) == {"temperature": 0.7, "top_p": 0.8, "max_tokens": 2048}
    assert cfg.extra.chat_template_kwargs == {"enable_thinking": False}
    assert cfg.system_prompt == "" and cfg.image_tag is None
    openai = compose_with("backend=openai").backend
    assert (openai.model_name, openai.concurrency, openai.retries, openai.base_delay) == ("MiniCPM4-8B", 8, 3, 1.0)
    hf = compose_with("backend=hf").backend
    assert (hf.batch_size, hf.trust_remote_code) == (8, True)


def test_api_key_comes_from_the_environment_and_never_sits_in_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from genrun.backend.openai import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    cfg = compose_with("backend=openai")
    assert "sk-from-env" not in OmegaConf.to_yaml(cfg, resolve=True)  # not even in --cfg job --resolve
    backend = OpenAIBackend(**{k: v for k, v in cfg.backend.items() if k != "_target_"})
    assert backend.api_key == "sk-from-env"  # read when the backend starts


def test_extra_sampling_keys_can_be_added() -> None:
    cfg = compose_with("+sampling.top_k=20", "+sampling.stop=[END]")
    assert cfg.sampling.top_k == 20 and list(cfg.sampling.stop) == ["END"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("sampling.temperature=hot", "temperature"),
        ("sampling.temprature=0.1", "temprature"),
        ("mode=chat", "mode"),
        ("backend.batch_size=many", "batch_size"),
        ("dataset.limit=ten", "limit"),
        ("backend=nonexistent", "nonexistent"),
    ],
)
def test_bad_values_fail_at_composition(override: str, message: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_with("backend=hf", override)
    assert message in str(info.value) + str(info.value.__cause__)


def test_experiment_tiny_selects_hf_and_demo_qa(tiny_model: str) -> None:
    cfg = compose_with("experiment=tiny")
    assert cfg.backend._target_ == "genrun.backend.hf.HFBackend"
    assert Path(cfg.dataset.path).name == "demo_qa.jsonl" and Path(cfg.dataset.path).exists()
    assert cfg.backend.model_name_or_path == tiny_model  # built on first use, then reused
    backend = HFBackend(**{k: v for k, v in OmegaConf.to_container(cfg.backend, resolve=True).items() if k != "_target_"})
    assert backend.describe()["chat_template_sha256"]
    backend.close()
