"""SSM Run Command and managed-instance inventory, as the AWS API reference documents them.

Stock moto reports every command as `Success` with empty output, targets every instance of the region
when given InstanceIds, and fails ListCommandInvocations and DescribeInstanceInformation. This module
replaces those four actions (SendCommand, GetCommandInvocation, ListCommandInvocations,
DescribeInstanceInformation) and ListCommands' statuses:

- **Managed instances** (what SSM can reach) are running instances launched with an IAM instance
  profile, or tagged `amictl-emulator:ssm=managed`; the tag `amictl-emulator:ssm=unmanaged` makes an
  instance with a profile unmanaged (an agent that never registered), `amictl-emulator:ssm=connection-lost`
  one DescribeInstanceInformation lists with PingStatus `ConnectionLost` (SendCommand refuses it).
- **SendCommand** with InstanceIds refuses any id that is not a managed instance (InvalidInstanceId);
  with Targets it targets exactly the managed instances whose tags match. At most 50 InstanceIds.
- **Outcomes**: every invocation succeeds with exit code 0 and no output, unless a rule set through
  the control endpoint `/_amictl/ssm-outcomes` matches it first (see `Outcomes.add`).
- **Timing**: an outcome may stay `InProgress` for its first N reads (`polls`), so callers must poll.
- **Error control**: targets run MaxConcurrency at a time, in order; once more than MaxErrors
  invocations have failed or timed out (the API reference: "the system stops sending the command to
  additional targets"), the rest are not started and read `Cancelled`; the command is `Failed` then,
  `Success` with details `Incomplete` when some invocations failed within the threshold.
"""

from __future__ import annotations

import re
import threading

from moto.backends import get_backend
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ssm.responses import SimpleSystemManagerResponse

MANAGED_TAG = "amictl-emulator:ssm"
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled"}
# Invocation output as the API returns it: GetCommandInvocation gives the first 24,000 characters of
# each stream, ListCommandInvocations (Details) the first 2,500 per plugin.
GET_OUTPUT_LIMIT = 24_000
LIST_OUTPUT_LIMIT = 2_500


class InvalidInstanceId(JsonRESTError):
    def __init__(self, message):
        super().__init__("InvalidInstanceId", message)


class InvocationDoesNotExist(JsonRESTError):
    def __init__(self):
        super().__init__("InvocationDoesNotExist", "")


class InvalidCommandId(JsonRESTError):
    def __init__(self):
        super().__init__("InvalidCommandId", "")


class ValidationException(JsonRESTError):
    def __init__(self, message):
        super().__init__("ValidationException", message)


