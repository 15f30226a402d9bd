#!/usr/bin/env bash
set -u
mkdir -p /tmp/dp && tar -xf .devpack/pack.tar.xz -C /tmp/dp && export LD_LIBRARY_PATH=/tmp/dp/lib
mkdir -p /work; ln -sfn $PWD /work/main; rm -rf build; ln -sfn /tmp/dp/files/build $PWD/build; cd /work/main
export KVCOMMD_BIN=$PWD/build/bin/kvcommd
for t in daemon_test integration_test kvstore_test pipeline_test; do
  ( timeout 150 build/tests/$t --gtest_brief=1 > $OUT/$t.log 2>&1; echo "$t rc=$?" ) >> $OUT/tests.txt
done
cat $OUT/tests.txt
w=$(mktemp -d)
build/bin/kvcommd --endpoint ipc://$w/d.sock --no-persist --host-capacity 2GiB --gpu-capacity 2GiB --ipc-arena 512MiB --log-level warn &
d=$!; sleep 1
timeout 150 build/bin/kvcomm-pipeline --pipeline examples/five_agents.toml --limit 44 --device cuda \
  --kv-delivery device --mode dense --mode kvcomm --endpoint ipc://$w/d.sock --namespace dev > $OUT/pipe_dev.txt 2>&1
echo "pipe rc=$?"; kill $d; wait $d
tail -22 $OUT/pipe_dev.txt
