"""CloudTrail event history of the emulator's AMI and snapshot sharing calls, and LookupEvents to read it.

Stock moto 5.2.5 has a CloudTrail backend (trails) but no LookupEvents: the action answers HTTP 500
("The lookup_events action has not been implemented"). This module adds it to moto's CloudTrail response
class and records the events it returns.

Recording
---------
Every successful (HTTP 200; not throttled, not refused) EC2 request of ModifyImageAttribute,
ResetImageAttribute, ModifySnapshotAttribute and ResetSnapshotAttribute is recorded as a management event
in the event history of the request's account (from its access key) and Region (from its SigV4 scope):
"CloudTrail event history provides a viewable, searchable, downloadable, and immutable record of the past
90 days of recorded management events in an AWS Region" (CloudTrail User Guide, "Working with CloudTrail
event history"). Whoever makes the call: amictl, a test's boto3, and the emulator's own boto3 calls
through /_amictl/call (they reach the emulator over HTTP like any client). The history lives in moto's
CloudTrail backend of that account and Region, so `POST /moto-api/reset` clears it with the rest of the
state.

An event, as LookupEvents answers it (CloudTrail API Reference, data type Event): EventId (a UUID),
EventName, ReadOnly "false", AccessKeyId (the key that signed the request), EventTime (whole seconds),
EventSource "ec2.amazonaws.com", Username (IAM user name; for an assumed role the role session name; moto's
default identity is the IAM user `moto`, as its GetCallerIdentity says), Resources [{ResourceType
"AWS::EC2::Ami" | "AWS::EC2::Snapshot", ResourceName: the image or snapshot id}], CloudTrailEvent: the record
as a JSON string (CloudTrail User Guide, "CloudTrail record contents": eventVersion "1.11" (the current
version), userIdentity, eventTime, eventSource, eventName, awsRegion, sourceIPAddress, userAgent,
requestParameters, responseElements, requestID, eventID, readOnly, eventType "AwsApiCall", managementEvent,
recipientAccountId, eventCategory "Management"). requestParameters as EC2 writes them for these calls:
`{"imageId", "attributeType": "launchPermission", "launchPermission": {"add"|"remove": {"items": [{"userId"}
| {"group": "all"} | {"organizationArn"} | {"organizationalUnitArn"}]}}}` (a description change:
`"description": {"value"}`, attributeType "description"), `{"snapshotId", "attributeType":
"CREATE_VOLUME_PERMISSION", "createVolumePermission": {"add"|"remove": {"items": [...]}}}`; for the Reset
actions `{"imageId" | "snapshotId", "attribute": the Attribute parameter}` (no AWS page shows a Reset
event's parameters; the names follow the request's). Both the structured form
(LaunchPermission.Add.N.UserId) and the older one (Attribute, OperationType, UserId.N, UserGroup.N) of the
Modify requests are understood. requestID is a fresh UUID, not the one moto put in its answer.

The sharing calls themselves: stock moto answers ResetImageAttribute and ResetSnapshotAttribute with HTTP
500 and ignores ModifySnapshotAttribute's structured form (CreateVolumePermission.Add.N, which boto3 sends);
this module implements them (EC2 API Reference: ResetImageAttribute "Resets an attribute of an AMI to its
default value", only launchPermission; ResetSnapshotAttribute "Resets permission settings for the specified
snapshot", only createVolumePermission; anything else InvalidParameterValue).

Delivery delay
--------------
"CloudTrail typically delivers logs within an average of about 5 minutes of an API call. This time is not
guaranteed." (CloudTrail User Guide, "Getting and viewing your CloudTrail log files"). An event becomes
visible to LookupEvents `delay` seconds after the call (`POST /_amictl/cloudtrail/delay {"seconds": N}`,
fixed for each event when it is recorded). The default is 0 so that tests are deterministic; a test of
amictl's patience sets it.

LookupEvents (CloudTrail API Reference, LookupEvents; JSON 1.1, X-Amz-Target
`com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`)
-------------------------------------------------------------------------------------------------
* the events of the caller's account in the Region of the endpoint, "The events list is sorted by time.
  The most recent event is listed first.", within "the last 90 days";
* LookupAttributes: "Currently the list can contain only one item" (more: InvalidLookupAttributesException);
  AttributeKey one of EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource,
  AccessKeyId (another: InvalidLookupAttributesException), the value matched exactly;
* StartTime: "only events that occur after or at the specified time"; EndTime: "before or at"; a start
  after the end: InvalidTimeRangeException;
* MaxResults: "Possible values are 1 through 50. The default is 50." (else InvalidMaxResultsException);
* NextToken: "This token must be passed in with the same parameters that were specified in the original
  call" (else, or an unknown token: InvalidNextTokenException). A page continues after the last event of
  the previous one, so events that arrive meanwhile do not shift it;
* EventCategory `insight` returns no events (there are no Insights events); another value:
  InvalidEventCategoryException;
* errors are CloudTrail's JSON errors, HTTP 400 ({"__type", "message"});
* rate: "limited to two per second, per account, per Region" — enforced by module rate_limits when the AWS
  rate limits are on (ThrottlingException);
* permission: `POST /_amictl/cloudtrail/deny {"account", "deny": true|false}` makes LookupEvents of that
  account answer AccessDeniedException ("You do not have sufficient access to perform this action.", HTTP
  400, AWS Common Errors), as AWS does for an identity without cloudtrail:LookupEvents.

Control endpoints (module `control`)
------------------------------------
    GET|POST /_amictl/cloudtrail/delay   {"seconds": N} -> {"seconds"}
    POST     /_amictl/cloudtrail/events  {"account", "region"} -> {"events": [...]}: everything recorded,
                                         oldest first, delivered or not (each with "VisibleAt"), EventTime
                                         as ISO 8601
    GET|POST /_amictl/cloudtrail/deny    {"account", "deny": true|false} -> {"denied": [accounts]}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

from moto.core.exceptions import JsonRESTError

DEFAULT_ACCOUNT = "123456789012"
EVENT_VERSION = "1.11"
RETENTION = timedelta(days=90)
MAX_RESULTS = 50
LOOKUP_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
# EC2 action -> (resource type, request parameter of the id, its name in requestParameters)
RECORDED = {
    "ModifyImageAttribute": ("AWS::EC2::Ami", "ImageId", "imageId"),
    "ResetImageAttribute": ("AWS::EC2::Ami", "ImageId", "imageId"),
    "ModifySnapshotAttribute": ("AWS::EC2::Snapshot", "SnapshotId", "snapshotId"),
    "ResetSnapshotAttribute": ("AWS::EC2::Snapshot", "SnapshotId", "snapshotId"),
}
PERMISSION_FIELDS = {
    "UserId": "userId",
    "Group": "group",
    "UserGroup": "group",
    "OrganizationArn": "organizationArn",
    "OrganizationalUnitArn": "organizationalUnitArn",
}


class CloudTrailError(JsonRESTError):
    code = 400

    def __init__(self, error_type, message):
        super().__init__(error_type, message)


class Trail:
    """The recording switches and the lock over every account's event history."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delay = 0.0
        self.denied = set()
        self.seq = 0
        self.identities = {}  # access key id -> (userIdentity, Username)

    # -- control --------------------------------------------------------------------------------------------

    def set_delay(self, seconds):
        seconds = float(seconds or 0)
        if not 0 <= seconds <= 86_400:
            raise ValueError("delay must be between 0 and 86400 seconds")
        with self.lock:
            self.delay = seconds
        return {"seconds": seconds}

    def set_denied(self, body):
        account = str(body.get("account") or DEFAULT_ACCOUNT)
        with self.lock:
            if body.get("deny", True):
                self.denied.add(account)
            else:
                self.denied.discard(account)
        return self.denied_config()

    def denied_config(self):
        with self.lock:
            return {"denied": sorted(self.denied)}

    def recorded(self, account, region):
        with self.lock:
            events = list(_history(account, region))
        return {"events": [_public(e, iso=True) | {"VisibleAt": _iso(e["visible_at"])} for e in events]}

    # -- recording ------------------------------------------------------------------------------------------

    def watch(self, environ, action, body, start_response):
        """`start_response`, wrapped so that a successful request of a recorded action is recorded."""
        if action not in RECORDED:
            return start_response
        scope = _credential_scope(environ).split("/")
        if len(scope) < 5 or scope[3] != "ec2":
            return start_response

        def recording_start_response(status, headers, exc_info=None):
            if str(status).startswith("200"):
                self.record(environ, action, body, scope[0], scope[2])
            return start_response(status, headers, exc_info)

        return recording_start_response

    def record(self, environ, action, body, key, region):
        from moto.iam.models import get_account_id_from

        account = get_account_id_from(key)
        identity, username = self._identity(account, key)
        params = {k: v[0] for k, v in parse_qs((body or b"").decode("utf-8", "replace")).items()}
        resource_type, id_param, id_name = RECORDED[action]
        resource_id = params.get(id_param, "")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        event_id = str(uuid.uuid4())
        request_id = str(uuid.uuid4())
        record = {
            "eventVersion": EVENT_VERSION,
            "userIdentity": identity,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "ec2.amazonaws.com",
            "eventName": action,
            "awsRegion": region,
            "sourceIPAddress": environ.get("REMOTE_ADDR", "127.0.0.1"),
            "userAgent": environ.get("HTTP_USER_AGENT", ""),
            "requestParameters": _request_parameters(action, params, id_name, resource_id),
            "responseElements": {"requestId": request_id, "_return": True},
            "requestID": request_id,
            "eventID": event_id,
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": account,
            "eventCategory": "Management",
        }
        event = {
            "EventId": event_id,
            "EventName": action,
            "ReadOnly": "false",
            "AccessKeyId": key,
            "EventTime": now,
            "EventSource": "ec2.amazonaws.com",
            "Username": username,
            "Resources": [{"ResourceType": resource_type, "ResourceName": resource_id}],
            "CloudTrailEvent": json.dumps(record),
        }
        with self.lock:
            self.seq += 1
            event["seq"] = self.seq
            event["visible_at"] = time.time() + self.delay
            _history(account, region).append(event)

    def _identity(self, account, key):
        """(userIdentity, Username) of an access key, as moto's STS GetCallerIdentity sees it."""
        known = self.identities.get(key)
        if known is not None:
            return known
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        role = sts_backends[account]["aws"].get_assumed_role_from_access_key(key)
        if role is not None:
            principal = role.user_id
            role_name = role.role_arn.split("/")[-1]
            identity = {
                "type": "AssumedRole",
                "principalId": principal,
                "arn": role.arn,
                "accountId": account,
                "accessKeyId": key,
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": principal.split(":")[0],
                        "arn": role.role_arn,
                        "accountId": account,
                        "userName": role_name,
                    },
                    "attributes": {"creationDate": _iso(time.time()), "mfaAuthenticated": "false"},
                },
            }
            known = (identity, role.session_name)
        else:
            user = iam_backends[account]["aws"].get_user_from_access_key_id(key)
            name = user.name if user else "moto"
            identity = {
                "type": "IAMUser",
                "principalId": user.id if user else "AKIAIOSFODNN7EXAMPLE",
                "arn": user.arn if user else f"arn:aws:iam::{account}:user/moto",
                "accountId": account,
                "accessKeyId": key,
                "userName": name,
            }
            known = (identity, name)
        if len(self.identities) > 100_000:
            self.identities.clear()
        self.identities[key] = known
        return known

    # -- LookupEvents ---------------------------------------------------------------------------------------

    def lookup(self, account, region, key, body):
        if account in self.denied:
            arn = self._identity(account, key)[0]["arn"] if key else f"arn:aws:iam::{account}:root"
            raise CloudTrailError(
                "AccessDeniedException",
                f"User: {arn} is not authorized to perform: cloudtrail:LookupEvents because no "
                "identity-based policy allows the cloudtrail:LookupEvents action",
            )
        attributes = body.get("LookupAttributes") or []
        if not isinstance(attributes, list) or len(attributes) > 1:
            raise CloudTrailError(
                "InvalidLookupAttributesException", "You cannot specify more than one lookup attribute."
            )
        attribute = None
        if attributes:
            if not isinstance(attributes[0], dict):
                raise CloudTrailError("InvalidLookupAttributesException", "Lookup attribute is not valid.")
            name, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
            if name not in LOOKUP_KEYS:
                raise CloudTrailError(
                    "InvalidLookupAttributesException", f"Lookup attribute key {name!r} is not valid."
                )
            if not isinstance(value, str) or not value or len(value) > 2000:
                raise CloudTrailError("InvalidLookupAttributesException", "Lookup attribute value is not valid.")
            attribute = (name, value)
        start, end = _time(body.get("StartTime")), _time(body.get("EndTime"))
        if start is not None and end is not None and start > end:
            raise CloudTrailError("InvalidTimeRangeException", "Start time must be before or equal to end time.")
        max_results = body.get("MaxResults")
        if max_results is None:
            max_results = MAX_RESULTS
        if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= MAX_RESULTS:
            raise CloudTrailError(
                "InvalidMaxResultsException",
                f"A max results value of {max_results} is invalid. Specify max results between 1 and 50.",
            )
        category = body.get("EventCategory")
        if category is not None and category != "insight":
            raise CloudTrailError("InvalidEventCategoryException", f"Event category {category!r} is not valid.")
        query = hashlib.sha256(
            json.dumps([attribute, start and start.timestamp(), end and end.timestamp(), category]).encode()
        ).hexdigest()[:16]
        after = None
        token = body.get("NextToken")
        if token is not None:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                after, token_query = int(decoded["after"]), decoded["query"]
            except Exception:
                raise CloudTrailError("InvalidNextTokenException", "Invalid NextToken.") from None
            if token_query != query:
                raise CloudTrailError(
                    "InvalidNextTokenException",
                    "The NextToken was used with parameters other than those of the call that returned it.",
                )
        if category == "insight":
            return {"Events": []}
        now = time.time()
        oldest = datetime.now(timezone.utc) - RETENTION
        with self.lock:
            history = list(_history(account, region))
        page = []
        more = False
        for event in reversed(history):  # newest first
            if event["visible_at"] > now or event["EventTime"] < oldest:
                continue
            if after is not None and event["seq"] >= after:
                continue
            if start is not None and event["EventTime"] < start:
                continue
            if end is not None and event["EventTime"] > end:
                continue
            if attribute is not None and not _matches(event, *attribute):
                continue
            if len(page) == max_results:
                more = True
                break
            page.append(event)
        out = {"Events": [_public(e) for e in page]}
        if more:
            out["NextToken"] = base64.urlsafe_b64encode(
                json.dumps({"after": page[-1]["seq"], "query": query}).encode()
            ).decode()
        return out


