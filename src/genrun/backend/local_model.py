"""Helpers shared by the backends that load a model on this machine (hf, vllm)."""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

from genrun.errors import RowError, UserError


def parse_gpu_ids(gpu_ids: str | int | None) -> list[int] | None:
    """'0,1' -> [0, 1]; None or '' -> None (leave the devices as they are)."""
    if gpu_ids is None or str(gpu_ids).strip() in ("", "None", "null"):
        return None
    try:
        return [int(part) for part in str(gpu_ids).replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"backend.gpu_ids={gpu_ids!r} is not a list of GPU numbers like \"0,1\"") from None


def only_these_gpus(gpu_ids: str | int | None) -> str | int | None:
    """backend.gpu_ids as vllm takes them: before torch starts, the process is shown only those
    GPUs (CUDA_VISIBLE_DEVICES), which it then numbers from 0. Where torch is loaded already
    (a judge in the same process, genrun-serve), the model is placed on them instead."""
    ids = parse_gpu_ids(gpu_ids)
    if ids is None or "torch" in sys.modules:
        return gpu_ids
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    return ",".join(str(i) for i in range(len(ids)))


def looks_local(path: str) -> bool:
    """A path the user meant as a folder on disk, not a hub id like 'org/name'."""
    return path.startswith(("/", "./", "../", "~")) or os.sep + os.sep in path or path.count("/") > 1


def gguf_file(path: str) -> Path | None:
    """The file when the model is a single GGUF file (as llama.cpp, Ollama and LM Studio keep them)."""
    return Path(path).expanduser() if str(path).endswith(".gguf") else None


def check_model_path(path: str) -> None:
    gguf = gguf_file(path)
    if gguf is not None:
        if not gguf.is_file():
            raise UserError(f"backend.model_name_or_path={path!r}: no such GGUF file")
        return
    expanded = Path(path).expanduser()
    if looks_local(path) and not expanded.exists():
        raise UserError(
            f"backend.model_name_or_path={path!r}: no such folder "
            "(give a model folder or hub id; build a demo model with `genrun-tiny-model DIR`)"
        )
    if expanded.exists() and not (expanded / "config.json").exists():
        raise UserError(f"backend.model_name_or_path={path!r}: folder has no config.json, so it is not a model")


def gguf_as_folder(path: str) -> str:
    """A GGUF file as a transformers folder in genrun's cache, converted once (dequantized):
    for engines that want a folder (vLLM's CPU build here)."""
    import hashlib

    from genrun.assets.folder import cache_root, cached
    from genrun.assets.gguf import gguf_to_transformers

    gguf = gguf_file(path)
    assert gguf is not None
    stat = gguf.resolve().stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    name = f"gguf-{gguf.stem}-{key}"
    if not (cache_root() / name / "config.json").exists():
        logging.getLogger(__name__).warning(
            "%s: converting the GGUF file into a transformers folder in %s (once; dequantized, so it takes "
            "more disk than the file)", gguf.name, cache_root() / name)
    return str(cached(name, lambda folder: gguf_to_transformers(gguf, folder)))


def load_image(url: str, timeout: float = 30.0) -> Any:
    """A PIL image from a data URL or an http(s) URL (for backends that decode images themselves)."""
    from PIL import Image, UnidentifiedImageError

    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except OSError as exc:
            raise RowError(f"image URL could not be fetched: {url} ({exc})") from None
    try:
        with Image.open(io.BytesIO(data)) as check:
            check.verify()
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RowError(f"not an image: {url[:60]}") from None


def device_kwargs(gpu_ids: str | int | None) -> dict[str, Any]:
    """from_pretrained placement: None -> every visible GPU (the CPU without one);
    "0" -> that GPU; "0,1" -> spread over those GPUs only."""
    import torch

    ids = parse_gpu_ids(gpu_ids)
    if not torch.cuda.is_available():
        if ids:
            logging.getLogger(__name__).warning("backend.gpu_ids=%s but no CUDA device is visible: running on the CPU",
                                                gpu_ids)
        return {}
    count = torch.cuda.device_count()
    missing = [i for i in ids or [] if i >= count]
    if missing:
        raise UserError(f"backend.gpu_ids={gpu_ids}: GPU {missing[0]} does not exist ({count} visible)")
    if ids is None:
        return {"device_map": "auto"}
    if len(ids) == 1:
        return {"device_map": {"": ids[0]}}
    memory = {i: torch.cuda.get_device_properties(i).total_memory for i in ids}
    return {"device_map": "auto", "max_memory": memory}


def chat_template_text(chat_template: str | None) -> str | None:
    """backend.chat_template: a Jinja chat template in place of the tokenizer's own, given as
    text or as the path of a file holding it (as vLLM's --chat-template takes it)."""
    if not chat_template:
        return None
    if "{" not in chat_template:  # a template always holds a tag; a path never needs one
        try:
            return Path(chat_template).expanduser().read_text()
        except OSError as exc:
            raise UserError(f"backend.chat_template={chat_template!r} is neither a template nor a readable file "
                            f"({exc.strerror})") from None
    return chat_template
