#!/usr/bin/env bash
# Instructions per request of each variant of the in-process `run` benchmark, counted by
# callgrind: deterministic where time is not (a shared VM moves by 10%), so that a change to the
# engine's per-request work can be measured exactly. Each variant runs at two request counts and
# the difference is divided, which removes start-up (the server, certificates, the connector).
#
#   bench/instructions.sh            # needs valgrind: apt-get install -y valgrind
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 2; }
cargo build --profile profiling --quiet -p engine-runtime --example requests
binary="${CARGO_TARGET_DIR:-target}/profiling/examples/requests"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

low=200
high=1200
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$binary" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-22s %14s\n' variant 'instructions'
declare -A per
for variant in reqwest reqwest/json engine/auth-none engine/custom-fresh; do
    a=$(count "$variant" "$low")
    b=$(count "$variant" "$high")
    per[$variant]=$(( (b - a) / (high - low) ))
    printf '%-22s %14s\n' "$variant" "${per[$variant]}"
done
for variant in engine/auth-none engine/custom-fresh; do
    printf '%s: %s more than reqwest (%s)\n' "$variant" \
        "$(( per[$variant] - per[reqwest] ))" \
        "$(awk -v a="${per[$variant]}" -v b="${per[reqwest]}" 'BEGIN { printf "%.2fx", a / b }')"
done
