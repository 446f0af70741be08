#!/usr/bin/env bash
# Benchmark: the instructions a connector-wide JavaScript `preRequest` hook adds to a whole
# `engine run` process, counted by callgrind (exact, independent of the machine's load; the
# wall-time counterpart is bench/hooks.sh). docs/BENCHMARKS.md records the figures.
#
# Usage: bench/hooks_instructions.sh   (from anywhere; needs valgrind)
#
# Same set-up as bench/hooks.sh (bench/demo_instance.sh: release build, the vendor emulator, a
# provisioned instance of connectors/demo.json, a copy with the hook), then one run of each under
# callgrind; prints both totals and their difference.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

# shellcheck source=bench/demo_instance.sh
source bench/demo_instance.sh
# shellcheck source=bench/hooked_demo.sh
source bench/hooked_demo.sh

count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
plain=$(count "$engine" run connectors/demo.json get-contact --param id=c1 --config "$instance")
hooked=$(count "$engine" run "$work/hooked.json" get-contact --param id=c1 --config "$instance")
echo "engine run:           $plain instructions"
echo "engine run, pre-hook: $hooked instructions"
echo "the hook adds:        $((hooked - plain)) instructions"
