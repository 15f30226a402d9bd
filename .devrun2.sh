#!/usr/bin/env bash
set -u
mkdir -p /tmp/dp && tar -xf .devpack/pack.tar.xz -C /tmp/dp && export LD_LIBRARY_PATH=/tmp/dp/lib
mkdir -p /work; ln -sfn $PWD /work/main; rm -rf build; ln -sfn /tmp/dp/files/build $PWD/build; cd /work/main
export KVCOMMD_BIN=$PWD/build/bin/kvcommd
timeout 540 stdbuf -oL -eL build/bin/daemon_pipeline_bench --shape llama3-8b --probe --warm-runs 1 --delivery frames > $OUT/bench_frames.txt 2>&1
echo "bench rc=$?"
tail -45 $OUT/bench_frames.txt
