"""Recycle Bin for EBS snapshots and EBS-backed AMIs (moto 5.2.5 has no `rbin` service).

Sources: the Recycle Bin API reference (CreateRule, GetRule, ListRules, UpdateRule, DeleteRule, LockRule,
UnlockRule, TagResource, UntagResource, ListTagsForResource; the botocore `rbin` model carries the same
text), the EC2 API reference (DeregisterImage, ListImagesInRecycleBin, RestoreImageFromRecycleBin,
ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin) and the EC2 user guide's Recycle Bin pages
("Recycle Bin", "Considerations", "Recover AMIs from the Recycle Bin", "Recover snapshots from the Recycle
Bin").

**Rules** (service `rbin`, REST-JSON; the launcher routes every request whose SigV4 credential scope names
`rbin` here, see `route`). Per account and Region, kept on moto's EC2 backend so `/moto-api/reset` clears
them. ResourceType `EBS_SNAPSHOT | EC2_IMAGE | EBS_VOLUME` (volumes are accepted but nothing is retained:
the emulator deletes volumes as before); RetentionPeriod {RetentionPeriodValue, RetentionPeriodUnit DAYS}
("EBS snapshots and EBS-backed AMIs: 1 - 365 days", "EBS volumes: 1 - 7 days"); ResourceTags make a
tag-level rule ("only deleted resources, of the specified resource type, that have one or more of the
specified tag key and value pairs are retained"), none a Region-level rule ("retains all deleted resources
of the specified resource type in the Region ... even if the resources are not tagged") that may have
ExcludeResourceTags (at most 5; "You can't specify exclusion tags for tag-level retention rules"). A
ResourceTag without ResourceTagValue matches only a tag whose value is empty (the reference is silent: the
less convenient answer). "You can add the same tag key and value pair to a maximum of five retention
rules"; 250 rules per Region (user guide, Quotas): ServiceQuotaExceededException. Status is `available`
at once: the user guide's "When you create your first retention rule, it can take up to 30 minutes for the
rule to become active" is NOT modelled. Lock: LockConfiguration.UnlockDelay 7-30 days; "You can't lock
tag-level retention rules, or Region-level retention rules that have exclusion tags"; a `locked` rule
"can't be modified or deleted", UnlockRule makes it `pending_unlock` until LockEndTime (emulator clock),
then `unlocked`; modifying or deleting a locked / pending_unlock rule is ConflictException
(INVALID_RULE_STATE). Unknown rule: ResourceNotFoundException (RULE_NOT_FOUND); bad input:
ValidationException (INVALID_PARAMETER_VALUE; a bad NextToken INVALID_PAGE_TOKEN). ListRules
(ResourceType required) answers {Identifier, Description, RetentionPeriod, LockState, RuleArn} pages of
MaxResults (1-1000). Rule tags: TagResource / UntagResource / ListTagsForResource by RuleArn.

**Which rule retains a deleted resource** (user guide, Considerations): "If a resource matches more than one
tag-level retention rule upon deletion, then the retention rule with the longest retention period takes
precedence"; "If a resource matches a Region-level rule and a tag-level rule, then the tag-level rule takes
precedence" (among Region-level rules the longest period wins). Tags are the resource's tags when deleted.

**Into the bin.** DeregisterImage of a matching EBS-backed image (a wrapped `AmiBackend.deregister_image`, so
it works under the launcher's DeleteAssociatedSnapshots handling too) and DeleteSnapshot of a matching
snapshot (a wrapped `EBSBackend.delete_snapshot`: DeleteSnapshot and the snapshots DeregisterImage's
DeleteAssociatedSnapshots deletes, which then report `success`) move the resource to the bin instead of
deleting it: it leaves DescribeImages / DescribeSnapshots, a deregistered image answers as a deregistered
one (InvalidAMIID.Unavailable where EC2 says so), and it carries the system tag
`aws:recycle-bin:resource-in-bin` = `true` ("When the resource is restored from the Recycle Bin, the tag is
automatically removed"). Its tags can still be changed ("While a resource is in the Recycle Bin, you can
only view it, restore it, or modify its tags"). A shared image or snapshot is unshared while in the bin
(nobody can see it) and "If you restore the AMI, all of the previous sharing permissions are automatically
restored" (likewise snapshots). Without a matching rule both calls behave exactly as before.

**Listing** (EC2 API): ListImagesInRecycleBin {ImageIds (at most 20: InvalidParameterValue), MaxResults
1-1000 (default 1000)} -> Images [{ImageId, Name, Description, RecycleBinEnterTime, RecycleBinExitTime}];
ListSnapshotsInRecycleBin {SnapshotIds, MaxResults 5-1000} -> Snapshots [{SnapshotId, Description,
VolumeId, RecycleBinEnterTime, RecycleBinExitTime}]. Ids not in the bin are left out.

**Restoring.** RestoreImageFromRecycleBin puts the same image back (id, tags, launch permissions, state,
deprecation and deregistration protection as before) and answers {"Return": true}; "Before you can restore
an AMI from the Recycle Bin, you must first restore all of its associated snapshots from the Recycle Bin and
ensure that they are in the available state", and "If the snapshots that are associated with the AMI are
deleted from the Recycle Bin, the AMI is no longer recoverable": when the image's snapshot is in the bin or
gone the call fails with `IncorrectState` (the reference names no code; IncorrectState is EC2's common
code for a resource in the wrong state). RestoreSnapshotFromRecycleBin puts the snapshot back (state
`completed`: "the snapshot is immediately available for use") and answers SnapshotId, Description,
Encrypted, OwnerId, Progress, StartTime, State, VolumeId, VolumeSize. An id that is not in the bin:
InvalidAMIID.NotFound / InvalidSnapshot.NotFound.

**Expiry.** "If the retention period expires and the resource is not restored, the resource is permanently
deleted from the Recycle Bin": RecycleBinExitTime = RecycleBinEnterTime + the rule's period at deletion,
both on the emulator clock (image_safety.now(); `POST /_amictl/clock {"advance_days": N}` moves it), and a
resource whose exit time has passed is gone for good at the next call that looks at the bin.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote

from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, InvalidSnapshotIdError, InvalidSnapshotInUse
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.moto_api._internal import mock_random
from werkzeug.wrappers import Request, Response

import image_safety

LOCK = threading.RLock()
IN_BIN_TAG = "aws:recycle-bin:resource-in-bin"
RESOURCE_TYPES = ("EBS_SNAPSHOT", "EC2_IMAGE", "EBS_VOLUME")
MAX_RULES = 250
MAX_RULES_PER_TAG = 5
_helpers = {}


def _state(backend):
    state = getattr(backend, "_amictl_rbin", None)
    if state is None:
        state = backend._amictl_rbin = {"rules": {}, "images": {}, "snapshots": {}}
    return state


def _tags_of(backend, resource_id):
    return dict(backend.tags.get(resource_id, {}))


# ---------------------------------------------------------------------------------------------------------------
# Which rule retains a resource
# ---------------------------------------------------------------------------------------------------------------


def _days(rule):
    return int(rule["RetentionPeriod"]["RetentionPeriodValue"])


def _pairs(tags):
    return {(t["ResourceTagKey"], t.get("ResourceTagValue", "")) for t in tags or []}


def matching_rule(backend, resource_type, tags):
    """The rule that retains a deleted resource of `resource_type` with `tags` ({key: value}), or None."""
    have = {(k, v) for k, v in tags.items()}
    rules = [r for r in _state(backend)["rules"].values() if r["ResourceType"] == resource_type and r["Status"] == "available"]
    tag_level = [r for r in rules if r.get("ResourceTags") and _pairs(r["ResourceTags"]) & have]
    if tag_level:
        return max(tag_level, key=_days)
    region_level = [
        r for r in rules if not r.get("ResourceTags") and not (_pairs(r.get("ExcludeResourceTags")) & have)
    ]
    return max(region_level, key=_days) if region_level else None


def _enter(backend, kind, resource, rule):
    entered = image_safety.now()
    _state(backend)[kind][resource.id] = {
        "resource": resource,
        "enter": entered,
        "exit": entered + timedelta(days=_days(rule)),
        "rule": rule["Identifier"],
    }
    backend.tags.setdefault(resource.id, {})[IN_BIN_TAG] = "true"


def _leave(backend, kind, resource_id):
    entry = _state(backend)[kind].pop(resource_id)
    tags = backend.tags.get(resource_id)
    if tags is not None:
        tags.pop(IN_BIN_TAG, None)
    return entry


def purge(backend):
    """Delete for good what has stayed its retention period."""
    with LOCK:
        moment = image_safety.now()
        state = _state(backend)
        for kind in ("images", "snapshots"):
            for resource_id in [i for i, e in state[kind].items() if e["exit"] <= moment]:
                del state[kind][resource_id]
                backend.tags.pop(resource_id, None)


# ---------------------------------------------------------------------------------------------------------------
# Backend patches: DeregisterImage and DeleteSnapshot send matching resources to the bin
# ---------------------------------------------------------------------------------------------------------------


def _wrap_deregister_image(stock):
    def deregister_image(self, ami_id):
        with LOCK:
            purge(self)
            image = self.amis.get(ami_id)
            if image is not None and getattr(image, "root_device_type", "ebs") != "instance-store":
                rule = matching_rule(self, "EC2_IMAGE", _tags_of(self, ami_id))
                if rule is not None:
                    self.amis.pop(ami_id)
                    self.deleted_amis.append(ami_id)
                    _enter(self, "images", image, rule)
                    return None
            return stock(self, ami_id)

    return deregister_image


def _wrap_delete_snapshot(stock):
    def delete_snapshot(self, snapshot_id):
        with LOCK:
            purge(self)
            snapshot = self.snapshots.get(snapshot_id)
            if snapshot is not None:
                if snapshot.from_ami and snapshot.from_ami in self.amis:
                    raise InvalidSnapshotInUse(snapshot_id, snapshot.from_ami)
                rule = matching_rule(self, "EBS_SNAPSHOT", _tags_of(self, snapshot_id))
                if rule is not None:
                    self.snapshots.pop(snapshot_id)
                    _enter(self, "snapshots", snapshot, rule)
                    return snapshot
            return stock(self, snapshot_id)

    return delete_snapshot


# ---------------------------------------------------------------------------------------------------------------
# EC2 actions
# ---------------------------------------------------------------------------------------------------------------


def list_images_in_recycle_bin(self):
    image_ids = self._get_param("ImageIds", []) or []
    max_results = self._get_int_param("MaxResults")
    self.error_on_dryrun()
    if len(image_ids) > 20:
        raise EC2ClientError("InvalidParameterValue", "You can specify up to 20 image IDs in a single request.")
    if max_results is not None and not 1 <= max_results <= 1000:
        raise EC2ClientError("InvalidParameterValue", f"Value ({max_results}) for parameter MaxResults is invalid. Expecting a value between 1 and 1000.")
    backend = self.ec2_backend
    with LOCK:
        purge(backend)
        entries = sorted(_state(backend)["images"].values(), key=lambda e: (e["enter"], e["resource"].id))
    if image_ids:
        entries = [e for e in entries if e["resource"].id in image_ids]
    items = [
        {
            "ImageId": e["resource"].id,
            "Name": e["resource"].name,
            "Description": e["resource"].description,
            "RecycleBinEnterTime": e["enter"],
            "RecycleBinExitTime": e["exit"],
        }
        for e in entries
    ]
    page, token = _helpers["page"](self, items, 1000, maximum=1000)
    result = {"Images": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def restore_image_from_recycle_bin(self):
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    if not image_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    backend = self.ec2_backend
    with LOCK:
        purge(backend)
        entry = _state(backend)["images"].get(image_id)
        if entry is None:
            raise InvalidAMIIdError(image_id)
        image = entry["resource"]
        snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image.block_device_mappings if "Ebs" in m]
        for snapshot_id in snapshot_ids:
            if snapshot_id in _state(backend)["snapshots"]:
                raise EC2ClientError(
                    "IncorrectState",
                    f"The image {image_id} can't be restored: its snapshot {snapshot_id} is in the Recycle Bin. "
                    "Restore the snapshot first.",
                )
            if snapshot_id not in backend.snapshots:
                raise EC2ClientError(
                    "IncorrectState",
                    f"The image {image_id} can't be restored: its snapshot {snapshot_id} has been deleted.",
                )
        _leave(backend, "images", image_id)
        if image_id in backend.deleted_amis:
            backend.deleted_amis.remove(image_id)
        backend.amis[image_id] = image
    return ActionResult({"Return": True})


def list_snapshots_in_recycle_bin(self):
    snapshot_ids = self._get_param("SnapshotIds", []) or []
    max_results = self._get_int_param("MaxResults")
    self.error_on_dryrun()
    if max_results is not None and not 5 <= max_results <= 1000:
        raise EC2ClientError("InvalidParameterValue", f"Value ({max_results}) for parameter MaxResults is invalid. Expecting a value between 5 and 1000.")
    backend = self.ec2_backend
    with LOCK:
        purge(backend)
        entries = sorted(_state(backend)["snapshots"].values(), key=lambda e: (e["enter"], e["resource"].id))
    if snapshot_ids:
        entries = [e for e in entries if e["resource"].id in snapshot_ids]
    items = [
        {
            "SnapshotId": e["resource"].id,
            "Description": e["resource"].description,
            "VolumeId": e["resource"].volume.id,
            "RecycleBinEnterTime": e["enter"],
            "RecycleBinExitTime": e["exit"],
        }
        for e in entries
    ]
    page, token = _helpers["page"](self, items, 1000, maximum=1000)
    result = {"Snapshots": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def restore_snapshot_from_recycle_bin(self):
    snapshot_id = self._get_param("SnapshotId")
    self.error_on_dryrun()
    if not snapshot_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter SnapshotId")
    backend = self.ec2_backend
    with LOCK:
        purge(backend)
        if snapshot_id not in _state(backend)["snapshots"]:
            raise InvalidSnapshotIdError()
        snapshot = _leave(backend, "snapshots", snapshot_id)["resource"]
        snapshot.status = "completed"
        backend.snapshots[snapshot_id] = snapshot
    return ActionResult(
        {
            "SnapshotId": snapshot.id,
            "Description": snapshot.description,
            "Encrypted": bool(snapshot.encrypted),
            "OwnerId": snapshot.owner_id,
            "Progress": "100%",
            "StartTime": snapshot.start_time,
            "State": snapshot.status,
            "VolumeId": snapshot.volume.id,
            "VolumeSize": snapshot.volume.size,
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# The rbin service (REST-JSON)
# ---------------------------------------------------------------------------------------------------------------


class RbinError(Exception):
    STATUS = {
        "ValidationException": 400,
        "ResourceNotFoundException": 404,
        "ConflictException": 409,
        "ServiceQuotaExceededException": 402,
    }

    def __init__(self, code, message, reason=None):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason

    def response(self):
        body = {"Message": self.message}
        if self.reason:
            body["Reason"] = self.reason
        return Response(
            json.dumps(body),
            self.STATUS.get(self.code, 400),
            content_type="application/json",
            headers={"x-amzn-ErrorType": self.code, "x-amzn-RequestId": str(uuid.uuid4())},
        )


def _invalid(message):
    return RbinError("ValidationException", message, "INVALID_PARAMETER_VALUE")


_ROUTES = [
    ("POST", re.compile(r"^/rules/?$"), "CreateRule"),
    ("POST", re.compile(r"^/list-rules/?$"), "ListRules"),
    ("PATCH", re.compile(r"^/rules/(?P<id>[^/]+)/lock/?$"), "LockRule"),
    ("PATCH", re.compile(r"^/rules/(?P<id>[^/]+)/unlock/?$"), "UnlockRule"),
    ("GET", re.compile(r"^/rules/(?P<id>[^/]+)/?$"), "GetRule"),
    ("PATCH", re.compile(r"^/rules/(?P<id>[^/]+)/?$"), "UpdateRule"),
    ("DELETE", re.compile(r"^/rules/(?P<id>[^/]+)/?$"), "DeleteRule"),
    ("POST", re.compile(r"^/tags/(?P<arn>.+)$"), "TagResource"),
    ("DELETE", re.compile(r"^/tags/(?P<arn>.+)$"), "UntagResource"),
    ("GET", re.compile(r"^/tags/(?P<arn>.+)$"), "ListTagsForResource"),
]


def _scope(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in auth:
        return []
    return auth.split("Credential=", 1)[1].split(",", 1)[0].strip().split("/")


def is_rbin(environ):
    parts = _scope(environ)
    return len(parts) >= 5 and parts[3] == "rbin"


def _match(environ):
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    for verb, pattern, name in _ROUTES:
        found = pattern.match(path) if verb == method else None
        if found:
            return name, {k: unquote(v) for k, v in found.groupdict().items()}
    return None, {}


def operation(environ):
    """The action a Recycle Bin request asks for, as `rbin.CreateRule` (for the launcher's stats)."""
    name, _ = _match(environ)
    return f"rbin.{name or '?'}"


def _account(environ):
    from moto.iam.models import get_account_id_from

    parts = _scope(environ)
    return get_account_id_from(parts[0]) if parts and parts[0] else image_safety.DEFAULT_ACCOUNT


def route(moto_app):
    """A WSGI app: Recycle Bin requests (SigV4 service `rbin`) are answered here, the rest by `moto_app`."""

    def app(environ, start_response):
        if not is_rbin(environ):
            return moto_app(environ, start_response)
        return handle(environ, start_response)

    return app


def handle(environ, start_response):
    parts = _scope(environ)
    region = parts[2]
    account = _account(environ)
    request = Request(environ)
    name, args = _match(environ)
    try:
        if name is None:
            raise RbinError("ValidationException", f"No Recycle Bin operation at {request.method} {request.path}")
        body = request.get_data(cache=True)
        payload = json.loads(body) if body.strip() else {}
        backend = get_backend("ec2")[account][region]
        with LOCK:
            status, out = OPERATIONS[name](backend, args, payload, request)
    except RbinError as err:
        return err.response()(environ, start_response)
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if status == 204:
        return Response(b"", 204, headers=headers)(environ, start_response)
    return Response(json.dumps(out), status, content_type="application/json", headers=headers)(environ, start_response)


def _rule(backend, identifier):
    rule = _state(backend)["rules"].get(identifier)
    if rule is None:
        raise RbinError("ResourceNotFoundException", f"Rule {identifier} was not found.", "RULE_NOT_FOUND")
    _refresh_lock(rule)
    return rule


def _refresh_lock(rule):
    end = rule.get("_lock_end")
    if rule.get("LockState") == "pending_unlock" and end is not None and image_safety.now() >= end:
        rule["LockState"] = "unlocked"
        rule["_lock_end"] = None


def _modifiable(rule):
    if rule.get("LockState") in ("locked", "pending_unlock"):
        raise RbinError(
            "ConflictException",
            f"Rule {rule['Identifier']} is {rule['LockState']}: a locked retention rule can't be modified or deleted.",
            "INVALID_RULE_STATE",
        )


def _validate_retention(period, resource_type):
    if not isinstance(period, dict) or "RetentionPeriodValue" not in period or "RetentionPeriodUnit" not in period:
        raise _invalid("RetentionPeriod must have RetentionPeriodValue and RetentionPeriodUnit.")
    if period["RetentionPeriodUnit"] != "DAYS":
        raise _invalid("RetentionPeriodUnit must be DAYS.")
    value = period["RetentionPeriodValue"]
    most = 7 if resource_type == "EBS_VOLUME" else 365
    if not isinstance(value, int) or not 1 <= value <= most:
        raise _invalid(f"RetentionPeriodValue must be between 1 and {most} days for {resource_type}.")
    return {"RetentionPeriodValue": value, "RetentionPeriodUnit": "DAYS"}


def _validate_resource_tags(tags, most, what):
    tags = tags or []
    if not isinstance(tags, list) or len(tags) > most:
        raise _invalid(f"{what} can have at most {most} tags.")
    clean = []
    for tag in tags:
        key = tag.get("ResourceTagKey") if isinstance(tag, dict) else None
        if not key or len(key) > 128 or len(tag.get("ResourceTagValue", "")) > 256:
            raise _invalid(f"Each of {what} needs a ResourceTagKey of 1-128 characters and a value of at most 256.")
        item = {"ResourceTagKey": key}
        if "ResourceTagValue" in tag:
            item["ResourceTagValue"] = tag["ResourceTagValue"]
        clean.append(item)
    return clean


def _validate_description(description):
    if description is not None and (not isinstance(description, str) or not re.fullmatch(r"[\S ]{0,255}", description)):
        raise _invalid("Description must be at most 255 characters, without line breaks.")


def _validate_lock(lock):
    delay = (lock or {}).get("UnlockDelay") or {}
    value = delay.get("UnlockDelayValue")
    if delay.get("UnlockDelayUnit") != "DAYS" or not isinstance(value, int) or not 7 <= value <= 30:
        raise _invalid("LockConfiguration.UnlockDelay must be 7-30 DAYS.")
    return {"UnlockDelay": {"UnlockDelayValue": value, "UnlockDelayUnit": "DAYS"}}


def _check_tag_reuse(backend, resource_tags, skip=None):
    for pair in _pairs(resource_tags):
        users = [
            r for r in _state(backend)["rules"].values() if r["Identifier"] != skip and pair in _pairs(r.get("ResourceTags"))
        ]
        if len(users) >= MAX_RULES_PER_TAG:
            raise RbinError(
                "ServiceQuotaExceededException",
                f"The tag {pair[0]}={pair[1]} is already used by {MAX_RULES_PER_TAG} retention rules.",
                "SERVICE_QUOTA_EXCEEDED",
            )


def _view(rule, summary=False):
    if summary:
        keys = ("Identifier", "Description", "RetentionPeriod", "LockState", "RuleArn")
    else:
        keys = (
            "Identifier", "Description", "ResourceType", "RetentionPeriod", "ResourceTags", "ExcludeResourceTags",
            "Status", "LockConfiguration", "LockState", "RuleArn",
        )
    out = {k: rule[k] for k in keys if rule.get(k) not in (None, [])}
    if not summary:
        out.setdefault("ResourceTags", [])
        if rule.get("_lock_end") is not None and rule.get("LockState") == "pending_unlock":
            out["LockEndTime"] = (rule["_lock_end"] - _EPOCH).total_seconds()
    return out


_EPOCH = datetime(1970, 1, 1)


def create_rule(backend, args, body, request):
    resource_type = body.get("ResourceType")
    if resource_type not in RESOURCE_TYPES:
        raise _invalid(f"ResourceType must be one of {', '.join(RESOURCE_TYPES)}.")
    period = _validate_retention(body.get("RetentionPeriod"), resource_type)
    _validate_description(body.get("Description"))
    resource_tags = _validate_resource_tags(body.get("ResourceTags"), 50, "ResourceTags")
    exclude = _validate_resource_tags(body.get("ExcludeResourceTags"), 5, "ExcludeResourceTags")
    if resource_tags and exclude:
        raise _invalid("You can't specify exclusion tags for tag-level retention rules.")
    lock = body.get("LockConfiguration")
    if lock is not None:
        lock = _validate_lock(lock)
        if resource_tags or exclude:
            raise _invalid("You can't lock tag-level retention rules, or Region-level retention rules that have exclusion tags.")
    tags = body.get("Tags") or []
    rules = _state(backend)["rules"]
    if len(rules) >= MAX_RULES:
        raise RbinError("ServiceQuotaExceededException", f"A Region can have at most {MAX_RULES} retention rules.", "SERVICE_QUOTA_EXCEEDED")
    _check_tag_reuse(backend, resource_tags)
    identifier = mock_random.get_random_string(length=11)
    rule = {
        "Identifier": identifier,
        "Description": body.get("Description", ""),
        "ResourceType": resource_type,
        "RetentionPeriod": period,
        "ResourceTags": resource_tags,
        "ExcludeResourceTags": exclude,
        "Status": "available",
        "Tags": [{"Key": t["Key"], "Value": t.get("Value", "")} for t in tags],
        "RuleArn": f"arn:aws:rbin:{backend.region_name}:{backend.account_id}:rule/{identifier}",
        "LockState": None if resource_tags else "unlocked",
        "_lock_end": None,
    }
    if lock is not None:
        rule["LockConfiguration"] = lock
        rule["LockState"] = "locked"
    rules[identifier] = rule
    out = _view(rule)
    out["Tags"] = rule["Tags"]
    return 201, out


def get_rule(backend, args, body, request):
    return 200, _view(_rule(backend, args["id"]))


def list_rules(backend, args, body, request):
    resource_type = body.get("ResourceType")
    if resource_type not in RESOURCE_TYPES:
        raise _invalid(f"ResourceType is required and must be one of {', '.join(RESOURCE_TYPES)}.")
    max_results = body.get("MaxResults")
    if max_results is not None and (not isinstance(max_results, int) or not 1 <= max_results <= 1000):
        raise _invalid("MaxResults must be between 1 and 1000.")
    want_tags = _pairs(_validate_resource_tags(body.get("ResourceTags"), 50, "ResourceTags"))
    want_exclude = _pairs(_validate_resource_tags(body.get("ExcludeResourceTags"), 5, "ExcludeResourceTags"))
    lock_state = body.get("LockState")
    rules = []
    for rule in _state(backend)["rules"].values():
        _refresh_lock(rule)
        if rule["ResourceType"] != resource_type:
            continue
        if want_tags and not want_tags <= _pairs(rule.get("ResourceTags")):
            continue
        if want_exclude and not want_exclude <= _pairs(rule.get("ExcludeResourceTags")):
            continue
        if lock_state and rule.get("LockState") != lock_state:
            continue
        rules.append(rule)
    start = 0
    token = body.get("NextToken")
    if token:
        try:
            start = int(base64.b64decode(token).decode())
        except Exception:
            raise RbinError("ValidationException", "The NextToken is not valid.", "INVALID_PAGE_TOKEN")
    size = max_results or 1000
    if _helpers.get("cap"):
        size = _helpers["cap"](size)
    page = rules[start:start + size]
    out = {"Rules": [_view(r, summary=True) for r in page]}
    if start + size < len(rules):
        out["NextToken"] = base64.b64encode(str(start + size).encode()).decode()
    return 200, out


def update_rule(backend, args, body, request):
    rule = _rule(backend, args["id"])
    _modifiable(rule)
    if body.get("ResourceType") not in (None, rule["ResourceType"]):
        raise _invalid("You can't update a retention rule's resource type after creation.")
    period = _validate_retention(body["RetentionPeriod"], rule["ResourceType"]) if "RetentionPeriod" in body else None
    _validate_description(body.get("Description"))
    resource_tags = (
        _validate_resource_tags(body["ResourceTags"], 50, "ResourceTags") if "ResourceTags" in body else rule["ResourceTags"]
    )
    exclude = (
        _validate_resource_tags(body["ExcludeResourceTags"], 5, "ExcludeResourceTags")
        if "ExcludeResourceTags" in body
        else rule["ExcludeResourceTags"]
    )
    if resource_tags and exclude:
        raise _invalid("You can't specify exclusion tags for tag-level retention rules.")
    _check_tag_reuse(backend, resource_tags, skip=rule["Identifier"])
    if period is not None:
        rule["RetentionPeriod"] = period
    if "Description" in body:
        rule["Description"] = body["Description"]
    rule["ResourceTags"], rule["ExcludeResourceTags"] = resource_tags, exclude
    if resource_tags:
        rule["LockState"] = None
    elif rule.get("LockState") is None:
        rule["LockState"] = "unlocked"
    return 200, _view(rule)


def delete_rule(backend, args, body, request):
    rule = _rule(backend, args["id"])
    _modifiable(rule)
    del _state(backend)["rules"][rule["Identifier"]]
    return 204, None


def lock_rule(backend, args, body, request):
    rule = _rule(backend, args["id"])
    lock = _validate_lock(body.get("LockConfiguration"))
    if rule.get("ResourceTags") or rule.get("ExcludeResourceTags"):
        raise _invalid("You can't lock tag-level retention rules, or Region-level retention rules that have exclusion tags.")
    if rule.get("LockState") == "locked":
        raise RbinError("ConflictException", f"Rule {rule['Identifier']} is already locked.", "INVALID_RULE_STATE")
    rule["LockConfiguration"] = lock
    rule["LockState"] = "locked"
    rule["_lock_end"] = None
    return 200, _view(rule)


def unlock_rule(backend, args, body, request):
    rule = _rule(backend, args["id"])
    if rule.get("LockState") != "locked":
        raise RbinError("ConflictException", f"Rule {rule['Identifier']} is not locked.", "INVALID_RULE_STATE")
    days = rule["LockConfiguration"]["UnlockDelay"]["UnlockDelayValue"]
    rule["LockState"] = "pending_unlock"
    rule["_lock_end"] = image_safety.now() + timedelta(days=days)
    return 200, _view(rule)


def _rule_by_arn(backend, arn):
    for rule in _state(backend)["rules"].values():
        if rule["RuleArn"] == arn:
            return rule
    raise RbinError("ResourceNotFoundException", f"Rule {arn} was not found.", "RULE_NOT_FOUND")


def tag_resource(backend, args, body, request):
    rule = _rule_by_arn(backend, args["arn"])
    tags = {t["Key"]: t.get("Value", "") for t in rule["Tags"]}
    for tag in body.get("Tags") or []:
        tags[tag["Key"]] = tag.get("Value", "")
    if len(tags) > 200:
        raise RbinError("ServiceQuotaExceededException", "A retention rule can have at most 200 tags.", "SERVICE_QUOTA_EXCEEDED")
    rule["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return 201, {}


def untag_resource(backend, args, body, request):
    rule = _rule_by_arn(backend, args["arn"])
    keys = set(parse_qs(request.query_string.decode()).get("tagKeys", []))
    rule["Tags"] = [t for t in rule["Tags"] if t["Key"] not in keys]
    return 204, None


def list_tags_for_resource(backend, args, body, request):
    return 200, {"Tags": list(_rule_by_arn(backend, args["arn"])["Tags"])}


OPERATIONS = {
    "CreateRule": create_rule,
    "GetRule": get_rule,
    "ListRules": list_rules,
    "UpdateRule": update_rule,
    "DeleteRule": delete_rule,
    "LockRule": lock_rule,
    "UnlockRule": unlock_rule,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}


# ---------------------------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------------------------


def apply_patches(page, cap=None):
    """Install the patches. Call after the launcher's own patches and before image_safety.apply_patches (so
    deregistration protection is checked before an image could reach the bin). `page` slices a list by
    MaxResults/NextToken, `cap` applies the page-size cap to the rbin ListRules page size."""
    _helpers["page"] = page
    _helpers["cap"] = cap
    AmiBackend.deregister_image = _wrap_deregister_image(AmiBackend.deregister_image)
    EBSBackend.delete_snapshot = _wrap_delete_snapshot(EBSBackend.delete_snapshot)
    AmisResponse.list_images_in_recycle_bin = list_images_in_recycle_bin
    AmisResponse.restore_image_from_recycle_bin = restore_image_from_recycle_bin
    ElasticBlockStore.list_snapshots_in_recycle_bin = list_snapshots_in_recycle_bin
    ElasticBlockStore.restore_snapshot_from_recycle_bin = restore_snapshot_from_recycle_bin
