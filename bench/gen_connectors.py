#!/usr/bin/env python3
"""Writes COUNT connector files of about 10 KB each into DIR, for bench/validate.sh.

Every file is valid (zero diagnostics): custom authentication with PROVISION AUTH VALIDATION and
ON REFRESH, a dozen configuration properties and a dozen API resources with path, query and
body parameters, templates and JSONPaths.
"""

import json
import os
import sys


def connector(index):
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
    for number, entity in enumerate(["contacts", "companies", "deals"]):
        resources += [
            {"name": f"list-{entity}", "type": "API", "method": "GET", "path": f"/hubs/crm/{entity}",
             "vendorPath": f"/accounts/${{configuration.account.id}}/{entity}", "rootKey": "$.data.items",
             "description": f"Lists {entity}, newest first",
             "parameters": [
                 {"name": "page", "type": "query", "vendorName": "page", "vendorType": "query", "dataType": "integer"},
                 {"name": "page.size", "type": "configuration", "vendorName": "limit", "vendorType": "query"},
                 {"name": "where", "type": "query", "vendorName": "filter", "vendorType": "query"}]},
            {"name": f"get-{entity}", "type": "API", "method": "GET", "path": f"/hubs/crm/{entity}/{{id}}",
             "vendorPath": f"/{entity}/{{{entity}Id}}", "parameters": [
                 {"name": "id", "type": "path", "vendorName": f"{entity}Id", "vendorType": "path", "required": True}]},
            {"name": f"create-{entity}", "type": "API", "method": "POST", "path": f"/hubs/crm/{entity}",
             "vendorMethod": "POST", "vendorPath": f"/{entity}", "parameters": [
                 {"name": "body", "type": "body", "vendorName": "body", "vendorType": "body",
                  "dataType": "object", "required": True},
                 {"name": "{{now}}", "type": "value", "vendorName": "X-Request-Time", "vendorType": "header"},
                 {"name": "id", "type": "bodyField", "vendorName": "$.data.id", "vendorType": "bodyField",
                  "source": "response"}]},
            {"name": f"delete-{entity}", "type": "API", "method": "DELETE", "path": f"/hubs/crm/{entity}/{{id}}",
             "vendorMethod": "DELETE", "vendorPath": f"/{entity}/{{id{number}}}", "parameters": [
                 {"name": "id", "type": "path", "vendorName": f"id{number}", "vendorType": "path", "required": True}]},
        ]
    return {
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


def main():
    directory, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    os.makedirs(directory, exist_ok=True)
    for index in range(count):
        with open(os.path.join(directory, f"connector-{index:04}.json"), "w") as file:
            json.dump(connector(index), file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
