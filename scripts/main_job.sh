#!/usr/bin/env bash
# The main job on built-in defaults, offline: distil the packaged all-mpnet-base-v2 (teacher) into the
# packaged all-MiniLM-L6-v2 (student) on the Python standard library's own documentation text, print the
# held-out fidelity reached, then index that text with the teacher and answer real searches with the student.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-runs/leaf-default}

embedkd distill --method leaf --output "$OUT" --max-seq-length 128 --epochs 2
python - "$OUT" <<'PY'
import json, sys
r = json.load(open(f"{sys.argv[1]}/embedkd_fidelity.json"))
print(f"student {sys.argv[1]}: held-out cosine to teacher {r['heldout_cosine']:.4f} "
      f"(before training {r['heldout_cosine_before']:.4f}), MSE {r['heldout_mse']:.6f}, {r['steps']} steps")
PY
# The same texts become the document collection: the teacher's vectors come straight from its cache.
python -c "from embedkd.data import load_texts; open('runs/stdlib-docs.txt', 'w').write('\n'.join(load_texts('stdlib-docs')) + '\n')"
embedkd index --teacher sentence-transformers/all-mpnet-base-v2 --corpus runs/stdlib-docs.txt \
  --index-dir runs/idx-stdlib --overwrite
bash scripts/serve_demo.sh "$OUT" runs/idx-stdlib \
  "how do I parse command line arguments" "compress a file with gzip" "run a function in a background thread"
