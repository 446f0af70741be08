#!/usr/bin/env bash
# `engine serve` with many instances (issue 20, docs/BENCHMARKS.md "engine serve: many
# instances"): COUNT (100,000) instances of connectors/demo.json in SQLite, then in PostgreSQL
# (ENGINE_TEST_POSTGRES; a schema of its own, dropped after; skipped when unset), served by one
# `engine serve` with its scheduler:
#
#  1. nothing due: the server's CPU over IDLE seconds (60), from utime + stime in /proc/PID/stat,
#     and its memory (VmRSS, VmHWM in /proc/PID/status). Targets: under 1 % and under 200 MB.
#  2. DUE (10,000) of them due at the same millisecond, refreshed against the vendor emulator: the
#     time from the due time until the emulator has answered DUE token requests, refreshes per
#     second, and the scheduler lag as /metrics reports it (mean and the 1 s, 5 s, 10 s and
#     30 s buckets).
#
# Usage: bench/serve_scale.sh   [COUNT=100000] [DUE=10000] [IDLE=60] [RUNS=1] [STORES="sqlite postgres"]
# The instances are written straight into the schema the engine created (Python's sqlite3; one
# INSERT ... SELECT from generate_series in PostgreSQL), each with the schedule the runtime
# would write: the idle ones due in 40 to 48 minutes, the DUE ones all at one time set after the
# idle measurement. Builds release. Prints the load average before each measurement.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PGOPTIONS="-c client_min_messages=warning"
count="${COUNT:-100000}"
due="${DUE:-10000}"
idle="${IDLE:-60}"
runs="${RUNS:-1}"
stores="${STORES:-sqlite postgres}"

cargo build --release -p engine-cli -p engine-emulator
engine="$root/target/release/engine"
work="$root/target/bench/serve_scale"
rm -rf "$work" && mkdir -p "$work"
ENGINE_SECRET_KEY="k1:$(head -c 32 /dev/urandom | base64)"
export ENGINE_SECRET_KEY

server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  kill "$emulator" 2>/dev/null || true
  wait "$emulator" 2>/dev/null || true
  if [[ -n "${ENGINE_TEST_POSTGRES:-}" ]]; then
    psql -q "$ENGINE_TEST_POSTGRES" -c "DROP SCHEMA IF EXISTS bench_serve_scale CASCADE" || true
  fi
}
target/release/vendor-emulator --port 0 >"$work/emulator.out" &
emulator=$!
trap cleanup EXIT
for _ in $(seq 50); do
  grep -q '^listening on ' "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$work/emulator.out")"