class Outcomes:
    """Rules a test sets: which invocations end how. The first matching rule with uses left wins."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def add(self, body):
        """{"account", "region", "instance_ids": [...], "tags": {K: V}, "image_id", "command_contains",
        "status": Success|Failed|TimedOut|Cancelled, "exit_code", "stdout", "stderr", "polls",
        "times": N (default 1; 0 = every matching invocation from now on)}. Selectors left out match
        everything."""
        status = body.get("status", "Success")
        if status not in TERMINAL:
            raise ValueError(f"status {status!r} is not one of {sorted(TERMINAL)}")
        rule = {
            "account": body.get("account"),
            "region": body.get("region"),
            "instance_ids": set(body.get("instance_ids") or []),
            "tags": dict(body.get("tags") or {}),
            "image_id": body.get("image_id"),
            "command_contains": body.get("command_contains"),
            "status": status,
            "exit_code": int(body.get("exit_code", {"Success": 0, "TimedOut": -1, "Cancelled": -1}.get(status, 1))),
            "stdout": str(body.get("stdout", "")),
            "stderr": str(body.get("stderr", "")),
            "polls": int(body.get("polls", 0)),
            "left": int(body.get("times", 1)) or None,
        }
        with self.lock:
            self.rules.append(rule)
            return {"rules": len(self.rules)}

    def clear(self):
        with self.lock:
            self.rules = []
        return {"rules": 0}

    def take(self, account, region, instance, text):
        with self.lock:
            for rule in self.rules:
                if rule["left"] == 0 or not _matches(rule, account, region, instance, text):
                    continue
                if rule["left"] is not None:
                    rule["left"] -= 1
                return rule
        return None


OUTCOMES = Outcomes()
_PAGE = None  # the launcher's `_page` (MaxResults/NextToken with the run-time page-size cap)


def _matches(rule, account, region, instance, text):
    tags = _tags(instance)
    return (
        (rule["account"] in (None, account))
        and (rule["region"] in (None, region))
        and (not rule["instance_ids"] or instance.id in rule["instance_ids"])
        and all(tags.get(k) == v for k, v in rule["tags"].items())
        and (rule["image_id"] in (None, instance.image_id))
        and (rule["command_contains"] is None or rule["command_contains"] in text)
    )


def _tags(instance):
    return {t["key"]: t["value"] for t in instance.get_tags()}


def _ec2(account, region):
    return get_backend("ec2")[account][region]


def _instances(ec2):
    for reservation in ec2.reservations.values():
        yield from reservation.instances


def ping_status(ec2, instance):
    """`Online`, `ConnectionLost` (an agent that stopped answering: tag `amictl-emulator:ssm=connection-lost`),
    or None for an instance SSM does not know."""
    if instance.state != "running":
        return None
    mark = _tags(instance).get(MANAGED_TAG)
    if mark == "connection-lost":
        return "ConnectionLost"
    if mark in ("managed", "unmanaged"):
        return "Online" if mark == "managed" else None
    return "Online" if instance.id in ec2.iam_instance_profile_associations else None


def is_managed(ec2, instance):
    """Whether SendCommand can reach it (registered and online)."""
    return ping_status(ec2, instance) == "Online"


# --- SendCommand ------------------------------------------------------------------------------------------


def send_command(self):
    account, region = self.current_account, self.region
    ec2 = _ec2(account, region)
    instance_ids = self._get_param("InstanceIds", []) or []
    targets = self._get_param("Targets", []) or []
    if bool(instance_ids) == bool(targets):
        raise ValidationException("Specify exactly one of InstanceIds and Targets")
    if len(instance_ids) > 50:
        raise ValidationException("Member must have length less than or equal to 50 (InstanceIds)")
    # The API reference's patterns: MaxConcurrency ^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$,
    # MaxErrors ^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$.
    for name, pattern in (
        ("MaxConcurrency", r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"),
        ("MaxErrors", r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"),
    ):
        value = self._get_param(name)
        if value is not None and not re.match(pattern, value):
            raise ValidationException(f"Value '{value}' at '{name[0].lower() + name[1:]}' failed to satisfy constraint")
    chosen = _chosen_instances(ec2, instance_ids, targets)
    parameters = self._get_param("Parameters", {}) or {}
    command = self.ssm_backend.send_command(
        comment=self._get_param("Comment", ""),
        document_name=self._get_param("DocumentName"),
        timeout_seconds=self._get_int_param("TimeoutSeconds"),
        instance_ids=[],
        max_concurrency=self._get_param("MaxConcurrency", "50"),
        max_errors=self._get_param("MaxErrors", "0"),
        notification_config=self._get_param("NotificationConfig"),
        output_s3_bucket_name=self._get_param("OutputS3BucketName", ""),
        output_s3_key_prefix=self._get_param("OutputS3KeyPrefix", ""),
        output_s3_region=self._get_param("OutputS3Region", ""),
        parameters=parameters,
        service_role_arn=self._get_param("ServiceRoleArn", ""),
        targets=[],
    )
    command.targets = targets
    command.instance_ids = [i.id for i in chosen]
    command.target_count = len(chosen)
    text = command.document_name + "\n" + "\n".join(
        v for values in parameters.values() for v in (values if isinstance(values, list) else [values])
    )
    command.amictl_invocations = _run_with_error_control(
        command, chosen, [OUTCOMES.take(account, region, i, text) for i in chosen]
    )
    data = _command_data(command)
    # The SendCommand response's counts are 0 (the API reference's example), the status Pending.
    data.update({"Status": "Pending", "StatusDetails": "Pending", "CompletedCount": 0, "ErrorCount": 0})
    return ActionResult({"Command": data})


def _chosen_instances(ec2, instance_ids, targets):
    if instance_ids:
        found = {i.id: i for i in _instances(ec2) if i.id in instance_ids}
        invalid = [i for i in instance_ids if i not in found or not is_managed(ec2, found[i])]
        if invalid:
            raise InvalidInstanceId(f"Instances {invalid} not in a valid state for account")
        return [found[i] for i in dict.fromkeys(instance_ids)]
    wanted = [(t["Key"], t.get("Values") or []) for t in targets]
    out = []
    for instance in _instances(ec2):
        if not is_managed(ec2, instance):
            continue
        tags = _tags(instance)
        if all(_target_matches(key, values, instance, tags) for key, values in wanted):
            out.append(instance)
    return out


def _target_matches(key, values, instance, tags):
    if key == "InstanceIds":
        return instance.id in values
    if key.startswith("tag:"):
        return tags.get(key[4:]) in values
    if key == "tag-key":
        return any(v in tags for v in values)
    raise ValidationException(f"Target key {key} is not supported by the emulator")


def _threshold(value, targets, minimum):
    """MaxConcurrency / MaxErrors: `N` or `N%` of the targets (rounded down, at least `minimum`)."""
    value = str(value or "0").strip()
    if value.endswith("%"):
        return max(minimum, int(float(value[:-1]) * targets / 100))
    return max(minimum, int(value))


def _run_with_error_control(command, chosen, rules):
    """Invocations as SSM runs them: MaxConcurrency targets at a time; once more than MaxErrors
    invocations have failed or timed out, no further target is sent the command (those already
    running finish) and the targets never reached are Cancelled."""
    concurrency = _threshold(command.max_concurrency or "50", len(chosen), 1)
    max_errors = _threshold(command.max_errors or "0", len(chosen), 0)
    out, errors = {}, 0
    for start in range(0, len(chosen), concurrency):
        window = list(zip(chosen, rules))[start : start + concurrency]
        if errors > max_errors:
            for instance, _ in window:
                out[instance.id] = _invocation(command, instance, CANCELLED)
            continue
        for instance, rule in window:
            inv = _invocation(command, instance, rule)
            errors += inv["status"] in ("Failed", "TimedOut")
            out[instance.id] = inv
    return out


CANCELLED = {"status": "Cancelled", "exit_code": -1, "stdout": "", "stderr": "", "polls": 0}


def _invocation(command, instance, rule):
    rule = rule or {"status": "Success", "exit_code": 0, "stdout": "", "stderr": "", "polls": 0}
    details = {"TimedOut": "ExecutionTimedOut"}.get(rule["status"], rule["status"])
    return {
        "instance": instance.id,
        "name": _tags(instance).get("Name", ""),
        "status": rule["status"],
        "details": details,
        "code": rule["exit_code"],
        "stdout": rule["stdout"],
        "stderr": rule["stderr"],
        "polls_left": rule["polls"],
        "start": utcnow(),
    }


# --- reading invocations ----------------------------------------------------------------------------------


def _read(inv):
    """An invocation as seen now: InProgress for its first `polls` reads, then its outcome."""
    if inv["polls_left"] > 0:
        inv["polls_left"] -= 1
        return dict(inv, status="InProgress", details="InProgress", code=-1, stdout="", stderr="", done=False)
    return dict(inv, done=True)


def _command(backend, command_id):
    command = next((c for c in backend._commands if c.command_id == command_id), None)
    if command is None:
        raise InvalidCommandId()
    if not hasattr(command, "amictl_invocations"):
        command.amictl_invocations = {}
    return command


def get_command_invocation(self):
    command = _command(self.ssm_backend, self._get_param("CommandId"))
    inv = command.amictl_invocations.get(self._get_param("InstanceId"))
    plugin = self._get_param("PluginName")
    if inv is None or plugin not in (None, "aws:runShellScript", "aws:runPowerShellScript"):
        raise InvocationDoesNotExist()
    seen = _read(inv)
    return ActionResult(
        {
            "CommandId": command.command_id,
            "InstanceId": seen["instance"],
            "Comment": command.comment,
            "DocumentName": command.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": "aws:runShellScript",
            "ResponseCode": seen["code"],
            "ExecutionStartDateTime": seen["start"].isoformat() + "Z",
            "ExecutionElapsedTime": "PT1S" if seen["done"] else "",
            "ExecutionEndDateTime": (seen["start"].isoformat() + "Z") if seen["done"] else "",
            "Status": seen["status"],
            "StatusDetails": seen["details"],
            "StandardOutputContent": seen["stdout"][:GET_OUTPUT_LIMIT],
            "StandardOutputUrl": "",
            "StandardErrorContent": seen["stderr"][:GET_OUTPUT_LIMIT],
            "StandardErrorUrl": "",
        }
    )


def list_command_invocations(self):
    backend = self.ssm_backend
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = self._get_bool_param("Details", False)
    commands = [_command(backend, command_id)] if command_id else list(backend._commands)
    rows = []
    for command in commands:
        for inv in getattr(command, "amictl_invocations", {}).values():
            if instance_id in (None, inv["instance"]):
                rows.append((command, inv))
    # Only the invocations on this page are read (an InProgress read counts toward `polls`).
    page, token = _paged(self, rows, 1)
    return _answer("CommandInvocations", [_invocation_data(c, inv, details) for c, inv in page], token)


def _invocation_data(command, inv, details):
    seen = _read(inv)
    data = {
        "CommandId": command.command_id,
        "InstanceId": seen["instance"],
        "InstanceName": seen["name"],
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": command.requested_date_time,
        "Status": seen["status"],
        "StatusDetails": seen["details"],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
    }
    if details:
        output = seen["stdout"]
        if seen["stderr"]:
            output += "\n----------ERROR-------\n" + seen["stderr"]
        data["CommandPlugins"] = [
            {
                "Name": "aws:runShellScript",
                "Status": seen["status"],
                "StatusDetails": seen["details"],
                "ResponseCode": seen["code"],
                "ResponseStartDateTime": seen["start"],
                "Output": output[:LIST_OUTPUT_LIMIT],
            }
        ]
    return data


def _paged(self, rows, low, high=50):
    """One page of `rows` by MaxResults/NextToken (the launcher's pager, which applies the test cap),
    MaxResults bounded as the API reference bounds it (ValidationException outside)."""
    value = self._get_param("MaxResults")
    if value is not None and not low <= int(value) <= high:
        raise ValidationException(f"Value '{value}' at 'maxResults' failed to satisfy constraint: between {low} and {high}")
    return _PAGE(self, rows, high, high)


def _answer(key, items, token):
    out = {key: items}
    if token:
        out["NextToken"] = token
    return ActionResult(out)


def list_commands(self):
    backend = self.ssm_backend
    command_id = self._get_param("CommandId")
    commands = backend.list_commands(command_id, self._get_param("InstanceId"))
    page, token = _paged(self, commands, 1)
    return _answer("Commands", [_command_data(c) for c in page], token)


def _command_data(command):
    data = command.response_object()
    invocations = list(getattr(command, "amictl_invocations", {}).values())
    done = [i for i in invocations if i["polls_left"] == 0]
    errors = [i for i in done if i["status"] in ("Failed", "TimedOut")]
    max_errors = _threshold(command.max_errors or "0", len(invocations), 0)
    data["CompletedCount"] = len(done)
    data["ErrorCount"] = len(errors)
    data["TargetCount"] = len(invocations)
    if len(done) < len(invocations):
        data["Status"] = data["StatusDetails"] = "InProgress"
    elif len(errors) > max_errors:
        data["Status"], data["StatusDetails"] = "Failed", "Failed"
    elif errors or any(i["status"] == "Cancelled" for i in done):
        data["Status"], data["StatusDetails"] = "Success", "Incomplete"
    else:
        data["Status"] = data["StatusDetails"] = "Success"
    return data


# --- DescribeInstanceInformation ----------------------------------------------------------------------------


def describe_instance_information(self):
    account, region = self.current_account, self.region
    ec2 = _ec2(account, region)
    wanted = None
    for f in (self._get_param("InstanceInformationFilterList") or []) + (self._get_param("Filters") or []):
        key = f.get("key") or f.get("Key")
        values = f.get("valueSet") or f.get("Values") or []
        if key == "InstanceIds":
            wanted = set(values) if wanted is None else wanted & set(values)
        elif key not in ("PingStatus", "ResourceType", "PlatformTypes"):
            raise ValidationException(f"filter key {key} is not supported by the emulator")
    rows = [
        _information(i, ping_status(ec2, i))
        for i in _instances(ec2)
        if ping_status(ec2, i) is not None and (wanted is None or i.id in wanted)
    ]
    rows.sort(key=lambda r: r["InstanceId"])
    page, token = _paged(self, rows, 5)
    return _answer("InstanceInformationList", page, token)


def _information(instance, ping):
    return {
        "InstanceId": instance.id,
        "PingStatus": ping,
        "LastPingDateTime": utcnow(),
        "AgentVersion": "3.3.0.0",
        "IsLatestVersion": True,
        "PlatformType": "Windows" if instance.platform == "windows" else "Linux",
        "PlatformName": "Microsoft Windows Server" if instance.platform == "windows" else "Amazon Linux",
        "PlatformVersion": "2023",
        "ResourceType": "EC2Instance",
        "IPAddress": instance.private_ip,
        "ComputerName": f"ip-{instance.private_ip.replace('.', '-')}.ec2.internal",
    }


def apply_patches(page):
    """`page` is the launcher's pager (it applies the run-time page-size cap)."""
    global _PAGE
    _PAGE = page
    SimpleSystemManagerResponse.send_command = send_command
    SimpleSystemManagerResponse.get_command_invocation = get_command_invocation
    SimpleSystemManagerResponse.list_command_invocations = list_command_invocations
    SimpleSystemManagerResponse.list_commands = list_commands
    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information


def control(path, body):
    """The control endpoints of this module, or None for a path it does not own."""
    if path == "/_amictl/ssm-outcomes":
        return OUTCOMES.add(body)
    if path == "/_amictl/ssm-outcomes/clear":
        return OUTCOMES.clear()
    return None