def _history(account, region):
    """The event history of an account and Region, kept on moto's CloudTrail backend (reset with it).
    Callers hold TRAIL.lock."""
    from moto.cloudtrail.models import cloudtrail_backends

    backend = cloudtrail_backends[account][region]
    history = getattr(backend, "_amictl_events", None)
    if history is None:
        history = backend._amictl_events = []
    return history


def _matches(event, name, value):
    if name in ("ResourceType", "ResourceName"):
        return any(r.get(name) == value for r in event["Resources"])
    return event.get(name) == value


def _public(event, iso=False):
    out = {k: v for k, v in event.items() if k not in ("seq", "visible_at")}
    out["EventTime"] = _iso(event["EventTime"].timestamp()) if iso else event["EventTime"].timestamp()
    return out


def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value):
    """A JSON-protocol timestamp (epoch seconds; ISO 8601 accepted too) as an aware datetime, or None."""
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise CloudTrailError("InvalidTimeRangeException", f"Time {value!r} is not valid.") from None


def _permission_items(params, prefix):
    """[{"userId": ...}, {"group": "all"}, ...] from `prefix`.N.UserId / .Group / .OrganizationArn / ..."""
    found = []
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.(\w+)$")
    for name, value in params.items():
        m = pattern.match(name)
        if m and m.group(2) in PERMISSION_FIELDS:
            found.append((int(m.group(1)), PERMISSION_FIELDS[m.group(2)], value))
    return [{field: value} for _, field, value in sorted(found)]


