#!/usr/bin/env bash
# Benchmark: `engine validate` as a whole process, against ajv-cli on the same files, in one
# hyperfine run; then the largest real export alone.
#
# Usage: bench/validate.sh [COUNT] [RUNS]   (COUNT files, default 1000; RUNS per command, default 20)
#        ENGINE=path/to/engine bench/validate.sh   (another build, e.g. a copy of an older one)
#
# Builds nothing: run `cargo build --release -p engine-cli` first. Needs python3, hyperfine
# (`apt-get install -y hyperfine`) and npm (Node.js 20): ajv-cli is installed, pinned, into
# target/bench/ajv/ (never committed) on the first run.
#
# The files are generated under target/bench/validate/ by bench/gen_connectors.py (about 16 KB
# each, templates and JSONPaths on every resource, all valid). Both tools must accept every file
# before anything is timed. ajv-cli checks the checked-in schema (schemas/connector.schema.json,
# draft 2020-12, formats as annotations as the engine treats them); the engine also decodes the
# files, builds the model (templates, JSONPaths, references) and runs its semantic checks.
#
# Targets (issue 8): 1,000 files in at most 0.1 s, at least 5 times faster than ajv-cli in the
# same run; the 1.8 MB dayforcehcm export in under 0.1 s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
count="${1:-1000}"
runs="${2:-20}"
engine="${ENGINE:-$root/target/release/engine}"
dir="$root/target/bench/validate/$count-16k"
ajv_dir="$root/target/bench/ajv"
ajv="$ajv_dir/node_modules/.bin/ajv"
ajv_version="5.0.0"
# A large real export (1.8 MB), from the shared exports laid beside the clone (not the project's
# file); the export benchmark is skipped without it.
export_file="${EXPORT_FILE:-$root/../shared/corpus/CloudElementsOpenLabs__elements__dayforcehcm_element.json}"
results="$root/target/bench/validate"

if [[ ! -x "$engine" ]]; then
  echo "error: \`$engine\` not found; run \`cargo build --release -p engine-cli\` first" >&2
  exit 1
fi
if ! command -v hyperfine >/dev/null; then
  echo "error: hyperfine is not installed; install it with \`apt-get install -y hyperfine\`" >&2
  exit 1
fi
if [[ ! -x "$ajv" ]] || ! grep -q "\"version\": \"$ajv_version\"" "$ajv_dir/node_modules/ajv-cli/package.json"; then
  echo "installing ajv-cli@$ajv_version into $ajv_dir"
  npm install --prefix "$ajv_dir" --no-audit --no-fund --save-exact "ajv-cli@$ajv_version" >/dev/null
fi

if [[ ! -d "$dir" ]] || [[ "$(find "$dir" -name '*.json' | wc -l)" -ne "$count" ]]; then
  rm -rf "$dir"
  python3 "$root/bench/gen_connectors.py" "$dir" "$count" --size 16384
fi
bytes="$(cat "$dir"/*.json | wc -c)"
echo "$count files, $((bytes / count)) bytes each on average ($((bytes / 1024)) KiB in all)"

engine_command="$engine validate $dir"
ajv_command="$ajv validate --spec=draft2020 --validate-formats=false -s $root/schemas/connector.schema.json -d $dir/*.json"

# Both must accept every file: the benchmark measures the common CI case.
"$engine" validate "$dir"
# ajv-cli expands the quoted glob itself, as it gets it from hyperfine --shell=none.
valid="$("$ajv" validate --spec=draft2020 --validate-formats=false \
  -s "$root/schemas/connector.schema.json" -d "$dir/*.json" 2>&1 | grep -c ' valid$' || true)"
if [[ "$valid" -ne "$count" ]]; then
  echo "error: ajv-cli accepted $valid of $count files" >&2
  exit 1
fi
echo "ajv-cli: $valid files valid"

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$results"
hyperfine --shell=none --warmup 3 --runs "$runs" \
  --command-name "engine validate" "$engine_command" \
  --command-name "ajv-cli" "$ajv_command" \
  --export-json "$results/vs-ajv.json"

echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -f "$export_file" ]]; then
  hyperfine --shell=none --warmup 3 --runs "$runs" \
    --command-name "engine validate (1.8 MB export)" "$engine validate $export_file" \
    --export-json "$results/export.json"  # the export has warnings, not errors: it exits with 0
else
  echo "no \`$export_file\` (set EXPORT_FILE): skipping the large-export benchmark"
fi

[[ -f "$export_file" ]] || rm -f "$results/export.json"
python3 - "$results/vs-ajv.json" "$results/export.json" <<'PY'
import json, os, sys
runs = json.load(open(sys.argv[1]))["results"]
export = json.load(open(sys.argv[2]))["results"][0] if os.path.exists(sys.argv[2]) else None
engine, ajv = runs[0], runs[1]
ms = lambda result: f"{result['mean'] * 1000:.1f} ms ± {result['stddev'] * 1000:.1f} ms"
ratio = ajv["mean"] / engine["mean"]
verdict = lambda met: "met" if met else "NOT met"
print(f"engine validate: {ms(engine)} (median {engine['median'] * 1000:.1f} ms)")
print(f"ajv-cli:         {ms(ajv)} (median {ajv['median'] * 1000:.1f} ms)")
print(f"ajv-cli / engine = {ratio:.2f}x (target: at least 5x) -> {verdict(ratio >= 5)}")
print(f"engine, 1,000 files: {engine['mean'] * 1000:.1f} ms (target: at most 100 ms) -> {verdict(engine['mean'] <= 0.1)}")
if export:
    print(f"engine, 1.8 MB export: {ms(export)} (target: under 100 ms) -> {verdict(export['mean'] < 0.1)}")
PY
