# Sourced by bench/run.sh and bench/hooks.sh (from the repository root): builds the release
# `engine` and `vendor-emulator`, starts the emulator on a free port of 127.0.0.1 (stopped, and
# the work directory removed, on exit), and provisions an instance of connectors/demo.json, so
# that every timed run finds a fresh token and makes exactly one request. Sets `engine`,
# `emulator_bin`, `work`, `url` and `instance`.

cargo build --release -p engine-cli -p engine-emulator
target="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
engine="$target/release/engine"
emulator_bin="$target/release/vendor-emulator"

work="$(mktemp -d)"
"$emulator_bin" --port 0 >"$work/emulator.out" &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 50); do
  grep -q '^listening on ' "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$work/emulator.out")"
[[ -n "$url" ]] || { echo "error: the vendor emulator did not start" >&2; exit 1; }

instance="$work/instance.json"
printf '{"base.url": "%s", "client.id": "demo-client", "client.secret": "demo-secret"}\n' \
  "$url" >"$instance"
chmod 600 "$instance"
# The first run provisions (PROVISION AUTH VALIDATION, then the call).
"$engine" run connectors/demo.json get-contact --param id=c1 --config "$instance" >/dev/null
