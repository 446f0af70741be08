#!/usr/bin/env bash
# Benchmark: `engine test` as a whole process (issue 13).
#
#   bench/engine_test.sh [STEPS] [RUNS]     # default 5000 steps, 10 runs
#
# 1. `engine test connectors/` (every shipped test file), hyperfine --warmup 3.
# 2. One generated test file of `connectors/demo.json` with STEPS steps, pinned to one core
#    (`taskset -c 0`): a provision step, then calls with a fresh token (one exchange each, an
#    output and an instance expectation), and every 50th step the virtual clock jumps an hour
#    and the next call refreshes first (two exchanges). Prints steps per second on one core
#    (target: at least 1,000).
#
# Builds nothing: run `cargo build --release -p engine-cli` first (ENGINE=path for another build).
# Needs hyperfine and taskset. The generated file goes under target/bench/engine-test/.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
steps="${1:-5000}"
runs="${2:-10}"
engine="${ENGINE:-$root/target/release/engine}"
[[ -x "$engine" ]] || { echo "error: $engine is missing: run \`cargo build --release -p engine-cli\` first" >&2; exit 1; }
for tool in hyperfine taskset python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing" >&2; exit 1; }
done

work="$root/target/bench/engine-test"
mkdir -p "$work"
file="$work/demo-$steps.test.json"
python3 - "$steps" "$root/connectors/demo.json" "$file" <<'PY'
import json, sys
steps, connector, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
token = 1
def call(token, refresh):
    exchanges = []
    if refresh:
        exchanges.append({
            "request": {"method": "POST", "url": "<config:base.url>/oauth/token"},
            "response": {"body": {"access_token": f"FAKE-t{token}", "expires_in": 3600}},
        })
    exchanges.append({
        "request": {"method": "GET", "url": "<config:base.url>/api/v1/contacts?limit=2",
                    "headers": {"Authorization": f"Bearer FAKE-t{token}"}},
        "response": {"body": {"data": {"contacts": [{"id": "c1"}, {"id": "c2"}]}}},
    })
    return {
        "name": f"call {token}" + (" after a refresh" if refresh else ""),
        "run": {"resource": "list-contacts", "params": {"limit": "2"}},
        "exchanges": exchanges,
        "expect": {"output": [{"path": "$[*].id", "count": 2}],
                   "instance": {"access.token": {"equals": f"FAKE-t{token}"}}},
    }
test = {
    "connector": connector,
    "instance": {"base.url": "https://vendor.test", "client.id": "demo-client", "client.secret": "demo-secret"},
    "now": "2030-01-01T00:00:00Z",
    "steps": [{
        "name": "provision",
        "run": {"resource": "me"},
        "exchanges": [
            {"request": {"method": "POST", "url": "<config:base.url>/oauth/token"},
             "response": {"body": {"access_token": "FAKE-t1", "expires_in": 3600}}},
            {"request": {"method": "GET", "url": "<config:base.url>/api/v1/me"},
             "response": {"body": {"id": "acc-42"}}},
        ],
        "expect": {"instance": {"access.token": {"equals": "FAKE-t1"}}},
    }],
}
while len(test["steps"]) < steps:
    if len(test["steps"]) % 50 == 0 and len(test["steps"]) + 2 <= steps:
        token += 1
        test["steps"].append({"name": "an hour passes", "advance": "1h"})
        test["steps"].append(call(token, True))
    else:
        test["steps"].append(call(token, False))
json.dump(test, open(out, "w"), indent=1)
PY

# Both must pass before anything is timed.
"$engine" test connectors/ >/dev/null 2>&1 || { echo "error: engine test connectors/ fails" >&2; exit 1; }
summary="$("$engine" test "$file" 2>&1 | tail -1)"
[[ "$summary" == "$steps passed, 0 failed" ]] || { echo "error: the generated file gives: $summary" >&2; exit 1; }

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine --shell=none --warmup 3 --runs "$runs" --export-json "$work/shipped.json" \
  --command-name "engine test connectors/" "$engine test connectors/"
hyperfine --shell=none --warmup 1 --runs "$runs" --export-json "$work/steps.json" \
  --command-name "engine test ($steps steps, one core)" "taskset -c 0 $engine test $file"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/steps.json" "$steps" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))["results"][0]
steps = int(sys.argv[2])
rate = steps / result["mean"]
low, high = steps / result["max"], steps / result["min"]
print(f"{steps} steps: {result['mean'] * 1000:.1f} ms ± {result['stddev'] * 1000:.1f} ms on one core")
print(f"steps per second: {rate:,.0f} (slowest run {low:,.0f}, fastest {high:,.0f}); target at least 1,000 -> {'met' if low >= 1000 else 'NOT met'}")
PY
