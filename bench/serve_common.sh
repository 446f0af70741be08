# Shared by bench/serve.sh and bench/serve_instructions.sh (sourced, not run): the processes
# they start, ended on exit; the vendor emulator; a SQLite store with the instance `acme` of
# connectors/demo.json. Expects `work` (a fresh directory) and `engine` to be set; `binaries`
# (target/release when unset) is where the emulator is.

pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done' EXIT

# Waits (up to a minute) for FILE's `listening on URL` line and prints URL.
listening() {
  for _ in $(seq 600); do
    grep -q 'listening on ' "$1" 2>/dev/null && break
    sleep 0.1
  done
  sed -n 's/.*listening on //p' "$1" | head -1
}

# Starts the vendor emulator: sets `emulator` to its URL.
start_emulator() {
  "${binaries:-target/release}/vendor-emulator" --port 0 >"$work/emulator.out" &
  pids+=($!)
  emulator="$(listening "$work/emulator.out")"
  [[ -n "$emulator" ]] || { echo "error: the vendor emulator did not start" >&2; exit 1; }
}

# Imports `acme` (the emulator's client credentials, no token yet) into a new SQLite store
# under `work`, encrypted with a new key, and creates the API key `bench` (scope `resources`):
# sets `store` and `key`, and exports ENGINE_SECRET_KEY.
import_acme() {
  export ENGINE_SECRET_KEY="k1:$(head -c 32 /dev/urandom | base64)"
  store="sqlite:$work/instances.db"
  printf '{"base.url": "%s", "client.id": "demo-client", "client.secret": "demo-secret"}\n' \
    "$emulator" >"$work/acme.json"
  "$engine" instances import "$work/acme.json" --connector demo --store "$store" 2>/dev/null
  key="$("$engine" keys create bench --scope resources --store "$store" 2>/dev/null)"
}
