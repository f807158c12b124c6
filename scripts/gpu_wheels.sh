#!/usr/bin/env bash
# Wheels for a GPU machine whose Python lacks some of our dependencies (seen on an H200 image
# with torch, but without pydantic, soundfile, jiwer, gguf, trl, and with an older transformers).
# Downloads, for CPython 3.12 on x86-64 Linux, the versions installed in this checkout's .venv,
# so both machines run the same libraries; torch stays the GPU machine's own.
#
#   scripts/gpu_wheels.sh [FOLDER]        # default .whl (ignored by git)
#
# There: pip install --no-index --no-deps --target /tmp/site FOLDER/*.whl, then
# PYTHONPATH=/tmp/site:$PWD/src scripts/gpu_checks.sh OUT (see its header).
set -eu
dest=${1:-.whl}
py=.venv/bin/python
packages="transformers huggingface_hub kernels peft accelerate pydantic pydantic_core
  annotated-types typing-inspection soundfile cffi pycparser soxr jiwer rapidfuzz gguf trl datasets
  dill multiprocess fsspec regex typing_extensions httpx2 httpcore2 tomlkit hf-xet click
  truststore anyio rdata"
pins=$($py - $packages <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
)
# shellcheck disable=SC2086
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$dest" $pins
du -sh "$dest"
