#!/usr/bin/env python3
"""Writes COUNT connector files of about SIZE bytes each into DIR, for the validate benchmarks.

Usage: gen_connectors.py DIR [COUNT] [--size BYTES]   (COUNT 1000, SIZE 16384 by default)

Every file is valid (`engine validate` reports no problem): custom authentication with PROVISION
AUTH VALIDATION, ON REFRESH and ON PROVISION, nine configuration properties, global parameters,
then API resources (list, get, create, delete per entity) added until the file reaches SIZE.
Every resource has templates and JSONPaths: `${configuration.KEY}` in its `vendorPath`, a
handlebars `{{...}}` header value, and a JSONPath (`rootKey` or a response `bodyField`). About
half of the template and JSONPath texts are the same in every file (as in real exports); the
others carry the file's number, so no two files are the same.
"""

import argparse
import json
import os

ENTITIES = [
    "contacts", "companies", "deals", "tickets", "notes", "tasks", "calls", "meetings",
    "products", "quotes", "invoices", "orders", "payments", "accounts", "leads", "campaigns",
    "users", "teams", "files", "folders", "events", "projects", "issues", "comments",
]


def entity_resources(index, number, entity):
    """The four API resources of one entity; each has templates and a JSONPath."""
    version = f"v{index % 7 + 1}"
    request_id = {"name": f"bench-{index:04}-{{{{now}}}}", "type": "value",
                  "vendorName": "X-Request-Id", "vendorType": "header"}
    return [
        {"name": f"list-{entity}", "type": "API", "method": "GET", "path": f"/hubs/crm/{entity}",
         "vendorPath": f"/{version}/accounts/${{configuration.account.id}}/{entity}",
         "rootKey": f"$.data.{entity}[*]",
         "description": f"Lists {entity}, newest first",
         "parameters": [
             {"name": "page", "type": "query", "vendorName": "page", "vendorType": "query", "dataType": "integer"},
             {"name": "page.size", "type": "configuration", "vendorName": "limit", "vendorType": "query"},
             {"name": "where", "type": "query", "vendorName": "filter", "vendorType": "query"},
             {"name": "{{urlencode configuration.region}}", "type": "value", "vendorName": "X-Region",
              "vendorType": "header"},
             request_id]},
        {"name": f"get-{entity}", "type": "API", "method": "GET", "path": f"/hubs/crm/{entity}/{{id}}",
         "vendorPath": f"/{version}/accounts/${{configuration.account.id}}/{entity}/{{{entity}Id}}",
         "rootKey": "$.data",
         "parameters": [
             {"name": "id", "type": "path", "vendorName": f"{entity}Id", "vendorType": "path", "required": True},
             {"name": "{{now}}", "type": "value", "vendorName": "X-Request-Time", "vendorType": "header"}]},
        {"name": f"create-{entity}", "type": "API", "method": "POST", "path": f"/hubs/crm/{entity}",
         "vendorMethod": "POST", "vendorPath": f"/${{configuration.region}}/{version}/{entity}",
         "parameters": [
             {"name": "body", "type": "body", "vendorName": "body", "vendorType": "body",
              "dataType": "object", "required": True},
             {"name": "{{now}}", "type": "value", "vendorName": "X-Request-Time", "vendorType": "header"},
             {"name": "id", "type": "bodyField", "vendorName": f"$.data.{entity}[0].id",
              "vendorType": "bodyField", "source": "response"}]},
        {"name": f"delete-{entity}", "type": "API", "method": "DELETE", "path": f"/hubs/crm/{entity}/{{id}}",
         "vendorMethod": "DELETE",
         "vendorPath": f"/{version}/accounts/${{configuration.account.id}}/{entity}/{{id{number}}}",
         "parameters": [
             {"name": "id", "type": "path", "vendorName": f"id{number}", "vendorType": "path", "required": True},
             request_id,
             {"name": "status", "type": "bodyField", "vendorName": "$.status",
              "vendorType": "bodyField", "source": "response"}]},
    ]


