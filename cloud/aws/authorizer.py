"""The API Gateway TOKEN authorizer that lets OpenAI clients send their key the OpenAI way.

API Gateway meters usage plans by API key, normally read from `x-api-key`. With the REST API's key
source set to AUTHORIZER, this function hands API Gateway the key from `Authorization: Bearer <key>`
(`usageIdentifierKey`); API Gateway then checks that the key exists, is enabled and belongs to a usage
plan of the stage (403 otherwise) and applies that plan's throttle and quota. It decides nothing else:
the tier is mapped from the key by the router handler.

Standard library only: it is the one zip function and its package is a few kilobytes.
"""

from __future__ import annotations

import hashlib
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Allow the whole API for this key; API Gateway validates the key against its usage plans."""
    scheme, _, rest = str(event.get("authorizationToken") or "").strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else scheme
    if not token:
        raise Exception("Unauthorized")  # API Gateway's own 401: the exact message is the contract
    # arn:aws:execute-api:region:account:api-id/stage/METHOD/path -> every method and path of the stage,
    # so that one cached answer (per key, for the authorizer's TTL) serves every route.
    arn = str(event.get("methodArn", ""))
    api, _, rest = arn.partition("/")
    stage = rest.split("/", 1)[0] if rest else "*"
    statement = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{api}/{stage}/*"}
    return {
        # a digest, not the key: the principal id lands in access logs
        "principalId": "key-" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16],
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "usageIdentifierKey": token,
    }
