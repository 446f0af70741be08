#!/usr/bin/env bash
# Benchmarks of the instance stores (issue 12, docs/BENCHMARKS.md "Instance stores"):
#
#  1. `engine refresh` of COUNT (10,000) expired SQLite instances against the vendor emulator on
#     loopback, with --jobs 1, 8 and 64: total time and refreshes per second; the emulator counts
#     the token requests (exactly COUNT each time).
#  2. BIG (100,000) SQLite instances, 100 of them `needs-reauth`: `engine instances list --state
#     needs-reauth` and `engine refresh --ahead 1s` with nothing due (the index on the expiry
#     column), timed with hyperfine.
#  3. PostgreSQL (ENGINE_TEST_POSTGRES, skipped when unset): COUNT expired instances refreshed by
#     two `engine refresh --jobs 8` processes at once vs one: total time, and the token requests
#     (COUNT: no instance refreshed twice).
#
# Usage: bench/stores.sh   [COUNT=10000] [BIG=100000] [PG_COUNT=COUNT]
# The instances are imported once (SQLite: with `engine instances import`; the 100,000 straight
# into the schema the engine created, with Python's sqlite3) and copied for each run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PGOPTIONS="-c client_min_messages=warning"
count="${COUNT:-10000}"
big="${BIG:-100000}"
pg_count="${PG_COUNT:-$count}"

cargo build --release -p engine-cli -p engine-emulator
engine="$root/target/release/engine"
work="$root/target/bench/stores"
rm -rf "$work" && mkdir -p "$work"

target/release/vendor-emulator --port 0 >"$work/emulator.out" &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q '^listening on ' "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$work/emulator.out")"
[[ -n "$url" ]] || { echo "error: the vendor emulator did not start" >&2; exit 1; }
token_requests() { curl -s "$url/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])'; }

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"

# COUNT expired demo instances as files.
python3 - "$work/files" "$count" "$url" <<'PY'
import json, os, sys, time
directory, count, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(directory)
obtained = str(int(time.time() * 1000) - 7_200_000)
for index in range(count):
    with open(os.path.join(directory, f"cust{index:06d}.json"), "w") as file:
        json.dump({"base.url": url, "client.id": "demo-client", "client.secret": "demo-secret",
                   "access.token": "at_expired", "authentication.time": obtained,
                   "expires_in": "3600"}, file)
PY

seed="$work/seed.db"
started=$(date +%s.%N)
find "$work/files" -name '*.json' -print0 | sort -z |
  xargs -0 -n 2000 "$engine" instances import --connector connectors/demo.json --store "sqlite:$seed" 2>/dev/null
echo "import of $count instances into SQLite: $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"

echo
echo "== 1. engine refresh of $count expired SQLite instances"
for jobs in 1 8 64; do
  rm -rf "$work"/run.db*
  sqlite3 "$seed" "VACUUM INTO '$work/run.db'"
  before=$(token_requests)
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  started=$(date +%s.%N)
  "$engine" refresh --store "sqlite:$work/run.db" --ahead 1m --jobs "$jobs" >/dev/null 2>"$work/refresh.err" || true
  elapsed=$(python3 -c "print($(date +%s.%N) - $started)")
  requests=$(( $(token_requests) - before ))
  python3 -c "print(f'--jobs $jobs: {$elapsed:.1f} s, {$count / $elapsed:.0f} refreshes/s, token requests: $requests, last line: ' + open('$work/refresh.err').read().splitlines()[-1])"
done

echo
echo "== 2. $big SQLite instances, 100 needs-reauth"
bigdb="$work/big.db"
"$engine" instances list --store "sqlite:$bigdb" >/dev/null   # creates and migrates the file
python3 - "$bigdb" "$big" "$url" <<'PY'
import json, sqlite3, sys, time
path, count, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
now = int(time.time() * 1000)
db = sqlite3.connect(path)
rows = []
for index in range(count):
    status = "needs-reauth" if index % (count // 100) == 0 else None
    obtained = now - 60_000 - index  # fresh: expire within the next hour
    state = {"base.url": url, "client.id": "demo-client", "client.secret": "demo-secret",
             "access.token": "at_fresh", "authentication.time": str(obtained), "expires_in": "3600",
             "engine.connector": "connectors/demo.json"}
    if status:
        state["engine.status"] = status
    rows.append((f"big{index:06d}", 1, "connectors/demo.json", obtained + 3_600_000,
                 json.dumps(state), now, status))
db.executemany("INSERT INTO instances (id, version, connector, expires_at, state, updated_at, status)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
db.commit()
PY
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine --shell=none --warmup 3 --runs 20 \
  --command-name "instances list --state needs-reauth" \
  "$engine instances list --store sqlite:$bigdb --state needs-reauth" \
  --command-name "refresh --ahead 1s (nothing due)" \
  "$engine refresh --store sqlite:$bigdb --ahead 1s"
echo "baseline, one process that does nothing but start: "
hyperfine --shell=none --warmup 3 --runs 20 "$engine --version" | grep -E "Time \(mean"

if [[ -z "${ENGINE_TEST_POSTGRES:-}" ]]; then
  echo "== 3. skipped: ENGINE_TEST_POSTGRES is not set"
  exit 0
fi
echo
echo "== 3. PostgreSQL: $pg_count expired instances, one vs two engine refresh processes"
psql -q "$ENGINE_TEST_POSTGRES" -c "DROP SCHEMA IF EXISTS bench_seed CASCADE; CREATE SCHEMA bench_seed"
seed_url="$ENGINE_TEST_POSTGRES?options=-c%20search_path%3Dbench_seed"
started=$(date +%s.%N)
find "$work/files" -name '*.json' -print0 | sort -z | head -z -n "$pg_count" |
  xargs -0 -n 2000 "$engine" instances import --connector connectors/demo.json --store "$seed_url" 2>/dev/null
echo "import of $pg_count instances into PostgreSQL: $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s"
for processes in 1 2; do
  psql -q "$ENGINE_TEST_POSTGRES" -c "DROP SCHEMA IF EXISTS bench_run CASCADE; CREATE SCHEMA bench_run;
    CREATE TABLE bench_run._sqlx_migrations AS TABLE bench_seed._sqlx_migrations;
    CREATE TABLE bench_run.instances (LIKE bench_seed.instances INCLUDING ALL);
    INSERT INTO bench_run.instances SELECT * FROM bench_seed.instances;
    CREATE TABLE bench_run.history (LIKE bench_seed.history INCLUDING ALL);"
  run_url="$ENGINE_TEST_POSTGRES?options=-c%20search_path%3Dbench_run"
  before=$(token_requests)
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  started=$(date +%s.%N)
  pids=()
  for _ in $(seq "$processes"); do
    "$engine" refresh --store "$run_url" --ahead 1m --jobs 8 >/dev/null 2>>"$work/pg.err" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  elapsed=$(python3 -c "print($(date +%s.%N) - $started)")
  requests=$(( $(token_requests) - before ))
  python3 -c "print(f'{$processes} process(es): {$elapsed:.1f} s, {$pg_count / $elapsed:.0f} refreshes/s, token requests: $requests (instances: $pg_count)')"
done
psql -q "$ENGINE_TEST_POSTGRES" -c "DROP SCHEMA IF EXISTS bench_seed CASCADE; DROP SCHEMA IF EXISTS bench_run CASCADE"
