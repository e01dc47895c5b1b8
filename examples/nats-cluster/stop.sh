#!/bin/sh
# Stop the nodes started by ./start.sh (their stores stay in ./data; remove it to start afresh).
set -eu
cd "$(dirname "$0")"
for pidfile in data/*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
done
