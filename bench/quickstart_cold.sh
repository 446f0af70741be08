#!/usr/bin/env bash
# The quick start from a fresh clone (issue 10, docs/BENCHMARKS.md "Cold build and the quick
# start"): RUNS (3) times, clone this repository's HEAD into an empty directory and run
# connectors/quickstart.sh there, timing from `git clone` to its last line. Each clone starts with
# no target directory (CARGO_TARGET_DIR is unset for it), so each build is cold; the registry
# cache (~/.cargo) is shared, as on any machine that built a Rust project before.
#
# Usage: bench/quickstart_cold.sh [RUNS]   (run it on an otherwise idle machine)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for run in $(seq "$runs"); do
  echo "run $run: load average before $(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s.%N)
  git clone -q "$root" "$work/clone"
  status=0
  (cd "$work/clone" && env -u CARGO_TARGET_DIR bash connectors/quickstart.sh >"$work/log" 2>&1) || status=$?
  end=$(date +%s.%N)
  echo "run $run: exit $status, $(python3 -c "print(f'{$end - $start:.1f}')") s from clone to the last line;" \
    "cargo: $(grep -o 'Finished .*' "$work/log" | head -1)"
  echo "  last line: $(tail -1 "$work/log")"
  rm -rf "$work/clone"
done
