#!/usr/bin/env bash
# Runs the task suite in several pipeline modes against one fresh kvcommd and compares them:
#   bench/pipeline_modes.sh OUT_DIR DEVICE LIMIT MODE...      e.g. /tmp/m cuda 0 dense prefix naive
# Each mode gets its own namespace, so no mode reuses another's segments. Writes OUT_DIR/MODE.json
# (kvcomm-pipeline --json) and OUT_DIR/kvcommd_stats.json, and prints each mode's table (reuse modes with --fidelity: next-token KL
# and K/V error against a full prefill) plus agreement of final answers with dense.
set -euo pipefail
out=$1 device=$2 limit=$3
shift 3
bin=${KVCOMM_BIN:-build/bin}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
"$bin/kvcommd" --endpoint "ipc://$work/kvcommd.sock" --no-persist --host-capacity 8GiB \
  --gpu-capacity 0 --max-request-bytes 256MiB --log-level warn &
daemon=$!
tasks=()
for type in fact_relay aggregation rag long_context; do tasks+=(--tasks "bench/tasks/$type.jsonl"); done
for mode in "$@"; do
  fidelity=()
  [[ $mode != dense ]] && fidelity=(--fidelity)  # KL and K/V error against a full prefill
  "$bin/kvcomm-pipeline" --model models/kvcomm-tiny "${tasks[@]}" --limit "$limit" \
    --device "$device" --mode "$mode" --endpoint "ipc://$work/kvcommd.sock" \
    --namespace "modes-$mode" --json "$out/$mode.json" "${fidelity[@]}"
done
"$bin/kvcommctl" --endpoint "ipc://$work/kvcommd.sock" stats --json >"$out/kvcommd_stats.json"
python3 - "$out" "$@" <<'PY'
import json, sys
out, modes = sys.argv[1], sys.argv[2:]
runs = {m: json.load(open(f"{out}/{m}.json"))["tasks"] for m in modes}
if "dense" in runs:
    for m in modes:
        same = sum(a["replies"][-1] == b["replies"][-1] for a, b in zip(runs["dense"], runs[m]))
        print(f"{m}: final answer identical to dense in {same}/{len(runs[m])} tasks")
PY
