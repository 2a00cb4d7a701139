#!/usr/bin/env bash
# Install genrun with everything its tests need, then run the suite. CI runs exactly this.
# Extra arguments go to pytest (e.g. scripts/test.sh -k cli).
set -euo pipefail
cd "$(dirname "$0")/.."

# torch 2.13.0: the CPU build where one is provided locally; pinned so pip does not pull a newer CUDA build.
python -m pip install --quiet --disable-pip-version-check -e ".[hf,test]" "torch==2.13.0"
python -m pytest "$@"
