#!/usr/bin/env bash
# End-to-end gRPC latency on completejourney: server pinned to core 0 (one tokio worker), load
# generator pinned to core 1, the no-op floor measured in the same run. Writes raw results to
# $OUT (default /tmp/cobuy-loadtest) and prints them. Takes about 25 minutes.
#   bash benches/loadtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cobuy-loadtest}
DATA=${DATA:-../shared/data/completejourney}
REPS=${REPS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
mkdir -p "$OUT"
cargo build --release --quiet
B=$PWD/target/release/cobuy
MODELS=$OUT/models
rm -rf "$MODELS"
"$B" build --orders "$DATA/transactions.parquet" --catalog "$DATA/products.parquet" \
  --mapping examples/datasets/completejourney.toml --out "$MODELS" > "$OUT/build.txt" 2>&1

# The next version for the swap step, built now: a two-core build in the minute before a swap
# run raised its p99 to 2.4-3.7x steady (RESULTS.md, session 9); builds belong on a batch host.
STAGE=$OUT/staging
rm -rf "$STAGE"
"$B" build --orders "$DATA/transactions.parquet" --catalog "$DATA/products.parquet" \
  --mapping examples/datasets/completejourney.toml --out "$STAGE" > "$OUT/rebuild.txt" 2>&1
next=$(cat "$STAGE/CURRENT")
mv "$STAGE/$next" "$MODELS/"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
declare -A PID
serve() { # name port extra-args...
  local name=$1 port=$2; shift 2
  taskset -c 0 "$B" serve --models "$MODELS" --addr 127.0.0.1:"$port" --worker-threads 1 \
    --metrics-addr off --watch-interval-ms 500 "$@" > "$OUT/server-$name.log" 2>&1 &
  pids+=($!)
  PID[$name]=$!
}
# Server CPU per answered call during one fixed-rate run (`--server-pid`, from the server's
# threads' schedstat): a capacity measure that a host stall, which decides a short run's p99,
# barely moves. Every run below reports it too (column "cpu µs/call").
cpu_per_call() { # name port rate
  local name=$1 port=$2 rate=$3
  load --addr 127.0.0.1:"$port" --server-pid "${PID[$name]}" --rps "$rate" --duration-s 20 --json \
    | python3 -c "import json, sys; r = json.load(sys.stdin)[0]; print(f'$name: {r[\"server_cpu_us_per_call\"]:.1f} us of server CPU per call ({r[\"ok\"]} calls at $rate/s)')"
}
serve cobuy 50091
serve noop 50092 --noop
serve pool 50093 --compute-threads 1 --compute-queue 256
sleep 3
load() { taskset -c 1 "$B" loadgen --models "$MODELS" --threads 1 "$@"; }

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  for rate in 1000 5000; do
    for rep in $(seq "$REPS"); do
      for target in noop:50092 cobuy:50091; do
        echo "## ${target%%:*} ${rate}/s run $rep (load $(cut -d' ' -f1 /proc/loadavg))"
        load --addr 127.0.0.1:"${target##*:}" --server-pid "${PID[${target%%:*}]}" --rps "$rate" --duration-s "$SECONDS_PER_RUN"
      done
    done
  done
  echo "## server CPU per call at 3000/s (no-op, cobuy, no-op, cobuy)"
  for target in noop:50092 cobuy:50091 noop:50092 cobuy:50091; do
    cpu_per_call "${target%%:*}" "${target##*:}" 3000
  done
  for target in noop:50092 cobuy:50091 pool:50093; do
    echo "## sweep ${target%%:*} (load $(cut -d' ' -f1 /proc/loadavg))"
    load --addr 127.0.0.1:"${target##*:}" --server-pid "${PID[${target%%:*}]}" --rps 2000 --duration-s 10 --sweep --sweep-factor 1.12 --p99-target-ms 2 --max-steps 24
  done
  # Only the measured server stays on core 0 for the swap: the others watch the same model
  # directory, and the ranking pool's server loading the new version beside cobuy's on the same
  # core doubled the load work there (RESULTS.md, session 14). In production each instance
  # has its own cores.
  kill "${PID[pool]}" "${PID[noop]}" 2>/dev/null || true
  while kill -0 "${PID[pool]}" 2>/dev/null || kill -0 "${PID[noop]}" 2>/dev/null; do sleep 0.2; done
  # The next version, built before the servers started (as on a batch host), is made live 10 s
  # into a 30 s run, as `cobuy publish` does after an rsync.
  echo "## model swap under 1000/s (version $next published 10 s into a 30 s run)"
  (sleep 10; taskset -c 1 chrt --idle 0 "$B" publish --models "$MODELS" "$next" > "$OUT/publish.txt" 2>&1) &
  publisher=$!
  load --addr 127.0.0.1:50091 --server-pid "${PID[cobuy]}" --rps 1000 --duration-s 30 --timeline
  wait "$publisher"
  echo "## steady 1000/s right after"
  load --addr 127.0.0.1:50091 --server-pid "${PID[cobuy]}" --rps 1000 --duration-s 30 --timeline
  grep -h "model swapped in" "$OUT/server-cobuy.log" | tail -2
} 2>&1 | tee "$OUT/results.txt"
