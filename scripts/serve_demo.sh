#!/usr/bin/env bash
# Start the asymmetric search service over an index, run real searches with curl, stop it.
#
# usage: scripts/serve_demo.sh STUDENT_DIR INDEX_DIR [QUERY ...]
#   STUDENT_DIR  query encoder (e.g. runs/leaf-minilm), in the index teacher's vector space
#   INDEX_DIR    built by `embedkd index` (e.g. runs/idx-scifact)
#   QUERY        search texts (default: two scientific claims)
# Environment: PORT (default: a free port), PYTHON (default: python).
set -euo pipefail
usage="usage: scripts/serve_demo.sh STUDENT_DIR INDEX_DIR [QUERY ...]"
student=${1:?$usage}
index=${2:?$usage}
shift 2
queries=("$@")
if [ ${#queries[@]} -eq 0 ]; then
  queries=("Aspirin lowers the risk of heart attacks." "Vitamin D deficiency is linked to depression.")
fi
py=${PYTHON:-python}
port=${PORT:-$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
url="http://127.0.0.1:$port"
log=$(mktemp)

show_hits='
import json, sys
r = json.load(sys.stdin)
print("  (took %s ms: encode %s ms, search %s ms)" % (r["took_ms"], r["encode_ms"], r["search_ms"]))
for hit in r["results"]:
    print("  %.3f  %10s  %s" % (hit["score"], hit["id"], (hit.get("title") or hit.get("text") or "")[:90]))
'

$py -m embedkd serve --index-dir "$index" --student "$student" --read-only --host 127.0.0.1 --port "$port" \
  >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

echo "starting embedkd serve on $url (student $student, index $index) ..."
for _ in $(seq 900); do
  if curl -sf "$url/healthz" >/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; echo "error: the service did not start" >&2; exit 1; fi
  sleep 1
done
curl -sf "$url/healthz" >/dev/null || { cat "$log" >&2; echo "error: the service is not ready" >&2; exit 1; }
echo "\$ curl -s $url/stats"
curl -s "$url/stats"
echo

for q in "${queries[@]}"; do
  body=$($py -c 'import json, sys; print(json.dumps({"query": sys.argv[1], "k": 3, "include_text": True}))' "$q")
  echo
  echo "\$ curl -s $url/search -H 'content-type: application/json' -d '$body'"
  curl -s "$url/search" -H 'content-type: application/json' -d "$body" | $py -c "$show_hits"
done
