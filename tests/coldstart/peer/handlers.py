"""The Python peer of the cold-start benchmark: boto3 handlers under awslambdaric doing
what two of our functions do for the benchmark's events, so that both run side by side
under the same emulator on the same machine.

- `eligibility`: submit-query's `GET /v1/eligibility`: the caller's profile (users
  table) and state (main table, consistent read), the same two DynamoDB reads, the same
  response body. It trusts the authorizer's `sub` and does not verify the bearer token
  as our function does, so it does less work than ours: the ratio is conservative.
- `stream`: aggregate-report's stream batch: each record's query (one consistent
  GetItem) and a partial-batch response.
"""

import json
import os
from datetime import datetime, timezone

import boto3

# Created at init, as a Lambda handler module does, so that init pays for boto3.
_DYNAMODB = boto3.client("dynamodb")
_MAIN = os.environ["TABLE_NAME"]
_USERS = os.environ["USERS_TABLE_NAME"]
with open(os.environ["SERVICE_CONFIG"], encoding="utf-8") as f:
    _CONFIG = json.load(f)
_PILOT = {r["code"] for r in _CONFIG["regions"]}


def _s(item, name):
    v = item.get(name)
    return v.get("S") if v else None


def eligibility(event, _context):
    user = event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"]
    profile = _DYNAMODB.get_item(TableName=_USERS, Key={"user_id": {"S": user}}).get("Item")
    state = _DYNAMODB.get_item(
        TableName=_MAIN,
        Key={"pk": {"S": "USER#" + user}, "sk": {"S": "STATE"}},
        ConsistentRead=True,
    ).get("Item", {})
    real_name = bool(profile and profile.get("real_name_verified", {}).get("BOOL"))
    in_pilot = bool(profile and _s(profile, "region") in _PILOT)
    active = _s(state, "active_query_id")
    next_allowed = _s(state, "next_allowed_at")
    if next_allowed and datetime.fromisoformat(next_allowed) <= datetime.now(timezone.utc):
        next_allowed = None
    body = {
        "real_name_verified": real_name,
        "in_pilot_region": in_pilot,
        "active_query_id": active,
        "next_allowed_at": next_allowed,
        "eligible": real_name and in_pilot and not active and not next_allowed,
        "agreement_version": _CONFIG["agreement_version"],
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def stream(event, _context):
    failures = []
    for record in event.get("Records", []):
        query_id = record["dynamodb"].get("NewImage", {}).get("query_id", {}).get("S")
        if not query_id:
            continue
        try:
            _DYNAMODB.get_item(
                TableName=_MAIN,
                Key={"pk": {"S": "QUERY#" + query_id}, "sk": {"S": "QUERY"}},
                ConsistentRead=True,
            )
        except Exception:  # noqa: BLE001 - a failed record is retried alone
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
    return {"batchItemFailures": failures}
