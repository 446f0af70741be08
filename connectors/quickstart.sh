#!/usr/bin/env bash
# The 60-second tour, offline: starts the project's vendor emulator on 127.0.0.1 and runs
# connectors/demo.json against it through the whole token lifecycle (provision, call, expiry,
# refresh, a token the vendor revoked early: 401, refresh, retry). Every step prints what the
# engine did (-v on stderr) and the vendor's answer (stdout).
set -euo pipefail
cd "$(dirname "$0")/.."

# Colour only on a terminal; NO_COLOR turns it off, CLICOLOR_FORCE (not 0) on.
if [ -n "${NO_COLOR:-}" ]; then
  bold='' plain=''
elif [ -t 1 ] || { [ -n "${CLICOLOR_FORCE:-}" ] && [ "${CLICOLOR_FORCE}" != 0 ]; }; then
  bold=$'\033[1m' plain=$'\033[0m'
else
  bold='' plain=''
fi

echo "building engine and vendor-emulator (release; the first build takes a few minutes)"
# The whole engine, every instance store included: the one build every command after the tour
# uses (`target/release/engine`), the `sqlite:` and `postgres://` stores too.
cargo build --release --locked -p engine-cli -p engine-emulator
# Wherever cargo puts its output (CARGO_TARGET_DIR, .cargo/config.toml): ask it.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
engine="$target_dir/release/engine"
emulator_bin="$target_dir/release/vendor-emulator"
for binary in "$engine" "$emulator_bin"; do
  [ -x "$binary" ] || { echo "error: \`$binary\` is missing after the build" >&2; exit 1; }
done
work=$(mktemp -d)
"$emulator_bin" --port 0 --token-ttl 4 >"$work/emulator.out" &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 50); do
  grep -q '^listening on ' "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/emulator.out")
[ -n "$url" ] || {
  echo "error: the vendor emulator (\`$emulator_bin\`) did not start; its output:" >&2
  cat "$work/emulator.out" >&2
  exit 1
}

instance="$work/instance.json"
cat >"$instance" <<JSON
{"base.url": "$url", "client.id": "demo-client", "client.secret": "demo-secret"}
JSON

step() { printf '\n%s== %s%s\n$ %s\n' "$bold" "$1" "$plain" "${*:2}"; "${@:2}"; }

echo "vendor emulator on $url (tokens live 4 s); instance file $instance"
step "1. validate the connector" "$engine" validate connectors/demo.json
step "2. first call: the instance is provisioned first" \
  "$engine" run connectors/demo.json list-contacts --config "$instance" --param limit=2 -v
step "3. the token is fresh: straight to the call" \
  "$engine" run connectors/demo.json GET:/contacts/c3 --config "$instance" -v
printf '\n(waiting 4 s for the token to expire)\n'
sleep 4
step "4. expired: ON REFRESH first, then the call" \
  "$engine" run connectors/demo.json me --config "$instance" -v
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('$url/_admin/expire', method='POST'))"
step "5. the vendor revoked the token early: 401, one refresh, one retry" \
  "$engine" run connectors/demo.json me --config "$instance" -v
step "6. what the next call would send (secrets masked)" \
  "$engine" run connectors/demo.json list-contacts --config "$instance" --dry-run
printf '\n%s== 7. the instance file keeps every token the runs obtained (values not shown)%s\n' "$bold" "$plain"
python3 -c "import json,sys; print(', '.join(json.load(open(sys.argv[1]))))" "$instance"
python3 - "$url/_stats" <<'PY'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1]))
grants = s["client_credentials_grants"] + s["password_grants"]
print(f"vendor saw: {s['token_requests']} token requests ({grants} grants, {s['refresh_grants']} refreshes), "
      f"{s['api_calls']} API calls ({s['api_unauthorized']} refused with 401)")
PY
e=${engine#"$PWD"/}
cat <<NEXT

${bold}Next${plain}
  $e new acme --auth custom          write your own connector and an instance file to fill in
  $e validate acme.json              check it (\`$e explain CODE\` tells more about a finding)
  $e run acme.json RESOURCE --config acme.instance.json -v
  $e status acme.json --config acme.instance.json    when its token expires
  README.md (Commands), docs/connector-format.md and docs/running.md have the rest.
NEXT

