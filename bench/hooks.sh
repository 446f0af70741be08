#!/usr/bin/env bash
# Benchmark: what a typical connector-wide JavaScript `preRequest` hook adds to a whole
# `engine run` process (issue 18, docs/hooks.md; goal: under 2 ms).
#
# Usage: bench/hooks.sh [RUNS]   (from anywhere; RUNS defaults to 100, at least 50)
#
# Builds the release `engine` and `vendor-emulator`, starts the emulator on a free port of
# 127.0.0.1, provisions an instance of connectors/demo.json, writes a copy of it whose
# connector-wide `preRequest` hook sets the `Authorization` header from the configuration (what
# adpwfnSDF's does), then times with hyperfine, warmup 5, no intermediate shell, alternating:
#   engine run connectors/demo.json get-contact --param id=c1 --config INSTANCE
#   engine run WORK/hooked.json     get-contact --param id=c1 --config INSTANCE
# and prints the difference of the means. Both send the same request. The in-process
# counterpart is `cargo bench -p engine-runtime --bench run -- 'engine/(auth-none|pre-hook)'`.
# Wall time moves with the machine's load: measure on a quiet machine, three runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-100}"
if ((runs < 50)); then
  echo "error: RUNS must be at least 50 (got $runs)" >&2
  exit 2
fi
cd "$root"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }

# shellcheck source=bench/demo_instance.sh
source bench/demo_instance.sh

# shellcheck source=bench/hooked_demo.sh
source bench/hooked_demo.sh

plain_cmd="$engine run connectors/demo.json get-contact --param id=c1 --config $instance"
hooked_cmd="$engine run $work/hooked.json get-contact --param id=c1 --config $instance"
# Both must answer the same contact before anything is timed.
[[ "$($plain_cmd)" == "$($hooked_cmd)" ]] || { echo "error: the two runs answer differently" >&2; exit 1; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine --shell=none --warmup 5 --runs "$runs" --export-json "$work/hyperfine.json" \
  --command-name "engine run" "$plain_cmd" \
  --command-name "engine run, pre-hook" "$hooked_cmd"

python3 - "$work/hyperfine.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
plain, hooked = results["engine run"], results["engine run, pre-hook"]
ms = lambda r: f'{r["mean"] * 1000:.2f} ms ± {r["stddev"] * 1000:.2f} ms'
added = (hooked["mean"] - plain["mean"]) * 1000
print(f"engine run:           {ms(plain)}")
print(f"engine run, pre-hook: {ms(hooked)}")
print(f"the pre-hook adds {added:.2f} ms (goal: under 2 ms) -> {'met' if added < 2 else 'NOT met'}")
PY
