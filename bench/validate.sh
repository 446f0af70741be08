#!/usr/bin/env bash
# Benchmark: `engine validate` on 1,000 connector files of about 10 KB each, as a whole process.
#
# Usage: bench/validate.sh [COUNT]   (from anywhere; builds nothing, run
#        `cargo build --release -p engine-cli` first)
#
# The files are generated under target/bench/validate/ (never committed) by bench/gen_connectors.py.
# Uses hyperfine when installed (`apt-get install -y hyperfine`), else bash's `time`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
count="${1:-1000}"
engine="$root/target/release/engine"
dir="$root/target/bench/validate/$count"

if [[ ! -x "$engine" ]]; then
  echo "error: \`$engine\` not found; run \`cargo build --release -p engine-cli\` first" >&2
  exit 1
fi

if [[ ! -d "$dir" ]] || [[ "$(find "$dir" -name '*.json' | wc -l)" -ne "$count" ]]; then
  rm -rf "$dir"
  python3 "$root/bench/gen_connectors.py" "$dir" "$count"
fi
bytes="$(cat "$dir"/*.json | wc -c)"
echo "validating $count files, $((bytes / count)) bytes each on average ($((bytes / 1024)) KiB in all)"

# The files must be clean: the benchmark measures the common CI case.
"$engine" validate "$dir"

if command -v hyperfine >/dev/null; then
  hyperfine --warmup 3 --runs 20 --shell=none "$engine validate $dir"
else
  echo "hyperfine not installed; timing 5 runs with \`time\`"
  for _ in 1 2 3 4 5; do
    ( time "$engine" validate "$dir" 2>/dev/null ) 2>&1 | grep real
  done
fi
