#!/bin/sh
# Start the three nodes of n1.conf, n2.conf and n3.conf in the background, from this directory:
# their stores, logs and pids go to ./data. ./stop.sh stops them.
set -eu
cd "$(dirname "$0")"
mkdir -p data
for node in n1 n2 n3; do
    nats-server -c "$node.conf" >"data/$node.log" 2>&1 &
    echo $! >"data/$node.pid"
done
echo "cluster starting: nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224 (logs in $(pwd)/data)"
