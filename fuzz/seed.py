#!/usr/bin/env python3
"""Fills fuzz/corpus/<target>/ with seeds taken from tests/fixtures (run from anywhere).

validate: every JSON file under tests/fixtures and connectors/, as it is (files over 1 MB are
skipped: libFuzzer caps inputs at -max_len anyway). template: every string of those files that
holds a `${`, `{{`, `{` or `CE.`, once as text (first byte 0) and once as a URL (first byte 1).
jsonpath: every `rootKey` and response `vendorName`, each with a small sample document. state:
the instance files and configuration objects of tests/fixtures.
"""
import hashlib
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"


def save(target, data):
    directory = corpus / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def strings(value, key=None):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v, key)
    elif isinstance(value, str):
        yield key, value


sample = json.dumps({"access_token": "t", "data": {"items": [{"id": 1}, {"id": 2, "a": [1, {"b": 2}]}]}})
files = sorted(root.glob("tests/fixtures/**/*.json")) + sorted(root.glob("connectors/*.json"))
for path in files:
    data = path.read_bytes()
    if len(data) <= 1_000_000:
        save("validate", data)
    try:
        document = json.loads(data)
    except ValueError:
        continue
    if isinstance(document, dict) and "resources" not in document:
        save("state", data)
    for key, text in strings(document):
        if len(text) > 4096:
            continue
        if any(marker in text for marker in ("${", "{{", "{", "CE.")):
            save("template", b"\x00" + text.encode())
            save("template", b"\x01" + text.encode())
        if key in ("rootKey", "vendorName") and text:
            save("jsonpath", (text + "\n" + sample).encode())
for path in ("$..*", "$.data.items[*].id", "$..id", "$[?@.id > 1]", ".data.items[0]", "data.items.1.id"):
    save("jsonpath", (path + "\n" + sample).encode())
save("state", b'{"base.url": "http://127.0.0.1:9", "oauth.user.token": "t", "expires_in": 3600}\n')
for target in sorted(p.name for p in corpus.iterdir()):
    print(target, len(list((corpus / target).iterdir())), "seeds")
