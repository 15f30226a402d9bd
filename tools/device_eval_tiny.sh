#!/usr/bin/env bash
# On the GPU machine: golden greedy generations of models/kvcomm-tiny by transformers, our
# runtime's generations against them (CPU and CUDA), and the whole task suite in dense mode on
# CUDA. Expects the devpack of build/bin/kvcomm-pipeline and build/tests/runtime_test in .devpack;
# writes to $OUT. (The suite on CPU takes ~30 minutes on 2 cores; run it on the dev machine.)
set -uo pipefail
mkdir -p /tmp/dp && tar -xf .devpack/pack.tar.xz -C /tmp/dp && export LD_LIBRARY_PATH=/tmp/dp/lib
ln -sfn /tmp/dp/files/build "$PWD/build"
export PYTHONUNBUFFERED=1
python3 tools/make_tiny_golden.py models/kvcomm-tiny bench/tasks tests/data/golden/kvcomm-tiny-greedy.json
cp tests/data/golden/kvcomm-tiny-greedy.json "$OUT/"
tasks=(--tasks bench/tasks/fact_relay.jsonl --tasks bench/tasks/aggregation.jsonl
       --tasks bench/tasks/rag.jsonl --tasks bench/tasks/long_context.jsonl)
build/tests/runtime_test --gtest_filter='TinyModel.*'
build/bin/kvcomm-pipeline --model models/kvcomm-tiny "${tasks[@]}" --device cuda \
  --json "$OUT/dense_cuda.json"
