#!/usr/bin/env bash
# The pipeline programs end to end: kvcommd, two kvcomm-agent workers and kvcomm-pipeline running
# an example pipeline file on them in dense and kvcomm mode (tables, JSON per mode and per agent,
# both workers used); bad pipeline files and flags get a one-line reason and exit status 1;
# workers stop cleanly on SIGTERM.
#   usage: pipeline_cli_test.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
daemon="ipc://$work/kvcommd.sock"

"$bin/kvcommd" --endpoint "$daemon" --no-persist --log-level warn &
pids+=($!)
for w in a b; do
  "$bin/kvcomm-agent" --model "$src/models/kvcomm-tiny" --listen "ipc://$work/$w.sock" \
    --daemon "$daemon" --log-level warn &
  pids+=($!)
done
for _ in $(seq 50); do "$bin/kvcommctl" --endpoint "$daemon" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$bin/kvcomm-pipeline" --pipeline "$src/examples/planner_coder_reviewer.toml" --limit 3 \
  --mode dense --mode kvcomm --endpoint "$daemon" --namespace cli \
  --worker "ipc://$work/a.sock" --worker "ipc://$work/b.sock" --json "$work/run.json" \
  >"$work/out.txt" || fail "kvcomm-pipeline on workers failed: $(cat "$work/out.txt")"
grep -q '^kvcomm ' "$work/out.txt" || fail "no comparison row for kvcomm: $(cat "$work/out.txt")"
grep -q '^reviewer ' "$work/out.txt" || fail "no per-agent TTFT row: $(cat "$work/out.txt")"
python3 - "$work/run.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = {r["mode"]: r for r in d["runs"]}
assert set(runs) == {"dense", "kvcomm"}, runs.keys()
for r in runs.values():
    assert len(r["tasks"]) == 3 and set(r["agents"]) == {"planner", "coder", "reviewer"}, r["agents"]
    assert r["all"]["scored"] == 0  # scoring = "none"
    assert all(len(t["replies"]) == 3 for t in r["tasks"])
k = runs["kvcomm"]["all"]
assert k["anchor_turns"] > 0 and k["fallbacks"] == 0, k  # the first tasks build the pool
PY
"$bin/kvcommctl" --endpoint "$daemon" --namespace cli-kvcomm stats --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(c["agent"].startswith("code_review.0/") for c in d["reuse"]), d["reuse"]'

expect_error() {  # expect_error PATTERN ARGS...: exit status 1 and PATTERN in stderr
  local pattern=$1
  shift
  if "$bin/kvcomm-pipeline" "$@" >/dev/null 2>"$work/err.txt"; then fail "accepted: $*"; fi
  grep -q -- "$pattern" "$work/err.txt" || fail "expected '$pattern', got: $(cat "$work/err.txt")"
}
printf 'name = "x"\ntemplates = "t.toml"\ntasks = ["t.jsonl"]\n[[agents]]\nid = "a"\nmodel = "m"\n' >"$work/bad.toml"
expect_error "model 'm' is not in \[models\]" --pipeline "$work/bad.toml"
expect_error "give --pipeline FILE" --mode dense
expect_error "mode" --pipeline "$src/examples/rag.toml" --mode fast
expect_error "--worker needs --pipeline" --model "$src/models/kvcomm-tiny" \
  --tasks "$src/bench/tasks/rag.jsonl" --worker "ipc://$work/a.sock"
expect_error "needs --device cuda" --pipeline "$src/examples/rag.toml" --mode kvcomm \
  --kv-delivery device
if "$bin/kvcomm-agent" --model "$src/models/kvcomm-tiny" --listen "ipc://$work/c.sock" \
  --kv-delivery device 2>"$work/err.txt"; then fail "kvcomm-agent accepted device delivery on CPU"; fi
grep -q "needs --device cuda" "$work/err.txt" || fail "kvcomm-agent: $(cat "$work/err.txt")"

for i in 1 2; do
  kill -TERM "${pids[$i]}"
  wait "${pids[$i]}" || fail "kvcomm-agent exited non-zero on SIGTERM"
done
echo "pipeline CLI: all checks passed"
