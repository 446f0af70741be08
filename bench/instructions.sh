#!/usr/bin/env bash
# Instructions per request of each variant of the in-process `run` benchmark, counted by
# callgrind: deterministic where time is not (a shared VM moves by 10%), so that a change to the
# engine's per-request work can be measured exactly. Each variant runs at two request counts and
# the difference is divided, which removes start-up (the server, certificates, the connector).
#
#   bench/instructions.sh            # every variant, with the engine's cost over bare reqwest
#   bench/instructions.sh --check    # CI: the engine variants against bench/instructions.budget
#
# Needs valgrind (apt-get install -y valgrind). `--check` fails when a variant takes more than
# its budget plus 2%; lower the budget in the commit that makes the engine cheaper.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
case "${1:-}" in
    --check) check=true ;;
    "") ;;
    *) echo "usage: bench/instructions.sh [--check]" >&2; exit 2 ;;
esac
budget_file=bench/instructions.budget
# How far over its budget a variant may go before --check fails, in percent.
tolerance=2

command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 2; }
# With the quick start's packages, in one invocation: cargo unifies features per invocation, and
# `requests` (crates/engine-bench) asks for nothing they do not, so this reuses the quick start's
# release build (connectors/quickstart.sh) and adds one binary. For `callgrind_annotate` line
# numbers, build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only.
cargo build --release --locked --quiet -p engine-cli -p engine-emulator -p engine-bench
binary="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/requests"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

low=200
high=1200
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$binary" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
declare -A per
measure() {
    local a b
    a=$(count "$1" "$low")
    b=$(count "$1" "$high")
    per[$1]=$(( (b - a) / (high - low) ))
    printf '%-22s %14s\n' "$1" "${per[$1]}"
}

printf '%-22s %14s\n' variant 'instructions'
if ! $check; then
    for variant in reqwest reqwest/json engine/auth-none engine/custom-fresh; do
        measure "$variant"
    done
    for variant in engine/auth-none engine/custom-fresh; do
        printf '%s: %s more than reqwest (%s)\n' "$variant" \
            "$(( per[$variant] - per[reqwest] ))" \
            "$(awk -v a="${per[$variant]}" -v b="${per[reqwest]}" 'BEGIN { printf "%.2fx", a / b }')"
    done
    exit 0
fi

failed=0
while read -r variant budget; do
    case "$variant" in ''|'#'*) continue ;; esac
    measure "$variant"
    limit=$(( budget + budget * tolerance / 100 ))
    if (( per[$variant] > limit )); then
        echo "error: \`$variant\` takes ${per[$variant]} instructions per request, over its budget of $budget by more than $tolerance% (at most $limit)" >&2
        failed=1
    fi
done <"$budget_file"
if (( failed )); then
    cat >&2 <<EOF
hint: the budgets are in $budget_file. Measure with \`bench/instructions.sh\` (valgrind), and find
      where the instructions go with callgrind and \`callgrind_annotate --inclusive=yes\` on
      crates/engine-bench/src/main.rs (docs/BENCHMARKS.md, "Instructions per request").
      Make the request path cheaper again, or raise the budget in the commit that needs it and
      say why there and in docs/BENCHMARKS.md.
EOF
    exit 1
fi
echo "instructions per request: within $budget_file (+$tolerance%)"
