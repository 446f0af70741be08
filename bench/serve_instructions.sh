#!/usr/bin/env bash
# Instructions per call proxied by `engine serve` (issue 20, docs/BENCHMARKS.md "engine serve: a
# proxied call"): the server runs under callgrind on a SQLite store with one instance of
# connectors/demo.json (the vendor emulator behind it, the token fresh); after WARMUP (50) calls
# its counters are zeroed, COUNT (1,000) calls of `GET /v1/instances/acme/resources/get-contact`
# are made (oha, 4 connections) and the counters dumped: the total over COUNT is the server's
# instructions per call, every thread included (the store's blocking pool too), a figure the
# machine's load does not move; and the allocations per call (calls into mimalloc, reallocations
# included). The top functions, inclusive, go to target/bench/serve-cg/.
#
# Usage: bench/serve_instructions.sh   [COUNT=1000] [ENGINE=target/release/engine]
#                                      [SERVE_ARGS="more serve arguments", e.g. "--state-cache 0"]
# Needs valgrind (`apt-get install -y valgrind`) and oha. Builds nothing: `cargo build --release
# -p engine-cli -p engine-emulator` first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
count="${COUNT:-1000}"
engine="${ENGINE:-target/release/engine}"
work="$root/target/bench/serve-cg"
rm -rf "$work" && mkdir -p "$work"

# shellcheck source=bench/serve_common.sh
source "$root/bench/serve_common.sh"
start_emulator
import_acme
# shellcheck disable=SC2086 # SERVE_ARGS: words
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$engine" serve --store "$store" --connectors connectors --listen 127.0.0.1:0 --rate 1000000/s \
  ${SERVE_ARGS:-} 2>"$work/serve.err" &
server=$!
pids+=("$server")
serve="$(listening "$work/serve.err")"
[[ -n "$serve" ]] || { echo "error: engine serve did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
url="$serve/v1/instances/acme/resources/get-contact?id=c1"
calls() { oha --no-tui --output-format json -n "$1" -c 4 -H "Authorization: Bearer $key" "$url" >"$work/oha.json"; }
calls "${WARMUP:-50}"
callgrind_control -z "$server" >/dev/null 2>&1
calls "$count"
callgrind_control -d "$server" >/dev/null 2>&1
python3 -c 'import json, sys; codes = json.load(open(sys.argv[1]))["statusCodeDistribution"]; assert set(codes) == {"200"}, codes' "$work/oha.json"
kill -INT "$server"
wait "$server" 2>/dev/null || true
dump="$(ls "$work"/callgrind.out.* | head -1)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | cut -c1-220 >"$work/inclusive.txt"
total="$(sed -n 's/^\([0-9,]*\).*PROGRAM TOTALS.*/\1/p' "$work/inclusive.txt" | tr -d ,)"
# Allocations: the calls into mimalloc (the binary's allocator) that callgrind counted.
allocations="$(python3 - "$dump" <<'PY'
import re, sys
# Function names are compressed: `(id) name` the first time, in a `fn=` or `cfn=` line, then
# `(id)` alone; a `calls=` line counts the calls of the `cfn=` before it.
names, current, total = {}, None, 0
for line in open(sys.argv[1]):
    named = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if named:
        callee, number, name = named.groups()
        if name:
            names[number] = name
        if callee:
            current = names.get(number)
    elif current in ("mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"):
        calls = re.match(r"calls=(\d+) ", line)
        total += int(calls.group(1)) if calls else 0
print(total)
PY
)"
echo "$engine ${SERVE_ARGS:-}: $((total / count)) instructions and $((allocations / count)) allocations per call ($count calls; functions: $work/inclusive.txt)"