def _legacy_items(params):
    """Items of the older form: UserId.N, UserGroup.N (Group.N), OrganizationArn.N, OrganizationalUnitArn.N."""
    found = []
    pattern = re.compile(r"(UserId|UserGroup|Group|OrganizationArn|OrganizationalUnitArn)\.(\d+)$")
    for name, value in params.items():
        m = pattern.match(name)
        if m:
            found.append((int(m.group(2)), PERMISSION_FIELDS[m.group(1)], value))
    return [{field: value} for _, field, value in sorted(found)]


def _permission_change(params, structured):
    """{"add": {"items": [...]}, "remove": {"items": [...]}} (only the operations present), or None."""
    change = {}
    for op, name in (("add", "Add"), ("remove", "Remove")):
        items = _permission_items(params, f"{structured}.{name}")
        if items:
            change[op] = {"items": items}
    if not change and params.get("OperationType") in ("add", "remove"):
        items = _legacy_items(params)
        if items:
            change[params["OperationType"]] = {"items": items}
    return change or None


def _request_parameters(action, params, id_name, resource_id):
    out = {id_name: resource_id}
    if action.startswith("Reset"):
        out["attribute"] = params.get("Attribute", "")
        return out
    if action == "ModifySnapshotAttribute":
        change = _permission_change(params, "CreateVolumePermission")
        if change:
            out["createVolumePermission"] = change
            out["attributeType"] = "CREATE_VOLUME_PERMISSION"
        elif params.get("Attribute"):
            out["attributeType"] = params["Attribute"]
        return out
    change = _permission_change(params, "LaunchPermission")
    if change:
        out["launchPermission"] = change
        out["attributeType"] = "launchPermission"
    elif "Description.Value" in params or params.get("Attribute") == "description":
        out["description"] = {"value": params.get("Description.Value", params.get("Value", ""))}
        out["attributeType"] = "description"
    elif params.get("Attribute"):
        out["attributeType"] = params["Attribute"]
        if "Value" in params:
            out["value"] = params["Value"]
    return out


