"""genrun-serve as a server folder of UltraRAG's (OpenBMB/UltraRAG), whose client starts a
server as `python <folder>/src/<folder name>.py` over stdio and builds a pipeline by calling
the server's `build(parameter_file)` tool, which writes `server.yaml` beside that file.

`genrun-serve --ultrarag DIR` writes the folder (write_folder); the `build` tool genrun-serve
serves on stdio writes server.yaml (write_server_yaml) in the shape UltraRAG's server base
class gives it: per tool, each input mapped to `$name` when the parameter file has that key
(UltraRAG then fills it from the file) or to the pipeline variable of that name, and the
outputs the pipeline keeps.

May use: genrun.errors and PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from genrun.errors import UserError

# Each tool's inputs and outputs, as UltraRAG's own generation server declares them
# (`output="prompt_ls,system_prompt->ans_ls"`); `errors` is genrun's, read by no pipeline.
TOOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generation_init": (("backend_configs", "sampling_params", "extra_params", "backend"), ()),
    "generate": (("prompt_ls", "system_prompt"), ("ans_ls",)),
    "multimodal_generate": (("multimodal_path", "prompt_ls", "system_prompt", "image_tag"), ("ans_ls",)),
    "multiturn_generate": (("messages", "system_prompt"), ("ans_ls",)),
    "vllm_shutdown": ((), ()),
}

# The page's parameter.yaml (../shared/seed): the keys and defaults UltraRAG's users know.
PARAMETERS = """\
# genrun-serve as UltraRAG's generation server: the page's parameters, defaults as on the page.
# `ultrarag build` copies them into the pipeline's parameter file, which is the one to edit.
backend: vllm # options: vllm, openai, hf
backend_configs:
  vllm:
    model_name_or_path: openbmb/MiniCPM4-8B
    gpu_ids: "2,3"
    gpu_memory_utilization: 0.9
    dtype: auto
    trust_remote_code: true
  openai:
    model_name: MiniCPM4-8B
    base_url: http://localhost:8000/v1
    api_key: "abc"
    concurrency: 8
    retries: 3
    base_delay: 1.0
  hf:
    model_name_or_path: openbmb/MiniCPM4-8B
    gpu_ids: '2,3'
    trust_remote_code: true
    batch_size: 8

sampling_params:
  temperature: 0.7
  top_p: 0.8
  max_tokens: 2048

extra_params:
  chat_template_kwargs:
    enable_thinking: false

system_prompt: ""
image_tag: null
"""

# The server file UltraRAG runs with `python`. It may be named genrun.py (a folder servers/genrun),
# so its own folder leaves sys.path before genrun is imported; where that `python` has no
# genrun, the interpreter that wrote the folder serves instead.
LAUNCHER = '''\
"""genrun-serve as an UltraRAG server, over stdio: UltraRAG's client runs `python {name}.py`.
Written by `genrun-serve --ultrarag {folder}`; run that again to rewrite it."""

import os
import sys

ARGS = {args!r}  # genrun-serve's options for this folder
WRITER = {python!r}  # the Python that wrote this file, where genrun is installed

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
try:
    from genrun.serve import main
except ImportError as exc:
    if os.path.exists(WRITER) and os.path.realpath(WRITER) != os.path.realpath(sys.executable):
        os.execv(WRITER, [WRITER, "-m", "genrun.serve", *ARGS])
    sys.exit(f"genrun-serve: error: {{exc}}; install genrun into this Python: pip install 'genrun[serve]'")
main(ARGS)
'''

# UltraRAG's demo mode and UI answer generate/multimodal_generate themselves, in-process, for
# any server whose path contains this: a genrun folder there would be silently replaced.
REPLACED_BY_ULTRARAG = "servers/generation"


def write_folder(folder: Path, serve_args: list[str]) -> list[Path]:
    """The server folder UltraRAG names in a pipeline's `servers:`; returns the files written.
    An existing parameter.yaml is kept (it may hold the user's edits)."""
    folder = folder.expanduser()
    if REPLACED_BY_ULTRARAG in folder.resolve().as_posix() + "/":
        raise UserError(f"--ultrarag {folder}: UltraRAG's demo mode and UI replace any server under "
                        f"'{REPLACED_BY_ULTRARAG}' with their own; name the folder otherwise, "
                        "e.g. --ultrarag servers/genrun")
    name = folder.resolve().name
    if not name.isidentifier():
        raise UserError(f"--ultrarag {folder}: UltraRAG runs src/{name}.py and names the tools {name}_...; "
                        "give the folder a name of letters, digits and _ (e.g. servers/genrun)")
    source = folder / "src" / f"{name}.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    written = []
    parameters = folder / "parameter.yaml"
    if not parameters.exists():
        parameters.write_text(PARAMETERS)
        written.append(parameters)
    source.write_text(LAUNCHER.format(name=name, folder=folder, args=list(serve_args), python=sys.executable))
    written.append(source)
    return written


def write_server_yaml(parameter_file: str) -> Path:
    """UltraRAG's `build` step: server.yaml beside the parameter file, and nothing else."""
    path = Path(parameter_file).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"build: parameter_file {parameter_file!r} is not a .yaml file")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"build: no folder {str(folder)!r} for the parameter file")
    parameters: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"build: cannot read {parameter_file}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"build: {parameter_file} holds {type(loaded).__name__}, not a mapping of parameters")
        parameters = loaded or {}
    code = str(parameters.get("path", folder / "src" / f"{folder.resolve().name}.py"))
    if not Path(code).exists():
        raise UserError(f"build: server code not found: {code} (write the folder with genrun-serve --ultrarag DIR)")

    def named(spec: str) -> str:
        return f"${spec}" if spec in parameters else spec

    tools = {}
    for tool, (inputs, outputs) in TOOLS.items():
        entry: dict[str, Any] = {"input": {name: named(name) for name in inputs}}
        if outputs:
            entry["output"] = [named(name) for name in outputs]
        tools[tool] = entry
    built = {"path": code, "parameter": parameter_file, "tools": tools, "prompts": {}}
    target = folder / "server.yaml"
    with open(target, "w") as out:
        yaml.safe_dump(built, out, allow_unicode=True, sort_keys=False)
    return target
