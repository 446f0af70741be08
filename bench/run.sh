#!/usr/bin/env bash
# Benchmark: `engine run` as a whole process against curl making the same call, on loopback.
#
# Usage: bench/run.sh [RUNS]   (from anywhere; RUNS defaults to 100, at least 50)
#
# Builds the release `engine` and `vendor-emulator`, starts the emulator on a free port of
# 127.0.0.1, provisions an instance of connectors/demo.json (one run obtains a token that lives
# an hour), then times with hyperfine, warmup 5, no intermediate shell:
#   engine run connectors/demo.json get-contact --param id=c1 --config INSTANCE
#   curl -s -H "Authorization: Bearer TOKEN" URL/api/v1/contacts/c1
# and prints the ratio of the means (target, issue 11: engine within 1.2x of curl). The emulator is
# stopped and the work directory removed on exit. Installs hyperfine and curl with apt-get
# when they are missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-100}"
if ((runs < 50)); then
  echo "error: RUNS must be at least 50 (got $runs)" >&2
  exit 2
fi
cd "$root"

install_missing() {
  local missing=()
  command -v hyperfine >/dev/null || missing+=(hyperfine)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
install_missing

# shellcheck source=bench/demo_instance.sh
source bench/demo_instance.sh
token="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["access.token"])' "$instance")"

engine_cmd="$engine run connectors/demo.json get-contact --param id=c1 --config $instance"
curl_cmd="curl -s -f -H 'Authorization: Bearer $token' $url/api/v1/contacts/c1"

# Both must answer the same contact before anything is timed.
python3 - "$("$engine" run connectors/demo.json get-contact --param id=c1 --config "$instance")" \
  "$(curl -s -f -H "Authorization: Bearer $token" "$url/api/v1/contacts/c1")" <<'PY'
import json, sys
engine, curl = (json.loads(text) for text in sys.argv[1:])
assert engine == curl, f"engine gave {engine}, curl gave {curl}"
PY

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "vendor emulator on $url; $runs runs each, warmup 5"
hyperfine --shell=none --warmup 5 --runs "$runs" --export-json "$work/hyperfine.json" \
  --command-name "engine run" "$engine_cmd" \
  --command-name curl "$curl_cmd"

python3 - "$work/hyperfine.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
engine, curl = results["engine run"], results["curl"]
ms = lambda r: f'{r["mean"] * 1000:.2f} ms ± {r["stddev"] * 1000:.2f} ms'
ratio = engine["mean"] / curl["mean"]
print(f"engine run: {ms(engine)}")
print(f"curl:       {ms(curl)}")
print(f"engine run / curl = {ratio:.2f}x (target: within 1.2x) -> {'met' if ratio <= 1.2 else 'NOT met'}")
PY
