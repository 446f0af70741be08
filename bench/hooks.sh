#!/usr/bin/env bash
# Benchmark: what a typical connector-wide JavaScript `preRequest` hook adds to a whole
# `engine run` process (issue 18, docs/hooks.md; goal: under 2 ms).
#
# Usage: bench/hooks.sh [RUNS]   (from anywhere; RUNS defaults to 100, at least 50)
#
# Builds the release `engine` and `vendor-emulator`, starts the emulator on a free port of
# 127.0.0.1, provisions an instance of connectors/demo.json, writes a copy of it whose
# connector-wide `preRequest` hook sets the `Authorization` header from the configuration (what
# adpwfnSDF's does), then times, alternating one run of each (5 more of each first, untimed):
#   engine run connectors/demo.json get-contact --param id=c1 --config INSTANCE
#   engine run WORK/hooked.json     get-contact --param id=c1 --config INSTANCE
# and prints the difference of the medians. Both send the same request. The in-process
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

# shellcheck source=bench/demo_instance.sh
source bench/demo_instance.sh

# shellcheck source=bench/hooked_demo.sh
source bench/hooked_demo.sh

plain_cmd="$engine run connectors/demo.json get-contact --param id=c1 --config $instance"
hooked_cmd="$engine run $work/hooked.json get-contact --param id=c1 --config $instance"
# Both must answer the same contact before anything is timed.
[[ "$($plain_cmd)" == "$($hooked_cmd)" ]] || { echo "error: the two runs answer differently" >&2; exit 1; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# Alternating one run of each, RUNS times (hyperfine runs all of one command, then all of the
# other, so a busy moment of the machine lands on one side only), after 5 of each to warm up.
python3 - "$runs" "$engine" "$instance" "$work/hooked.json" <<'PY'
import statistics, subprocess, sys, time

runs, engine, instance, hooked = int(sys.argv[1]), *sys.argv[2:5]
commands = {
    "engine run": [engine, "run", "connectors/demo.json", "get-contact", "--param", "id=c1", "--config", instance],
    "engine run, pre-hook": [engine, "run", hooked, "get-contact", "--param", "id=c1", "--config", instance],
}
times = {name: [] for name in commands}
for round in range(5 + runs):
    for name, command in commands.items():
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        if round >= 5:
            times[name].append((time.perf_counter() - start) * 1000)
for name, taken in times.items():
    q1, median, q3 = statistics.quantiles(taken, n=4)
    print(f"{name + ':':22s}median {median:.2f} ms (quartiles {q1:.2f} to {q3:.2f}), {runs} runs")
# The medians decide: one slow run of a busy machine moves a mean by more than the hook costs.
added = statistics.median(times["engine run, pre-hook"]) - statistics.median(times["engine run"])
print(f"the pre-hook adds {added:.2f} ms to the median (goal: under 2 ms) -> {'met' if added < 2 else 'NOT met'}")
PY
