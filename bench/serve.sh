#!/usr/bin/env bash
# The speed of a call proxied by `engine serve` (issue 20, docs/BENCHMARKS.md "engine serve: a
# proxied call"), next to the vendor emulator hit directly and to the floor, `passthrough`
# (crates/engine-bench: a bare axum + reqwest proxy that adds a fixed bearer token), all on
# loopback with the load generator on the same machine:
#
#  (a) throughput, closed loop: CONNECTIONS (50) connections for DURATION (10) seconds each, the three
#      targets interleaved, RUNS (3) times; wrk (2 threads) when installed, else oha; with the
#      CPU time each target's own process spent per request (from /proc/PID/stat);
#  (b) latency at a fixed offered rate of RATE (2,000) requests a second, DURATION each (oha -q,
#      with --latency-correction), the three targets interleaved, RUNS times: p50 and p99, and
#      the p99 the proxy adds over the emulator hit directly.
#
# Every target answers `GET /api/v1/contacts/c1` of the emulator with a fresh token: directly
# (the token in the request), through `passthrough` (which adds it) and through `engine serve`
# on a SQLite store (`GET /v1/instances/acme/resources/get-contact?id=c1` with an API key; the
# instance's token obtained by a first call before measuring). Targets: the proxy at least 0.8
# of the pass-through's throughput; its p99 added under 1 ms at 2,000 requests a second.
#
# Usage: bench/serve.sh   [RUNS=3] [DURATION=10, seconds] [RATE=2000] [CONNECTIONS=50]
#                         [BEFORE=path/to/another/engine] [BEFORE_ARGS="more serve arguments"]
# BEFORE adds a fourth target, `before`: that build's `engine serve` on the same store (a copy of
# an earlier `target/release/engine`), measured in the same rounds, to compare a change;
# BEFORE_ARGS are added to its command line (`BEFORE=target/production/engine BEFORE_ARGS="--state-cache
# 0"`: this build with the state cache off).
# PROFILE (production) is the cargo profile every target is built with: `production`, the build
# docs/serve.md deploys `engine serve` with (optimised at link time), or `release`.
# Needs oha (`cargo install oha --locked`, installed here when missing) and curl; wrk is used
# for (a) when installed (`apt-get install -y wrk`). Builds PROFILE.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs="${RUNS:-3}"
seconds="${DURATION:-10}"
rate="${RATE:-2000}"
connections="${CONNECTIONS:-50}"

if ! command -v oha >/dev/null; then
  echo "oha is missing: cargo install oha --locked"
  cargo install oha --locked || { echo "skipped: oha could not be installed"; exit 0; }
fi

profile="${PROFILE:-production}"
cargo build --profile "$profile" --locked -p engine-cli -p engine-emulator -p engine-bench
binaries="target/$profile"
engine="$root/$binaries/engine"
work="$root/target/bench/serve"
rm -rf "$work" && mkdir -p "$work"

# shellcheck source=bench/serve_common.sh
source "$root/bench/serve_common.sh"
start_emulator

token="$(curl -sf -u demo-client:demo-secret -d grant_type=client_credentials "$emulator/oauth/token" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
"$binaries/passthrough" "$emulator" "$token" >"$work/passthrough.out" &
pids+=($!)
passthrough="$(listening "$work/passthrough.out")"
[[ -n "$passthrough" ]] || { echo "error: passthrough did not start" >&2; exit 1; }

import_acme
# The rate limit per key far above what is offered: the limiter is measured, never hit.
"$engine" serve --store "$store" --connectors connectors --listen 127.0.0.1:0 --rate 1000000/s \
  2>"$work/serve.err" &
pids+=($!)
serve="$(listening "$work/serve.err")"
[[ -n "$serve" ]] || { echo "error: engine serve did not start" >&2; cat "$work/serve.err" >&2; exit 1; }

names=(emulator passthrough engine)
urls=("$emulator/api/v1/contacts/c1" "$passthrough/api/v1/contacts/c1"
  "$serve/v1/instances/acme/resources/get-contact?id=c1")
auths=("Authorization: Bearer $token" "X-Bench: passthrough" "Authorization: Bearer $key")
if [[ -n "${BEFORE:-}" ]]; then
  # shellcheck disable=SC2086 # BEFORE_ARGS: words
  "$BEFORE" serve --store "$store" --connectors connectors --listen 127.0.0.1:0 --rate 1000000/s \
    ${BEFORE_ARGS:-} 2>"$work/before.err" &
  pids+=($!)
  before="$(listening "$work/before.err")"
  [[ -n "$before" ]] || { echo "error: $BEFORE serve did not start" >&2; cat "$work/before.err" >&2; exit 1; }
  names+=(before)
  urls+=("$before/v1/instances/acme/resources/get-contact?id=c1")
  auths+=("Authorization: Bearer $key")
fi
# The first call through the engine obtains the instance's token; every target must answer 200.
for i in "${!names[@]}"; do
  status="$(curl -s -o "$work/${names[$i]}.body" -w '%{http_code}' -H "${auths[$i]}" "${urls[$i]}")"
  [[ "$status" == 200 ]] || { echo "error: ${names[$i]} answered $status: $(cat "$work/${names[$i]}.body")" >&2; exit 1; }
  echo "${names[$i]}: 200, $(wc -c <"$work/${names[$i]}.body") bytes: $(cat "$work/${names[$i]}.body")"
done

