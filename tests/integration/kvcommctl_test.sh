#!/usr/bin/env bash
# kvcommctl against a real kvcommd: put / get byte-identical round trip, ls / stats in both
# output forms, persistence across a daemon restart, and a one-line reason with a non-zero exit
# status for each kind of bad input.
#   usage: kvcommctl_test.sh KVCOMMD KVCOMMCTL MAKE_SEGMENT_PY
set -euo pipefail
kvcommd=$1 kvcommctl=$2 make_segment=$3
work=$(mktemp -d)
daemon_pid=
cleanup() { [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
endpoint="ipc://$work/kvcommd.sock"
ctl() { "$kvcommctl" --endpoint "$endpoint" --timeout-ms 3000 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

start_daemon() {
  "$kvcommd" --endpoint "$endpoint" --data-dir "$work/data" --log-level warn &
  daemon_pid=$!
  for _ in $(seq 50); do ctl ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "kvcommd did not come up"
}
stop_daemon() { kill -TERM "$daemon_pid"; wait "$daemon_pid" || fail "kvcommd exited non-zero on SIGTERM"; daemon_pid=; }

python3 "$make_segment" "$work/a.safetensors" --seed 1 --tokens 24 --dtype BF16
python3 "$make_segment" "$work/b.safetensors" --seed 2 --tokens 40 --dtype F16 --namespace other
start_daemon

key_a=$(ctl put "$work/a.safetensors" | tail -1)
[[ $key_a =~ ^[0-9a-f]{32}$ ]] || fail "put did not end with a key: $key_a"
ctl get "$key_a" "$work/a.out.safetensors" >/dev/null
key_again=$(ctl put "$work/a.out.safetensors" | tail -1)
[[ $key_again == "$key_a" ]] || fail "re-putting a fetched file gave another key"
ctl get "$key_a" "$work/a.out2.safetensors" >/dev/null
cmp -s "$work/a.out.safetensors" "$work/a.out2.safetensors" || fail "get is not byte-stable"

key_b=$(ctl put "$work/b.safetensors" | tail -1)
ctl --namespace other ls | grep -q "$key_b" || fail "ls in namespace 'other' misses $key_b"
ctl ls | grep -q "$key_b" && fail "namespace 'other' leaked into 'default'"
ctl ls --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==1 and d[0]["tokens"]==24, d'
ctl stats | grep -q '^host' || fail "stats table has no host row"
ctl stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["puts"]==3, d'

stop_daemon
start_daemon
ctl get "$key_a" "$work/a.after-restart.safetensors" >/dev/null || fail "segment lost across restart"
cmp -s "$work/a.out.safetensors" "$work/a.after-restart.safetensors" || fail "bytes changed across restart"

expect_error() {  # expect_error PATTERN COMMAND...
  local pattern=$1; shift
  local out
  if out=$("$@" 2>&1); then fail "expected failure: $*"; fi
  [[ $(wc -l <<<"$out") -eq 1 ]] || fail "error is not one line: $out"
  grep -q "$pattern" <<<"$out" || fail "error '$out' does not mention '$pattern'"
}
expect_error "NotFound" ctl get 0123456789abcdef0123456789abcdef "$work/x"
expect_error "32 hex digits" ctl rm 1234
printf 'junk' > "$work/junk.safetensors"
expect_error "too short" ctl put "$work/junk.safetensors"
expect_error "cannot open" ctl put "$work/missing.safetensors"
ctl rm "$key_a" >/dev/null
expect_error "NotFound" ctl rm "$key_a"
stop_daemon
expect_error "not reachable" "$kvcommctl" --endpoint "$endpoint" --timeout-ms 300 ping
echo "kvcommctl end-to-end: all checks passed"
