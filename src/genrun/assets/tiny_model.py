"""Build a tiny random-weight chat model, so the demo and the tests run with no download.

Its answers are noise: the weights are random. It exists to exercise the real loading,
templating and generation paths of transformers and vLLM in a second.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from genrun.assets.folder import cached

# ChatML with Qwen3's convention for thinking: enable_thinking=false pre-fills an empty
# think block, so the prompt (and its token count) visibly depends on chat_template_kwargs.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ['image', 'image_url'] %}{{ '<image>' }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
    "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",  # the vision model's
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A large language model answers questions one token at a time.",
    "Hydra composes configuration from groups on the command line.",
    "How many legs does a spider have? A spider has eight legs.",
    "The sun rises in the east and sets in the west.",
    "You are a helpful assistant. Think step by step, then answer briefly.",
]

MODEL_VERSION = "3"  # bump when the built model changes, so caches rebuild


def build_tiny_model(out_dir: str | os.PathLike, vision: bool = False, seed: int = 0) -> Path:
    """Write a tiny chat model (tokenizer, template, weights) to out_dir: Llama for text, or
    with vision=True an Idefics3 that puts a vision tower for 32x32 images in front of it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Byte-level BPE: any text encodes, nothing maps to an unknown token.
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    text_config = LlamaConfig(  # type: ignore[call-arg]  # torch_dtype: one of its keyword arguments
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # vLLM's CPU attention needs 64 (16 is rejected)
        max_position_embeddings=2048,
        # Larger than the usual 0.02 so logits are peaked: greedy choices are not near-ties,
        # and batched and unbatched decoding pick the same tokens.
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    if vision:
        model = _tiny_vision_model(tokenizer, text_config, out)
    else:
        tokenizer.save_pretrained(out)
        model = LlamaForCausalLM(text_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    return out


def _tiny_vision_model(tokenizer: Any, text_config: Any, out: Path) -> Any:
    """Idefics3 (a SigLIP-style vision tower in front of the same Llama). Both transformers and
    vLLM's CPU build run it without torchvision, which LLaVA needs in vLLM. Each 32x32 image
    becomes <fake_token_around_image><global-img> + 4 image tokens + <fake_token_around_image>."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    vision_config = Idefics3VisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    )
    config = Idefics3Config(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        scale_factor=2,  # (32/8)**2 = 16 patches, shuffled into 4 image tokens
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return Idefics3ForConditionalGeneration(config)


def cached_tiny_model(kind: str = "chat") -> str:
    """Path of the tiny model in the user's cache, built on first use."""
    vision = kind == "vision"
    return str(cached(f"tiny-{kind}-v{MODEL_VERSION}", lambda folder: build_tiny_model(folder, vision=vision)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="genrun-tiny-model",
        description="Write a tiny random-weight chat model (its answers are noise) for demos and tests.",
    )
    parser.add_argument("dir", help="output folder")
    parser.add_argument("--vision", action="store_true", help="a vision-language model (Idefics3-style)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.dir, vision=args.vision, seed=args.seed))


if __name__ == "__main__":
    main()
