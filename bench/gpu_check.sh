#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py says what it measures), ready to run on a machine with an
# NVIDIA GPU and no network, in under 8 minutes, from the working tree and a folder of wheels.
#
#   here, with the package index:  bench/gpu_check.sh --prepare   wheels into .whl/ (about 7 MiB)
#   there, offline:                bench/gpu_check.sh [--out DIR] [gpu_check.py's options]
#
# Without a GPU it runs the same steps on the CPU with a small model and says what needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${GENRUN_WHEELS:-.whl}

if [ "${1:-}" = "--prepare" ]; then
    python_version=${GPU_PYTHON_VERSION:-3.12}  # the GPU machine's python3
    mkdir -p "$wheels"
    grep -v '^#' bench/gpu_wheels.txt | grep . | while read -r spec; do
        if [ "${spec%%==*}" = antlr4-python3-runtime ]; then  # pure Python, published as a source archive only
            python3 -m pip wheel -q --no-deps -w "$wheels" "$spec"
            continue
        fi
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$wheels" "$spec"
    done
    du -sh "$wheels"
    exit 0
fi

if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/genrun-site "$wheels"/*.whl
    export PYTHONPATH=/tmp/genrun-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
elif ! python3 -c 'import genrun' 2>/dev/null; then
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export GENRUN_CACHE=${GENRUN_CACHE:-/tmp/genrun-gpu-check-cache}
exec timeout 470 python3 bench/gpu_check.py "$@"
