#!/usr/bin/env bash
# How `engine test` grows with its step count (issue 19: it was quadratic): one generated test
# file of STEPS steps and one of 4 x STEPS, each written on one line (as generated files often
# are), half `advance` steps and half calls of `connectors/demo.json`. Measures the user CPU
# seconds of each run (`/usr/bin/time`: CPU time, less moved by a loaded machine than wall time)
# and prints the ratio: about 4 when the work is linear, 16 when quadratic.
#
#   bench/engine_test_scaling.sh [STEPS]     # default 25,000 (and 100,000; under 16 MiB)
#
# Builds nothing: run `cargo build --release -p engine-cli` first (ENGINE=path for another
# build). Needs GNU time (/usr/bin/time) and python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
steps="${1:-25000}"
engine="${ENGINE:-${CARGO_TARGET_DIR:-$root/target}/release/engine}"
[[ -x "$engine" ]] || { echo "error: $engine is missing: run \`cargo build --release -p engine-cli\` first" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }
work="${CARGO_TARGET_DIR:-$root/target}/bench/engine-test-scaling"
mkdir -p "$work"

count() {
    local file="$work/one-line-$1.test.json"
    python3 - "$1" "$root/connectors/demo.json" "$file" <<'PY'
import json, sys
steps, connector, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
call = {
    "run": {"resource": "me"},
    "exchanges": [{"request": {"method": "GET", "url": "<config:base.url>/api/v1/me"},
                   "response": {"body": {"id": "acc-42"}}}],
}
instance = {"base.url": "https://vendor.test", "client.id": "demo-client",
            "client.secret": "demo-secret", "access.token": "FAKE-t1",
            "authentication.time": "1893456000000", "expires_in": "999999999"}
test = {"connector": connector, "instance": instance, "now": "2030-01-01T00:00:00Z",
        "steps": [call if index % 2 else {"advance": "1s"} for index in range(steps)]}
json.dump(test, open(out, "w"), separators=(",", ":"))
PY
    local summary
    summary="$(/usr/bin/time -f '%U' -o "$work/cpu" "$engine" test "$file" 2>&1 | tail -1)"
    [[ "$summary" == "$1 passed, 0 failed" ]] || { echo "error: the generated file gives: $summary" >&2; exit 1; }
    cat "$work/cpu"
}

small="$(count "$steps")"
large="$(count "$((steps * 4))")"
python3 - "$steps" "$small" "$large" <<'PY'
import sys
steps, small, large = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"{steps:,} steps: {small:.2f} s of CPU ({small / steps * 1e6:.1f} us per step)")
print(f"{steps * 4:,} steps: {large:.2f} s of CPU ({large / (steps * 4) * 1e6:.1f} us per step)")
print(f"4x the steps took {large / max(small, 0.01):.1f}x the CPU time (linear: about 4)")
PY
