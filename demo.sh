#!/usr/bin/env bash
# Live demo on loopback: a throwaway CA under ./demo/, a collector and one agent, and the
# fleet table refreshed every two seconds. Ctrl-C stops everything.
# VIGIE_DEMO_PORT changes the agent port (default 15668).
set -euo pipefail
cd "$(dirname "$0")"
port=${VIGIE_DEMO_PORT:-15668}

cargo build --workspace --bins
bin=target/debug

rm -rf demo
mkdir -p demo
$bin/vigie-collector ca init --dir demo/ca --server-name 127.0.0.1 --server-name localhost
$bin/vigie-collector ca issue --dir demo/ca --agent demo-agent --out demo/agent

cat > demo/collector.toml <<TOML
[listen]
agents = "127.0.0.1:$port"
admin_socket = "collector.sock"
[tls]
ca = "ca/ca.pem"
cert = "ca/collector.pem"
key = "ca/collector.key"
TOML
cat > demo/agent.toml <<TOML
collectors = ["127.0.0.1:$port"]
interval = "2s"
[tls]
ca = "agent/ca.pem"
cert = "agent/demo-agent.pem"
key = "agent/demo-agent.key"
TOML

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "stopped; logs are in demo/collector.log and demo/agent.log"
}
trap cleanup INT TERM EXIT

$bin/vigie-collector serve --config demo/collector.toml 2>demo/collector.log &
pids+=($!)
$bin/vigie-agent run --config demo/agent.toml 2>demo/agent.log &
pids+=($!)

while true; do
  sleep 2
  clear 2>/dev/null || true
  echo "vigie demo: collector on 127.0.0.1:$port, one agent; Ctrl-C stops everything"
  echo
  $bin/vigie-collector agents --socket demo/collector.sock || true
  echo
  tail -n 3 demo/collector.log
done