[[ -n "$url" ]] || { echo "error: the vendor emulator did not start" >&2; exit 1; }
token_requests() { curl -s "$url/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])'; }
now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "$count instances, $due due at once, idle measured over $idle s, $runs run(s) per store"

# Seeds the store $1 (sqlite or postgres) at $2 (a store URL): COUNT instances, the first DUE
# due at $3 (epoch ms), the others 40 to 48 minutes from now.
seed() {
  local kind="$1" store="$2" due_at="$3"
  "$engine" instances list --store "$store" >/dev/null   # creates and migrates the schema
  local now
  now=$(now_ms)
  if [[ "$kind" == sqlite ]]; then
    python3 - "${store#sqlite:}" "$count" "$due" "$url" "$now" "$due_at" <<'PY'
import json, random, sqlite3, sys
path, count, due, url, now, due_at = sys.argv[1], *map(int, sys.argv[2:4]), sys.argv[4], *map(int, sys.argv[5:7])
db = sqlite3.connect(path)
rows = []
for index in range(count):
    expires = now + 3_600_000
    next_at = due_at if index < due else expires - 720_000 - random.randrange(180_001)
    state = {"base.url": url, "client.id": "demo-client", "client.secret": "demo-secret",
             "access.token": "at_fresh", "authentication.time": str(now), "expires_in": "3600",
             "engine.connector": "connectors/demo.json",
             "engine.schedule": {"next_refresh_at": next_at, "expires_at": expires, "status": "fresh",
                                 "failures": 0, "rejections": 0, "cooldown_until": None}}
    rows.append((f"cust{index:06d}", 1, "connectors/demo.json", expires, json.dumps(state), now, next_at))
db.executemany("INSERT INTO instances (id, version, connector, expires_at, state, updated_at, next_refresh_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
db.commit()
PY
  else
    psql -q "$ENGINE_TEST_POSTGRES" -v ON_ERROR_STOP=1 <<SQL
SET search_path = bench_serve_scale;
INSERT INTO instances (id, version, connector, expires_at, state, updated_at, next_refresh_at)
SELECT 'cust' || lpad(n::text, 6, '0'), 1, 'connectors/demo.json', $now + 3600000,
       json_build_object('base.url', '$url', 'client.id', 'demo-client', 'client.secret', 'demo-secret',
         'access.token', 'at_fresh', 'authentication.time', '$now', 'expires_in', '3600',
         'engine.connector', 'connectors/demo.json',
         'engine.schedule', json_build_object('next_refresh_at', next_at, 'expires_at', $now + 3600000,
           'status', 'fresh', 'failures', 0, 'rejections', 0, 'cooldown_until', NULL))::text,
       $now, next_at
FROM (SELECT n, CASE WHEN n < $due THEN $due_at
                     ELSE $now + 2880000 - floor(random() * 180001)::bigint END AS next_at
      FROM generate_series(0, $count - 1) AS n) AS seeded;
ANALYZE instances;
SQL
  fi
}

# CPU ticks (utime + stime) of process $1.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A line of /proc/$1/status (VmRSS, VmHWM) in MB.
memory() { awk -v key="$2:" '$1 == key {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# The value of the metric line starting with $2 in $1.
metric() { awk -v name="$2" '$1 == name {print $2}' <<<"$1"; }

run() {
  local kind="$1" store
  case "$kind" in
    sqlite)
      rm -rf "$work"/scale.db*
      store="sqlite:$work/scale.db"
      ;;
    postgres)
      if [[ -z "${ENGINE_TEST_POSTGRES:-}" ]]; then
        echo "== postgres: skipped, ENGINE_TEST_POSTGRES is not set"
        return
      fi
      psql -q "$ENGINE_TEST_POSTGRES" -c "DROP SCHEMA IF EXISTS bench_serve_scale CASCADE; CREATE SCHEMA bench_serve_scale"
      store="$ENGINE_TEST_POSTGRES?options=-c%20search_path%3Dbench_serve_scale"
      ;;
  esac
  echo
  echo "== $kind"
  # Due after the seeding (at most 60 s), the server's first pass and the idle measurement.
  local due_at started
  due_at=$(( $(now_ms) + (60 + 15 + idle + 10) * 1000 ))
  started=$(date +%s.%N)
  seed "$kind" "$store" "$due_at"
  echo "seeded $count instances in $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"

  "$engine" serve --store "$store" --connectors connectors --listen 127.0.0.1:0 2>"$work/serve.err" &
  server=$!
  local base=""
  for _ in $(seq 100); do
    base="$(sed -n 's/^listening on //p' "$work/serve.err" 2>/dev/null | head -1)"
    [[ -n "$base" ]] && break
    sleep 0.1
  done
  [[ -n "$base" ]] || { echo "error: engine serve did not start:" >&2; cat "$work/serve.err" >&2; exit 1; }
  # The first pass (the count of the instances by status) is over when the count shows.
  for _ in $(seq 600); do
    curl -s "$base/metrics" | grep -q '^engine_instances_counted_timestamp_seconds' && break
    sleep 0.1
  done
  sleep 5
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  local before after
  before=$(ticks "$server")
  sleep "$idle"
  after=$(ticks "$server")
  if (( $(now_ms) >= due_at )); then
    echo "warning: the idle measurement overlapped the due time; raise the margin" >&2
  fi
  python3 -c "print(f'idle, nothing due: CPU {($after - $before) / $(getconf CLK_TCK) / $idle * 100:.2f} % over $idle s, VmRSS $(memory "$server" VmRSS) MB, VmHWM $(memory "$server" VmHWM) MB')"

  local requests_before
  requests_before=$(token_requests)
  while (( $(now_ms) < due_at )); do sleep 0.2; done
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  local done_ms=""
  for _ in $(seq 6000); do
    if (( $(token_requests) - requests_before >= due )); then
      done_ms=$(now_ms)
      break
    fi
    sleep 0.1
  done
  [[ -n "$done_ms" ]] || { echo "error: $due refreshes did not happen within 10 minutes" >&2; exit 1; }
  # The history and schedule writes follow the token answer: wait for the counter.
  local text
  for _ in $(seq 600); do
    text="$(curl -s "$base/metrics")"
    (( $(metric "$text" 'engine_scheduler_lag_seconds_count' || echo 0) >= due )) && break
    sleep 0.1
  done
  python3 - "$due" "$due_at" "$done_ms" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_sum')" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_count')" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_bucket{le="1"}')" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_bucket{le="5"}')" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_bucket{le="10"}')" \
    "$(metric "$text" 'engine_scheduler_lag_seconds_bucket{le="30"}')" \
    "$(( $(token_requests) - requests_before ))" <<'PY'
import sys
due, due_at, done = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lag_sum, lag_count, b1, b5, b10, b30, requests = float(sys.argv[4]), *map(int, sys.argv[5:11])
elapsed = (done - due_at) / 1000
print(f"{due} due at once: all refreshed {elapsed:.1f} s after their due time, {due / elapsed:.0f} refreshes/s; "
      f"token requests {requests}; scheduler lag (/metrics): mean {lag_sum / lag_count:.1f} s over {lag_count}, "
      f"<= 1 s {b1}, <= 5 s {b5}, <= 10 s {b10}, <= 30 s {b30}")
PY
  echo "after the refreshes: VmRSS $(memory "$server" VmRSS) MB, VmHWM $(memory "$server" VmHWM) MB"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}

for kind in $stores; do
  for _ in $(seq "$runs"); do
    run "$kind"
  done
done
