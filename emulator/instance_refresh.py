"""Auto Scaling instance refresh, small but faithful to the API reference, where stock moto answers
StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh and RollbackInstanceRefresh with
an empty body.

- **Start** validates as AWS does: one refresh at a time per group (InstanceRefreshInProgress);
  MinHealthyPercentage 0–100, MaxHealthyPercentage 100–200 and at least MinHealthyPercentage + 1 when
  MinHealthyPercentage is 100; AutoRollback needs a DesiredConfiguration and a group that does not use a
  launch template's $Latest or $Default version. New instances launch from the desired configuration.
- **Steps**: a refresh advances one step per DescribeInstanceRefreshes call that names its group (so no
  test sleeps), or per `POST /_amictl/refresh/tick`. A step replaces as many instances as the healthy
  minimum allows (MaxHealthyPercentage above 100 launches replacements before terminating); instances
  that already match the desired image are skipped with SkipMatching. A checkpoint pauses the refresh for
  one step with a StatusReason; the last checkpoint ends it. The group names its original version until
  the refresh succeeds (new instances launch from the desired one meanwhile). New instances from an image marked unhealthy (`/_amictl/unhealthy`) fail
  the refresh: `Failed`, or with AutoRollback `RollbackInProgress` then `RollbackSuccessful`, the group
  back on its previous configuration.
- **TerminateInstanceInAutoScalingGroup** records the healthy count while the instance is gone; its
  replacement is `Pending` until the group is next described (then `InService`), and unhealthy when
  its image is marked.
- **Target health** (ELBv2 DescribeTargetHealth): an instance marked unhealthy is `unhealthy`
  (`Target.FailedHealthChecks`); stock moto calls every registered running instance healthy.
- **Record**: every step appends the group's healthy in-service count during the step
  (`/_amictl/refresh/record`), so a test asserts the minimum from the emulator, not from amictl.
"""

from __future__ import annotations

import math
import threading
import uuid

from moto.backends import get_backend
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.autoscaling.models import FakeAutoScalingGroup
from moto.autoscaling.responses import AutoScalingResponse

LOCK = threading.RLock()
REFRESHES = {}  # (account, region, group) -> [refresh], newest first
UNHEALTHY = {}  # (account, region) -> {"images": set, "instances": set}
RECORD = {}  # (account, region, group) -> [{"step", "healthy", "desired", "status"}]
ACTIVE = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")


class InProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class NotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"


def _backend(account, region):
    return get_backend("autoscaling")[account][region]


def _group(account, region, name):
    group = _backend(account, region).autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    return group


def _template_version(group):
    return str(group.launch_template_version or "$Default")


def _set_version(group, version):
    """Points the group at `version` of its template, as UpdateAutoScalingGroup would."""
    group.launch_template_version = version
    group.provided_launch_template_version = version


def _launch_from(group, version):
    """New instances launch from `version` while the group still names what it named: AWS applies a
    refresh's DesiredConfiguration to the group only when the refresh succeeds."""
    group.launch_template_version = version


def _image_of(group, version):
    return group.ec2_launch_template.get_version(version).data.get("ImageId")


def _healthy(group):
    return sum(1 for s in group.instance_states if s.lifecycle_state == "InService" and s.health_status == "Healthy")


def _mark_unhealthy(account, region, states):
    marks = UNHEALTHY.get((account, region), {"images": set(), "instances": set()})
    for s in states:
        if s.instance.image_id in marks["images"] or s.instance.id in marks["instances"]:
            s.health_status = "Unhealthy"


# --- the API ------------------------------------------------------------------------------------------------


