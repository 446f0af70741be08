# Sourced by bench/hooks.sh and bench/hooks_instructions.sh after bench/demo_instance.sh: writes
# $work/hooked.json, connectors/demo.json with a connector-wide `preRequest` hook that sets the
# `Authorization` header from the configuration (what adpwfnSDF's does). Both send the same
# request.

python3 - connectors/demo.json "$work/hooked.json" <<'PY'
import json, sys
connector = json.load(open(sys.argv[1]))
connector.pop("$schema", None)
connector["hooks"] = [{
    "type": "preRequest", "mimeType": "application/javascript", "isLegacy": False,
    "body": "let Authorization = `Bearer ${configuration['access.token']}`;\n"
            "done({request_vendor_headers: {Authorization}});",
}]
json.dump(connector, open(sys.argv[2], "w"), indent=1)
PY