def _credential_scope(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return ""
    return auth.split(marker, 1)[1].split(",", 1)[0].strip()


TRAIL = Trail()


def lookup_events(self):
    """CloudTrailResponse.lookup_events (moto has none)."""
    body = json.loads(self.body or "{}") if isinstance(self.body, (str, bytes)) else {}
    return json.dumps(TRAIL.lookup(self.current_account, self.region, self.get_access_key(), body))


# -- the sharing calls moto lacks -----------------------------------------------------------------------------
# Stock moto answers ResetImageAttribute and ResetSnapshotAttribute with HTTP 500 (NotImplementedError) and
# ignores ModifySnapshotAttribute's structured form (CreateVolumePermission.Add.N / .Remove.N, what boto3's
# `CreateVolumePermission={"Add": [...]}` sends): it answers success and changes nothing. These are the calls
# whose events this module records, so they are made to work as the EC2 API reference documents them.


def reset_image_attribute(self):
    """ResetImageAttribute: "Resets an attribute of an AMI to its default value." Attribute: "currently you
    can only reset the launch permission attribute" (enum: launchPermission). The default is no launch
    permission: the image is private and shared with nobody."""
    from moto.core.responses import EmptyResult
    from moto.ec2.exceptions import InvalidAMIIdError, InvalidParameterValueError

    image_id = self._get_param("ImageId")
    attribute = self._get_param("Attribute")
    self.error_on_dryrun()
    image = self.ec2_backend.amis.get(image_id)
    if image is None:
        raise InvalidAMIIdError(image_id)
    if attribute != "launchPermission":
        raise InvalidParameterValueError(attribute)
    image.launch_permissions = []
    return EmptyResult()


def reset_snapshot_attribute(self):
    """ResetSnapshotAttribute: "Resets permission settings for the specified snapshot." Attribute: "Currently,
    only the attribute for permission to create volumes can be reset." (createVolumePermission; productCodes
    is refused). The default is no permission: private, shared with nobody."""
    from moto.core.responses import EmptyResult
    from moto.ec2.exceptions import InvalidParameterValueError

    snapshot_id = self._get_param("SnapshotId")
    attribute = self._get_param("Attribute")
    self.error_on_dryrun()
    snapshot = self.ec2_backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound
    if attribute != "createVolumePermission":
        raise InvalidParameterValueError(attribute)
    snapshot.create_volume_permission_userids.clear()
    snapshot.create_volume_permission_groups.clear()
    return EmptyResult()


_stock_modify_snapshot_attribute = None


def modify_snapshot_attribute(self):
    """ModifySnapshotAttribute with CreateVolumePermission.Add.N / .Remove.N (UserId, Group) as well as the
    older OperationType + UserId.N / UserGroup.N that stock moto understands."""
    params = {k: v[0] for k, v in self.querystring.items() if v}
    adds = _permission_items(params, "CreateVolumePermission.Add")
    removes = _permission_items(params, "CreateVolumePermission.Remove")
    if not adds and not removes:
        return _stock_modify_snapshot_attribute(self)
    from moto.core.responses import EmptyResult

    snapshot_id = self._get_param("SnapshotId")
    self.error_on_dryrun()
    self.ec2_backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound
    for change, items in (("add", adds), ("remove", removes)):
        if not items:
            continue
        users = [i["userId"] for i in items if "userId" in i]
        groups = [i["group"] for i in items if "group" in i]
        call = (
            self.ec2_backend.add_create_volume_permission
            if change == "add"
            else self.ec2_backend.remove_create_volume_permission
        )
        call(snapshot_id, user_ids=users, groups=groups)
    return EmptyResult()


def apply_patches():
    global _stock_modify_snapshot_attribute
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    CloudTrailResponse.lookup_events = lookup_events
    AmisResponse.reset_image_attribute = reset_image_attribute
    ElasticBlockStore.reset_snapshot_attribute = reset_snapshot_attribute
    if _stock_modify_snapshot_attribute is None:
        _stock_modify_snapshot_attribute = ElasticBlockStore.modify_snapshot_attribute
    ElasticBlockStore.modify_snapshot_attribute = modify_snapshot_attribute


def watch(environ, action, body, start_response):
    return TRAIL.watch(environ, action, body, start_response)


def control(path, body, method):
    """The control endpoints of this module (paths under /_amictl/cloudtrail/)."""
    if path == "/_amictl/cloudtrail/delay":
        return TRAIL.set_delay(body.get("seconds", 0)) if method == "POST" else {"seconds": TRAIL.delay}
    if path == "/_amictl/cloudtrail/events":
        return TRAIL.recorded(str(body.get("account") or DEFAULT_ACCOUNT), body.get("region") or "us-east-1")
    if path == "/_amictl/cloudtrail/deny":
        return TRAIL.set_denied(body) if method == "POST" else TRAIL.denied_config()
    raise ValueError(f"unknown control path {path}")
