#!/usr/bin/env bash
# Regenerate requirements/lock.txt, the exact versions the suite passes with (Python 3.11, Linux x86_64),
# from pyproject.toml's ranges and every extra the tests and the images use.
#
#   bash requirements/lock.sh             after adding or changing a dependency: keeps every other pin
#   bash requirements/lock.sh --upgrade   moves every pin to the newest release pyproject.toml allows
#
# then run the suite on the new lock (bash .ci/run). uv (pip install uv) resolves; pip installs.
# torch is the CPU build (+cpu): from the wheel on this disk (/opt/wheels) where there is one,
# otherwise from the PyTorch CPU index, never PyPI's multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if python -m uv --version >/dev/null 2>&1; then UV=(python -m uv); else
  command -v uv >/dev/null || { echo "uv is needed: pip install uv" >&2; exit 1; }; UV=(uv); fi
torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then torch_source=(--find-links /opt/wheels); fi
"${UV[@]}" pip compile pyproject.toml --all-extras \
  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  "${torch_source[@]}" --no-emit-find-links --no-emit-index-url \
  --custom-compile-command "bash requirements/lock.sh" \
  -o requirements/lock.txt "$@"
