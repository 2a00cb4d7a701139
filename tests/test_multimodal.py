"""Text+image prompts: a real tiny LLaVA on hf, request bodies at a real test server, bad rows."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

import genrun
from conftest import read_jsonl, run_cli, write_jsonl
from genrun.backend.hf import HFBackend
from genrun.errors import RowError
from genrun.prompt.messages import multimodal_messages
from genrun.testing.fault_server import FaultServer

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

DEMO = Path(__file__).resolve().parents[1] / "src/genrun/data/demo_vqa"
RED, BLUE = str(DEMO / "red_square.png"), str(DEMO / "blue_circle.png")


@pytest.fixture(scope="session")
def tiny_vision(genrun_cache: Path) -> str:
    from genrun.assets.tiny_model import cached_tiny_model

    return cached_tiny_model("vision")


@pytest.fixture(scope="module")
def vision_backend(tiny_vision: str) -> HFBackend:
    return HFBackend(tiny_vision, sampling={"temperature": 0, "max_tokens": 6}, batch_size=4)


def rendered(backend: HFBackend, conversation: list) -> tuple[str, list]:
    messages, images = backend._template_input(conversation)
    return backend.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), images


def test_image_tags_are_replaced_in_order_where_they_stand(vision_backend: HFBackend) -> None:
    conversation = multimodal_messages("Compare <img> with <img> now", [RED, BLUE], image_tag="<img>")
    text, images = rendered(vision_backend, conversation)
    assert "<|im_start|>user\nCompare <image> with <image> now<|im_end|>" in text
    batch = vision_backend.processor(text=[text], images=[images], return_tensors="pt", add_special_tokens=False)
    prompt = vision_backend.tokenizer.decode(batch["input_ids"][0])
    image = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
    assert f"user\nCompare {image} with {image} now<|im_end|>" in prompt  # each image where its tag was
    # the first image is the red one: pixel values follow the tags' order
    red = vision_backend.processor.image_processor([[images[0]]], return_tensors="pt")["pixel_values"][0, 0]
    pixels = batch["pixel_values"][0]
    assert (pixels[0] == red).all() and not (pixels[1] == red).all()


def test_without_a_tag_images_follow_the_text(vision_backend: HFBackend) -> None:
    text, images = rendered(vision_backend, multimodal_messages("Describe these", [RED, BLUE]))
    assert "Describe these<image><image><|im_end|>" in text and len(images) == 2


@pytest.mark.parametrize("prompt,images,message", [
    ("One <img> two <img>", [RED], "2 '<img>' tags but 1 images"),
    ("Look <img>", ["no/such/image.png"], "image file not found"),
    ("Look <img>", [__file__], "not an image"),
    ("Look <img>", ["data:text/plain;base64,aGk="], "not an image"),
])
def test_bad_images_are_row_errors(prompt: str, images: list, message: str) -> None:
    with pytest.raises(RowError, match=message):
        multimodal_messages(prompt, images, image_tag="<img>")


def test_api_multimodal_generate_on_hf(tiny_vision: str) -> None:
    genrun.generation_init({"hf": {"model_name_or_path": tiny_vision, "batch_size": 4}},
                           {"temperature": 0, "max_tokens": 4}, backend="hf")
    result = asyncio.run(genrun.multimodal_generate(
        [[RED], BLUE, [RED, BLUE], ["missing.png"]],
        ["What colour? <img>", "Which shape? <img>", "<img> or <img>?", "And <img>?"], image_tag="<img>"))
    answers = result["ans_ls"]
    assert all(isinstance(a, str) for a in answers[:3]) and answers[3] == "<error>"
    assert result["errors"][:3] == [None] * 3 and "image file not found" in result["errors"][3]


def test_demo_vqa_run_and_bad_rows_each_get_a_record(tmp_path: Path, tiny_vision: str) -> None:
    out = tmp_path / "demo"
    result = run_cli("experiment=tiny", "mode=multimodal", "dataset=demo_vqa",
                     f"backend.model_name_or_path={tiny_vision}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "answers.jsonl")
    assert len(records) == 6 and all(isinstance(r["answer"], str) for r in records)
    assert records[0]["images"] == ["red_square.png"]  # paths as the dataset gave them

    (tmp_path / "fake.png").write_text("this is text")
    (tmp_path / "red.png").write_bytes(Path(RED).read_bytes())
    rows = [
        {"q": "What colour is <img>?", "imgs": ["red.png"]},              # relative to the dataset file
        {"q": "Compare <img> and <img>", "imgs": ["red.png"]},            # tag/image mismatch
        {"q": "What is <img>?", "imgs": ["missing.png"]},                 # missing file
        {"q": "What is <img>?", "imgs": ["fake.png"]},                    # a text file named .png
        {"q": "What is <img>?", "imgs": ["http://127.0.0.1:9/cat.png"]},  # unreachable URL
        {"q": "Is <img> like <img>?", "imgs": ["red.png", BLUE]},
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "bad"
    result = run_cli("experiment=tiny", "mode=multimodal", 'image_tag="<img>"', "dataset=default",
                     f"dataset.path={data}", "dataset.fields.prompt=q", "dataset.fields.images=imgs",
                     f"backend.model_name_or_path={tiny_vision}", f"hydra.run.dir={out}")
    assert result.returncode == 1
    errors = {r["index"]: r["error"] for r in read_jsonl(out / "answers.jsonl")}
    assert errors[0] is None and errors[5] is None
    assert "row 1" in errors[1] and "tags but 1 images" in errors[1]
    assert "image file not found: missing.png" in errors[2]
    assert "not an image: fake.png" in errors[3]
    assert "could not be fetched: http://127.0.0.1:9/cat.png" in errors[4]


def test_openai_request_bodies_carry_images_as_parts(tmp_path: Path) -> None:
    rows = [{"q": "Compare <img> with <img>", "imgs": [RED, "https://images.example/cat.png"]}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    with FaultServer() as server:
        result = run_cli("backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                         "mode=multimodal", 'image_tag="<img>"', "dataset=default", f"dataset.path={data}",
                         "dataset.fields.prompt=q", "dataset.fields.images=imgs", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    (body,) = server.bodies
    parts = body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url"]
    assert parts[0]["text"] == "Compare " and parts[2]["text"] == " with "
    local = "data:image/png;base64," + base64.b64encode(Path(RED).read_bytes()).decode()
    assert parts[1]["image_url"]["url"] == local  # a local file goes as a data URL
    assert parts[3]["image_url"]["url"] == "https://images.example/cat.png"  # a remote one is passed through
    record = read_jsonl(tmp_path / "run" / "answers.jsonl")[0]
    assert record["images"] == [RED, "https://images.example/cat.png"] and json.dumps(record).count("base64") == 0


def test_vllm_engine_places_images_and_fails_bad_rows_alone(tiny_vision: str) -> None:
    from conftest import VLLM_CPU
    from genrun.backend.vllm import VLLMBackend

    backend = VLLMBackend(tiny_vision, sampling={"temperature": 0, "max_tokens": 4},
                          limit_mm_per_prompt={"image": 2}, **VLLM_CPU)
    try:
        tagged = multimodal_messages("Compare <img> with <img> now", [RED, BLUE], image_tag="<img>")
        outputs = backend.llm.chat([tagged], backend.sampling_params, use_tqdm=False)
        prompt = backend.llm.get_tokenizer().decode(outputs[0].prompt_token_ids)
        image = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
        assert f"user\nCompare {image} with {image} now<|im_end|>" in prompt

        unreachable = multimodal_messages("What is this?", ["http://127.0.0.1:9/cat.png"])
        completions = asyncio.run(backend.generate_batch([tagged, unreachable, multimodal_messages("And this?", RED)]))
        assert completions[0].answer is not None and completions[2].answer is not None
        assert completions[1].answer is None and completions[1].error
        assert completions[0].prompt_tokens > completions[2].prompt_tokens  # two images against one
    finally:
        backend.close()


def test_cli_multimodal_run_on_vllm(tmp_path: Path, tiny_vision: str) -> None:
    out = tmp_path / "run"
    result = run_cli("backend=vllm", f"backend.model_name_or_path={tiny_vision}", "backend.gpu_memory_utilization=0.2",
                     "backend.dtype=float32", "+backend.max_model_len=512", "+backend.enforce_eager=true",
                     "+backend.limit_mm_per_prompt={image: 2}", "mode=multimodal", "dataset=demo_vqa",
                     "sampling.max_tokens=4", f"hydra.run.dir={out}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert len(records) == 6 and all(isinstance(r["answer"], str) and r["error"] is None for r in records)


def test_images_from_a_datasets_image_feature(tmp_path: Path, tiny_vision: str) -> None:
    import datasets
    from PIL import Image

    table = datasets.Dataset.from_dict({"q": ["What colour?", "Which shape?"], "img": [RED, BLUE]})
    table = table.cast_column("img", datasets.Image())  # stored as bytes in the parquet file
    data = tmp_path / "vqa.parquet"
    table.to_parquet(str(data))
    out = tmp_path / "run"
    result = run_cli("experiment=tiny", "mode=multimodal", "dataset=default", f"dataset.path={data}",
                     "dataset.fields.prompt=q", "dataset.fields.images=img",
                     f"backend.model_name_or_path={tiny_vision}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "answers.jsonl")
    assert len(records) == 2 and all(isinstance(r["answer"], str) for r in records)
    assert records[0]["images"] == ["<image 32x32>"]  # decoded PIL images; the record keeps no pixels
    assert Image.open(RED).size == (32, 32)