# The commands as run, with the secrets elided.
shown() { printf '%q ' "$@" | sed -e "s/$token/TOKEN/g" -e "s/$key/KEY/g"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# The CPU time a process has used, in clock ticks: user and system.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# The context switches of all its threads, voluntary and not (a thread that ends while they are
# read, one of the runtime's blocking pool, is left out).
switches() {
  { cat "/proc/$1/task/"*/status 2>/dev/null || true; } | awk '/ctxt_switches/ { sum += $2 } END { print sum }'
}
tick_us=$((1000000 / $(getconf CLK_TCK)))

echo
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); profile $profile"
echo "== (a) throughput, closed loop: $connections connections, ${seconds} s, $runs interleaved runs"
declare -A throughput
declare -A cpu
for run in $(seq "$runs"); do
  for i in "${!names[@]}"; do
    read -r user system < <(ticks "${pids[$i]}")
    switched=$(switches "${pids[$i]}")
    if command -v wrk >/dev/null; then
      command=(wrk -t2 "-c$connections" "-d${seconds}s" -H "${auths[$i]}" "${urls[$i]}")
      echo "load average $(loadavg); $(shown "${command[@]}")"
      "${command[@]}" >"$work/a.out"
      rps="$(sed -n 's/^Requests\/sec:[[:space:]]*//p' "$work/a.out")"
      errors="$(grep -E 'Non-2xx|Socket errors' "$work/a.out" || true)"
    else
      command=(oha --no-tui --output-format json -c "$connections" -z "${seconds}s" -H "${auths[$i]}" "${urls[$i]}")
      echo "load average $(loadavg); $(shown "${command[@]}")"
      "${command[@]}" >"$work/a.out"
      rps="$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"]))' "$work/a.out")"
      errors="$(python3 -c 'import json, sys; codes = json.load(open(sys.argv[1]))["statusCodeDistribution"]; print("" if set(codes) <= {"200"} else f"statuses: {codes}")' "$work/a.out")"
    fi
    # The target's own process (the emulator, the pass-through or the engine, not the
    # emulator behind them): CPU microseconds per request, a figure the machine's load moves
    # less than the throughput.
    # Split into user and system time, with the context switches: a thread woken per request
    # shows there.
    read -r user_after system_after < <(ticks "${pids[$i]}")
    requests=$(( ${rps%.*} * seconds ))
    user_us=$(( (user_after - user) * tick_us / requests ))
    system_us=$(( (system_after - system) * tick_us / requests ))
    per_request=$(( user_us + system_us ))
    switches_per_100=$(( ($(switches "${pids[$i]}") - switched) * 100 / requests ))
    throughput[${names[$i]}]+="$rps "
    cpu[${names[$i]}]+="$per_request "
    echo "  run $run ${names[$i]}: $rps requests/s, ${per_request} us CPU per request in its process (user ${user_us}, system ${system_us}; ${switches_per_100} context switches per 100 requests) $errors"
  done
done
for name in "${names[@]}"; do
  echo "${name}: ${throughput[$name]}requests/s; ${cpu[$name]}us CPU per request"
done
python3 - "${throughput[passthrough]}" "${throughput[engine]}" "${throughput[before]:-}" <<'PY'
import statistics, sys
floor, *engines = ([float(value) for value in text.split()] for text in sys.argv[1:])
for name, engine in zip(["engine", "before"], engines):
    if not engine:
        continue
    ratios = [e / f for e, f in zip(engine, floor)]
    print(f"{name} / passthrough, run by run: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f} (target: at least 0.8): "
          f"{'met' if min(ratios) >= 0.8 else 'not met'}")
PY

echo
echo "== (b) latency at $rate requests/s offered: ${seconds} s, $runs interleaved runs"
: >"$work/b.tsv"
for run in $(seq "$runs"); do
  for i in "${!names[@]}"; do
    command=(oha --no-tui --output-format json --latency-correction -q "$rate" -c "$connections"
      -z "${seconds}s" -H "${auths[$i]}" "${urls[$i]}")
    echo "load average $(loadavg); $(shown "${command[@]}")"
    "${command[@]}" >"$work/b.out"
    python3 - "$work/b.out" "$run" "${names[$i]}" "$work/b.tsv" <<'PY'
import json, sys
path, run, name, tsv = sys.argv[1:]
result = json.load(open(path))
summary, percentiles = result["summary"], result["latencyPercentiles"]
p50, p99 = percentiles["p50"] * 1000, percentiles["p99"] * 1000
codes = result["statusCodeDistribution"]
bad = "" if set(codes) <= {"200"} else f", statuses {codes}"
print(f"  run {run} {name}: {summary['requestsPerSec']:.0f} requests/s, "
      f"p50 {p50:.3f} ms, p99 {p99:.3f} ms{bad}")
with open(tsv, "a") as file:
    file.write(f"{run}\t{name}\t{p50}\t{p99}\n")
PY
  done
done
python3 - "$work/b.tsv" <<'PY'
import sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
p99 = {}
for run, name, _, value in rows:
    p99.setdefault(run, {})[name] = float(value)
for name in ["engine", "before", "passthrough"]:
    if name not in p99["1"]:
        continue
    added = [by_name[name] - by_name["emulator"] for by_name in p99.values()]
    verdict = "" if name == "passthrough" else \
        f" (target: under 1 ms): {'met' if max(added) < 1 else 'not met'}"
    print(f"p99 added by {name} over the emulator, run by run: "
          f"{', '.join(f'{a:.3f}' for a in added)} ms{verdict}")
PY
echo "load average at the end: $(loadavg)"