def start_instance_refresh(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    group = _group(account, region, name)
    prefs = self._get_params().get("Preferences") or {}
    desired = (self._get_params().get("DesiredConfiguration") or {}).get("LaunchTemplate")
    with LOCK:
        key = (account, region, name)
        if any(r["Status"] in ACTIVE for r in REFRESHES.get(key, [])):
            raise InProgress("An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.")
        min_h = int(prefs.get("MinHealthyPercentage", 90))
        max_h = int(prefs.get("MaxHealthyPercentage", 100))
        if not 0 <= min_h <= 100:
            raise ValidationError("MinHealthyPercentage must be between 0 and 100")
        if not 100 <= max_h <= 200 or (min_h == 100 and max_h <= 100) or max_h - min_h > 100:
            raise ValidationError(
                "MaxHealthyPercentage must be between 100 and 200, above 100 when MinHealthyPercentage is 100, "
                "and at most 100 more than MinHealthyPercentage"
            )
        auto_rollback = str(prefs.get("AutoRollback", "false")).lower() == "true"
        current = _template_version(group)
        if group.ec2_launch_template is None:
            raise ValidationError("The instance refresh needs an Auto Scaling group that uses a launch template")
        if auto_rollback and (desired is None or current.lower() in ("$latest", "$default")):
            raise ValidationError(
                "AutoRollback is not supported: the instance refresh has no DesiredConfiguration, or the Auto Scaling "
                "group uses the launch template's $Latest or $Default version"
            )
        target_version = str(desired.get("Version")) if desired else current
        if target_version.lower() in ("$latest", "$default"):
            target_version = str(group.ec2_launch_template.get_version(target_version).number)
        target_image = _image_of(group, target_version)
        skip = str(prefs.get("SkipMatching", "false")).lower() == "true"
        to_replace = [s.instance.id for s in group.instance_states if not (skip and s.instance.image_id == target_image)]
        checkpoints = [int(p) for p in prefs.get("CheckpointPercentages") or []]
        refresh = {
            "account": account,
            "region": region,
            "InstanceRefreshId": str(uuid.uuid4()),
            "AutoScalingGroupName": name,
            "Status": "Pending",
            "StatusReason": None,
            "StartTime": utcnow(),
            "EndTime": None,
            "min": min_h,
            "max": max_h,
            "auto_rollback": auto_rollback,
            "checkpoints": checkpoints,
            "passed_checkpoints": [],
            "pause": False,
            "original_version": current,
            "target_version": target_version,
            "to_replace": to_replace,
            "total": len(to_replace),
            "replaced": 0,
            "preferences": prefs,
            "desired": desired,
            "rollback": None,
        }
        REFRESHES.setdefault(key, []).insert(0, refresh)
        _launch_from(group, target_version)
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def describe_instance_refreshes(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    ids = self._get_params().get("InstanceRefreshIds") or []
    with LOCK:
        for refresh in REFRESHES.get((account, region, name), []):
            if refresh["Status"] in ACTIVE:
                step(account, region, refresh)
        rows = [r for r in REFRESHES.get((account, region, name), []) if not ids or r["InstanceRefreshId"] in ids]
        return ActionResult({"InstanceRefreshes": [_view(r) for r in rows]})


def cancel_instance_refresh(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        refresh = _active(account, region, name)
        refresh["Status"] = "Cancelled"
        refresh["StatusReason"] = "Cancelled by request"
        refresh["EndTime"] = utcnow()
        _launch_from(_group(account, region, name), refresh["original_version"])
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def rollback_instance_refresh(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        refresh = _active(account, region, name)
        if refresh["Status"] != "InProgress":
            raise NotFound(f"No in progress Instance Refresh to roll back for Auto Scaling group {name}")
        if refresh["desired"] is None or refresh["original_version"].lower() in ("$latest", "$default"):
            raise ValidationError(
                "Rollback is not supported: the instance refresh has no DesiredConfiguration, or the group used the "
                "launch template's $Latest or $Default version"
            )
        _begin_rollback(account, region, refresh, "Rollback requested")
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def _active(account, region, name):
    _group(account, region, name)
    for refresh in REFRESHES.get((account, region, name), []):
        if refresh["Status"] in ACTIVE:
            return refresh
    raise NotFound(f"No in progress or pending Instance Refresh found for Auto Scaling group {name}")


def _view(r):
    pct = 100 if r["total"] == 0 else int(100 * r["replaced"] / r["total"])
    left = max(0, r["total"] - r["replaced"])
    view = {
        "InstanceRefreshId": r["InstanceRefreshId"],
        "AutoScalingGroupName": r["AutoScalingGroupName"],
        "Status": r["Status"],
        "StartTime": r["StartTime"],
        "PercentageComplete": pct,
        "InstancesToUpdate": left,
        "ProgressDetails": {"LivePoolProgress": {"PercentageComplete": pct, "InstancesToUpdate": left}},
        "Preferences": r["preferences"],
    }
    if r["StatusReason"]:
        view["StatusReason"] = r["StatusReason"]
    if r["EndTime"]:
        view["EndTime"] = r["EndTime"]
    if r["desired"]:
        view["DesiredConfiguration"] = {"LaunchTemplate": r["desired"]}
    if r["rollback"]:
        view["RollbackDetails"] = r["rollback"]
    return view


# --- steps --------------------------------------------------------------------------------------------------


def step(account, region, refresh):
    """One step of `refresh` (and a record of the group's healthy count during it)."""
    group = _group(account, region, refresh["AutoScalingGroupName"])
    if refresh["Status"] == "Pending":
        refresh["Status"] = "InProgress"
        return
    if refresh["pause"]:
        refresh["pause"] = False
        refresh["StatusReason"] = None
        return
    live = {s.instance.id for s in group.instance_states}
    remaining = [i for i in refresh["to_replace"] if i in live]
    refresh["replaced"] = refresh["total"] - len(remaining)
    if not remaining:
        _finish(group, refresh)
        return
    desired = group.desired_capacity or 0
    keep = math.ceil(desired * refresh["min"] / 100)
    extra = max(0, math.floor(desired * refresh["max"] / 100) - desired)
    healthy = _healthy(group)
    # Unhealthy instances go first: replacing them takes nothing healthy out of service.
    state = {s.instance.id: s for s in group.instance_states}
    unhealthy = [i for i in remaining if state[i].health_status != "Healthy"]
    remaining = unhealthy + [i for i in remaining if i not in unhealthy]
    n = min(len(remaining), max(0, healthy - keep + extra) + len(unhealthy))
    if n == 0 and refresh["min"] < 100 and healthy == desired:
        n = 1  # a refresh replaces at least one instance at a time
    if n <= 0:
        _fail(account, region, refresh, f"fewer than {refresh['min']}% of the group's instances are healthy")
        return
    batch = remaining[:n]
    launched_first = min(n, extra)
    healthy_taken = sum(1 for i in batch if state[i].health_status == "Healthy")
    _record(account, region, group, healthy - max(0, healthy_taken - launched_first), refresh["Status"])
    before = {s.instance.id for s in group.instance_states}
    backend = _backend(account, region)
    if launched_first:
        group.set_desired_capacity(desired + launched_first)
        backend.detach_instances(group.name, batch[:launched_first], True)
        backend.ec2_backend.terminate_instances(batch[:launched_first])
    for instance_id in batch[launched_first:]:
        backend.terminate_instance(instance_id, False)
    new = [s for s in group.instance_states if s.instance.id not in before]
    _mark_unhealthy(account, region, new)
    refresh["replaced"] += n
    if any(s.health_status != "Healthy" for s in new):
        _fail(account, region, refresh, f"{sum(s.health_status != 'Healthy' for s in new)} new instance(s) failed health checks")
        return
    _checkpoint(refresh)


def _checkpoint(refresh):
    """A checkpoint pauses the refresh; the last one ends it (the user guide: the refresh is
    complete when it reaches its last checkpoint percentage)."""
    pct = 100 * refresh["replaced"] / max(1, refresh["total"])
    for c in refresh["checkpoints"]:
        if c not in refresh["passed_checkpoints"] and pct >= c and refresh["Status"] == "InProgress":
            refresh["passed_checkpoints"].append(c)
            if c == max(refresh["checkpoints"]):
                refresh["Status"] = "Successful"
                refresh["EndTime"] = utcnow()
                group = _group(refresh["account"], refresh["region"], refresh["AutoScalingGroupName"])
                _set_version(group, refresh["target_version"])
                return
            refresh["pause"] = True
            refresh["StatusReason"] = f"Waiting for checkpoint: {c}% of the instances replaced"
            return


def _finish(group, refresh):
    refresh["EndTime"] = utcnow()
    refresh["replaced"] = refresh["total"]
    if refresh["Status"] == "RollbackInProgress":
        refresh["Status"] = "RollbackSuccessful"
        _launch_from(group, refresh["original_version"])
    else:
        refresh["Status"] = "Successful"
        _set_version(group, refresh["target_version"])


def _fail(account, region, refresh, why):
    if refresh["auto_rollback"] and refresh["Status"] == "InProgress":
        _begin_rollback(account, region, refresh, why)
        return
    refresh["Status"] = "RollbackFailed" if refresh["Status"] == "RollbackInProgress" else "Failed"
    refresh["StatusReason"] = why
    refresh["EndTime"] = utcnow()
    # The desired configuration is not applied: new instances launch as the group names.
    _launch_from(_group(account, region, refresh["AutoScalingGroupName"]), refresh["original_version"])


def _begin_rollback(account, region, refresh, why):
    group = _group(account, region, refresh["AutoScalingGroupName"])
    refresh["rollback"] = {
        "RollbackReason": why,
        "RollbackStartTime": utcnow(),
        "PercentageCompleteOnRollback": int(100 * refresh["replaced"] / max(1, refresh["total"])),
        "InstancesToUpdateOnRollback": max(0, refresh["total"] - refresh["replaced"]),
    }
    refresh["Status"] = "RollbackInProgress"
    refresh["StatusReason"] = why
    original_image = _image_of(group, refresh["original_version"])
    _launch_from(group, refresh["original_version"])
    refresh["to_replace"] = [s.instance.id for s in group.instance_states if s.instance.image_id != original_image]
    refresh["total"] = len(refresh["to_replace"])
    refresh["replaced"] = 0
    refresh["pause"] = False


def _record(account, region, group, healthy, status):
    RECORD.setdefault((account, region, group.name), []).append(
        {"healthy": healthy, "desired": group.desired_capacity, "status": status}
    )


# --- control ------------------------------------------------------------------------------------------------


def control(path, body, default_account):
    account = body.get("account") or default_account
    region = body.get("region") or "us-east-1"
    if path == "/_amictl/unhealthy":
        with LOCK:
            marks = UNHEALTHY.setdefault((account, region), {"images": set(), "instances": set()})
            marks["images"].update(body.get("image_ids") or [])
            marks["instances"].update(body.get("instance_ids") or [])
            for group in _backend(account, region).autoscaling_groups.values():
                _mark_unhealthy(account, region, group.instance_states)
            return {"images": sorted(marks["images"]), "instances": sorted(marks["instances"])}
    if path == "/_amictl/refresh/record":
        with LOCK:
            return {"steps": RECORD.get((account, region, body["group"]), [])}
    if path == "/_amictl/refresh/tick":
        with LOCK:
            for refresh in REFRESHES.get((account, region, body["group"]), []):
                if refresh["Status"] in ACTIVE:
                    step(account, region, refresh)
            return {"ok": True}
    return None


_stock_terminate_in_group = AutoScalingResponse.terminate_instance_in_auto_scaling_group


def terminate_instance_in_auto_scaling_group(self):
    """As stock moto (a replacement is launched at once unless the capacity is decremented), and the
    group's healthy count while the instance is gone goes in the record, as refresh steps do."""
    account, region = self.current_account, self.region
    instance_id = self._get_param("InstanceId")
    with LOCK:
        for group in _backend(account, region).autoscaling_groups.values():
            state = next((s for s in group.instance_states if s.instance.id == instance_id), None)
            if state is not None:
                healthy = _healthy(group) - (1 if state.health_status == "Healthy" else 0)
                _record(account, region, group, healthy, "TerminateInstanceInAutoScalingGroup")
                before = {s.instance.id for s in group.instance_states}
                result = _stock_terminate_in_group(self)
                new = [s for s in group.instance_states if s.instance.id not in before]
                _mark_unhealthy(account, region, new)
                # A replacement is Pending until the group is next described, as it boots.
                for s in new:
                    s.lifecycle_state = "Pending"
                return result
    return _stock_terminate_in_group(self)


_stock_describe_groups = AutoScalingResponse.describe_auto_scaling_groups


def describe_auto_scaling_groups(self):
    """As stock moto; a replacement is Pending in the first answer that shows it, InService from the
    next (the answer is rendered after this returns, so the state changes at the start of a call)."""
    with LOCK:
        for group in _backend(self.current_account, self.region).autoscaling_groups.values():
            for s in group.instance_states:
                if s.lifecycle_state != "Pending":
                    continue
                if getattr(s, "amictl_seen_pending", False):
                    s.lifecycle_state = "InService"
                else:
                    s.amictl_seen_pending = True
    return _stock_describe_groups(self)


from moto.elbv2.models import ELBv2Backend  # noqa: E402

_stock_target_health = ELBv2Backend.describe_target_health


def describe_target_health(self, target_group_arn, targets):
    """As stock moto (a registered running instance is healthy), except instances marked with
    `/_amictl/unhealthy` (by id or image), which fail their health checks."""
    out = _stock_target_health(self, target_group_arn, targets)
    marks = UNHEALTHY.get((self.account_id, self.region_name), {"images": set(), "instances": set()})
    for h in out:
        instance = self.ec2_backend.get_instance(h.instance_id) if h.status == "healthy" else None
        if instance is not None and (instance.image_id in marks["images"] or instance.id in marks["instances"]):
            h.status = "unhealthy"
            h.reason = "Target.FailedHealthChecks"
            h.description = "Health checks failed"
    return out


def _active_instances(self):
    """Instances that count toward the desired capacity: a Pending one is on its way, not missing
    (stock moto counts InService only, and would launch again for it)."""
    return [x for x in self.instance_states if x.lifecycle_state in ("InService", "Pending")]


def apply_patches():
    ELBv2Backend.describe_target_health = describe_target_health
    FakeAutoScalingGroup.active_instances = _active_instances
    AutoScalingResponse.describe_auto_scaling_groups = describe_auto_scaling_groups
    AutoScalingResponse.terminate_instance_in_auto_scaling_group = terminate_instance_in_auto_scaling_group
    AutoScalingResponse.start_instance_refresh = start_instance_refresh
    AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
    AutoScalingResponse.cancel_instance_refresh = cancel_instance_refresh
    AutoScalingResponse.rollback_instance_refresh = rollback_instance_refresh
