#!/usr/bin/env bash
# The CPU time `engine serve` spends per proxied call, two builds side by side (docs/BENCHMARKS.md,
# "engine serve: a proxied call"): both serve one SQLite store with the instance `acme` of
# connectors/demo.json, and each round offers each the same fixed rate of calls
# (`GET /v1/instances/acme/resources/get-contact?id=c1`, oha -q RATE) in turn, then reads the
# CPU time its process used (user and system, /proc/PID/stat) and divides it by the calls
# answered. At a fixed rate below what the machine can do, the figure moves less with the
# machine's other load than a closed loop's throughput (bench/serve.sh) does, so that a change of
# a few per cent shows as the same sign round after round.
#
# Usage: bench/serve_cpu.sh A B   [ROUNDS=6] [RATE=4000, calls a second] [DURATION=8, seconds]
# A and B are `engine` binaries (copies of target/release/engine or target/production/engine
# of two commits, say). Needs oha (`cargo install oha --locked`) and the vendor emulator built
# (`cargo build --release -p engine-emulator`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[[ $# == 2 ]] || { echo "usage: bench/serve_cpu.sh ENGINE_A ENGINE_B" >&2; exit 2; }
command -v oha >/dev/null || { echo "skipped: oha is missing (cargo install oha --locked)"; exit 0; }
builds=("$1" "$2")
rounds="${ROUNDS:-6}"
rate="${RATE:-4000}"
seconds="${DURATION:-8}"
engine="$1"
work="$root/target/bench/serve-cpu"
rm -rf "$work" && mkdir -p "$work"

# shellcheck source=bench/serve_common.sh
source "$root/bench/serve_common.sh"
start_emulator
import_acme
urls=()
servers=()
for i in 0 1; do
  "${builds[$i]}" serve --store "$store" --connectors connectors --listen 127.0.0.1:0 \
    --rate 1000000/s 2>"$work/serve$i.err" &
  pids+=($!)
  servers+=($!)
  listened="$(listening "$work/serve$i.err")"
  [[ -n "$listened" ]] || { echo "error: ${builds[$i]} serve did not start" >&2; cat "$work/serve$i.err" >&2; exit 1; }
  urls+=("$listened/v1/instances/acme/resources/get-contact?id=c1")
  # The first call obtains the instance's token (the second server reads it from the store).
  curl -sf -o /dev/null -H "Authorization: Bearer $key" "${urls[$i]}"
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "A: $1"
echo "B: $2"
echo "each round: oha -q $rate -c 20 -z ${seconds}s, A then B"
declare -A cpu
for round in $(seq "$rounds"); do
  line="round $round:"
  for i in 0 1; do
    before="$(ticks "${servers[$i]}")"
    oha --no-tui --output-format json -q "$rate" -c 20 -z "${seconds}s" \
      -H "Authorization: Bearer $key" "${urls[$i]}" >"$work/oha.json"
    after="$(ticks "${servers[$i]}")"
    answered="$(python3 -c 'import json, sys
codes = json.load(open(sys.argv[1]))["statusCodeDistribution"]
assert set(codes) == {"200"}, codes
print(sum(codes.values()))' "$work/oha.json")"
    us=$(( (after - before) * tick_us / answered ))
    cpu[$i]+="$us "
    line+=" $([[ $i == 0 ]] && echo A || echo B) $us us ($answered calls)"
  done
  echo "$line"
done
python3 - "${cpu[0]}" "${cpu[1]}" <<'PY'
import statistics, sys
a, b = ([int(value) for value in text.split()] for text in sys.argv[1:])
ratios = [y / x for x, y in zip(a, b)]
print(f"CPU per call, B / A, round by round: {', '.join(f'{r:.2f}' for r in ratios)}; "
      f"median {statistics.median(ratios):.2f}; B lower in {sum(r < 1 for r in ratios)} of {len(ratios)}")
PY
