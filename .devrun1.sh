#!/usr/bin/env bash
# device run: GPU tests at the final code, then daemon_pipeline_bench with frames delivery at 8B
set -u
mkdir -p /tmp/dp && tar -xf .devpack/pack.tar.xz -C /tmp/dp && export LD_LIBRARY_PATH=/tmp/dp/lib
mkdir -p /work; ln -sfn $PWD /work/main; rm -rf build; ln -sfn /tmp/dp/files/build $PWD/build; cd /work/main
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt
export KVCOMMD_BIN=$PWD/build/bin/kvcommd
for t in daemon_test integration_test kvstore_test pipeline_test; do
  ( timeout 150 build/tests/$t --gtest_brief=1 > $OUT/$t.log 2>&1; echo "$t rc=$?" ) >> $OUT/tests.txt
done
cat $OUT/tests.txt
timeout 380 build/bin/daemon_pipeline_bench --shape llama3-8b --probe --warm-runs 3 --delivery frames > $OUT/bench_frames.txt 2>&1
echo "bench rc=$?"
tail -45 $OUT/bench_frames.txt