def connector(index, size):
    key = f"bench-{index:04}"
    configuration = [
        {"key": "base.url", "name": "API base URL", "type": "TEXTFIELD_1000",
         "defaultValue": f"https://api{index}.example.com/v1", "required": True},
        {"key": "oauth.api.key", "name": "Client id", "type": "TEXTFIELD_256", "required": True},
        {"key": "oauth.api.secret", "name": "Client secret", "type": "PASSWORD", "required": True},
        {"key": "oauth.user.token", "type": "TEXTFIELD_1000", "internal": True, "hideFromConsole": True},
        {"key": "expires_in", "type": "TEXTFIELD_32", "internal": True},
        {"key": "authentication.time", "type": "TEXTFIELD_32", "internal": True},
        {"key": "account.id", "type": "TEXTFIELD_64", "internal": True},
        {"key": "page.size", "type": "NUMBER", "defaultValue": 100},
        {"key": "region", "type": "COMBO", "defaultValue": "eu", "options": ["eu", "us"]},
    ]
    token_parameters = [
        {"name": "client_credentials", "type": "value", "vendorName": "grant_type", "vendorType": "form"},
        {"name": "oauth.api.key", "type": "configuration", "vendorName": "client_id", "vendorType": "form"},
        {"name": "oauth.api.secret", "type": "configuration", "vendorName": "client_secret", "vendorType": "form"},
        {"name": "oauth.user.token", "type": "configuration", "vendorName": "$.data.access_token",
         "vendorType": "bodyField", "source": "response"},
        {"name": "expires_in", "type": "configuration", "vendorName": "expires_in",
         "vendorType": "bodyField", "source": "response"},
    ]
    resources = [
        {"type": "PROVISION AUTH VALIDATION", "vendorMethod": "POST", "vendorPath": "/oauth/token",
         "nextResource": "load-account", "parameters": token_parameters},
        {"type": "ON REFRESH", "vendorMethod": "POST", "vendorPath": "/oauth/token",
         "parameters": token_parameters},
        {"name": "load-account", "type": "ON PROVISION", "vendorPath": "/me", "parameters": [
            {"name": "account.id", "type": "configuration", "vendorName": "account.id",
             "vendorType": "bodyField", "source": "response"}]},
    ]
    document = {
        "$schema": "../../../../schemas/connector.schema.json",
        "name": f"Bench {index}",
        "key": key,
        "description": "A generated connector for the validate benchmark",
        "authentication": {"type": "custom"},
        "session": {"management": "auto", "skew": 60},
        "configuration": configuration,
        "parameters": [
            {"name": "Bearer ${configuration.oauth.user.token}", "type": "value",
             "vendorName": "Authorization", "vendorType": "header"},
            {"name": "application/json", "type": "value", "vendorName": "Accept", "vendorType": "header"},
        ],
        "resources": resources,
    }
    # Add entities until the file is as close to SIZE as whole entities allow (at least one).
    before = len(render(document))
    for number in range(len(ENTITIES) * 100):
        entity = ENTITIES[number % len(ENTITIES)] + ("" if number < len(ENTITIES) else str(number))
        added = entity_resources(index, number, entity)
        resources += added
        after = len(render(document))
        if after >= size:
            if number > 0 and after - size > size - before:
                del resources[-len(added):]
            break
        before = after
    return document


def render(document):
    return json.dumps(document, indent=2) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("count", nargs="?", type=int, default=1000)
    parser.add_argument("--size", type=int, default=16384, help="bytes per file, about")
    args = parser.parse_args()
    os.makedirs(args.directory, exist_ok=True)
    for index in range(args.count):
        with open(os.path.join(args.directory, f"connector-{index:04}.json"), "w") as file:
            file.write(render(connector(index, args.size)))


if __name__ == "__main__":
    main()
