"""Auto Scaling instance refresh, small but faithful to the API reference (StartInstanceRefresh,
RefreshPreferences, DescribeInstanceRefreshes, CancelInstanceRefresh, RollbackInstanceRefresh) and the user
guide's instance refresh pages, where stock moto answers those four actions with an empty body; and the
Auto Scaling group behaviour a refresh stands on. Target health and Auto Scaling health checks are in
target_health (applied from here).

Instance refresh:
- **Start** validates as AWS does: one refresh at a time per group (InstanceRefreshInProgress);
  MinHealthyPercentage 0–100, MaxHealthyPercentage 100–200 and at least MinHealthyPercentage + 1 when
  MinHealthyPercentage is 100; a DesiredConfiguration names a LaunchTemplate or a MixedInstancesPolicy,
  not both (API reference, DesiredConfiguration: "you must specify either a LaunchTemplate or a
  MixedInstancesPolicy"); AutoRollback needs a DesiredConfiguration, a group that does not use a launch
  template's $Latest or $Default version, and an image that is not an SSM parameter (RefreshPreferences,
  AutoRollback: "A rollback is not supported in the following situations"). New instances launch from the
  desired configuration (its template, version and, with a MixedInstancesPolicy, its overrides' first
  instance type); the group names its previous configuration until the refresh succeeds (StartInstanceRefresh,
  DesiredConfiguration: "Once the instance refresh succeeds, Amazon EC2 Auto Scaling updates the settings of
  the Auto Scaling group to reflect the new desired configuration"). With a MixedInstancesPolicy the group's
  policy then names the desired version, its overrides and distribution kept unless the desired policy gives
  them; a desired LaunchTemplate replaces a group's MixedInstancesPolicy.
- **Steps**: a refresh advances one step per DescribeInstanceRefreshes call that names its group (so no test
  sleeps), or per `POST /_amictl/refresh/tick`. A step terminates as many old instances as the healthy
  minimum allows (unhealthy ones first, at least one at a time when the group is whole) and launches their
  replacements; MaxHealthyPercentage above 100 launches replacements before terminating (RefreshPreferences,
  MaxHealthyPercentage). A step is also one health check of the group's target groups (target_health).
- **Warmup** (RefreshPreferences, InstanceWarmup: "A time period, in seconds, during which an instance
  refresh waits before moving on to replacing the next instance after a new instance enters the InService
  state ... the instance warmup by default is the value of the DefaultInstanceWarmup property, if defined
  ..., or the HealthCheckGracePeriod property otherwise"): a new instance counts as healthy toward the next
  batch, and in PercentageComplete (InstanceRefresh, PercentageComplete: "When the instance's health status
  changes to healthy and the specified warm-up time passes, the instance is considered updated"), only once
  it is InService and Healthy, its warmup has passed in wall-clock seconds and at least one step has passed
  since its launch; for a group with HealthCheckType ELB only once it is `healthy` in every target group of
  the group (until then StatusReason "... has insufficient data to evaluate its health with Elastic Load
  Balancing", as AWS words it). A new instance Auto Scaling marks Unhealthy fails the refresh.
- **SkipMatching** skips instances that match the desired configuration (API reference: "skips replacing
  instances that match the desired configuration ... If no desired configuration is specified, then it skips
  replacing instances that have the same launch template and instance types that the Auto Scaling group was
  using"): same launch template, same (resolved) version, an instance type of the configuration.
- **Checkpoints**: reaching a CheckpointPercentages value (of updated instances) pauses the refresh for
  CheckpointDelay wall-clock seconds (default 3600: "If you specify a value for CheckpointPercentages and not
  for CheckpointDelay, the CheckpointDelay defaults to 3600") with StatusReason "Waiting for checkpoint: N% of
  the instances replaced"; the last checkpoint ends the replacements (the user guide: the refresh is complete
  when it reaches its last checkpoint percentage).
- **BakeTime** ("The amount of time, in seconds, to wait at the end of an instance refresh before the
  instance refresh is considered complete"): after the last replacement the refresh is `Baking` (InstanceRefresh
  Status: "Waiting the specified bake time after an instance refresh has finished updating instances") for
  BakeTime wall-clock seconds, alarms and new instances still checked; then `Successful`.
- **AlarmSpecification** (RefreshPreferences: "CloudWatch alarms can be used to identify any issues and fail
  the operation if an alarm threshold is met"): an alarm of moto's CloudWatch (same account and region) in
  state ALARM at a step of an InProgress or Baking refresh fails it; with AutoRollback it rolls back.
- **Failure** `Failed`, or with AutoRollback `RollbackInProgress` then `RollbackSuccessful` (the user guide,
  "Undo changes with a manual or auto rollback": "Amazon EC2 Auto Scaling automatically reverses what was
  deployed if the instance refresh fails for some reason or if any CloudWatch alarms you specify go into the
  ALARM state"): the instances the refresh launched are replaced from the previous configuration.
- **Cancel** (CancelInstanceRefresh; Status `Cancelling` - "An ongoing instance refresh is being cancelled"):
  `Cancelling` through the next step (so a describe shows it), then `Cancelled`; nothing is rolled back ("this does not roll back any changes
  that it made") and the desired configuration is not applied. A refresh already Cancelling cannot be
  cancelled again (ActiveInstanceRefreshNotFound).
- **RollbackInstanceRefresh** of an InProgress or Baking refresh; `IrreversibleInstanceRefresh` (the API
  reference's error: "The request failed because a desired configuration was not found or an incompatible
  launch template (uses a Systems Manager parameter instead of an AMI ID) or launch template version ($Latest
  or $Default) is present on the Auto Scaling group") when there is no desired configuration, the group uses
  $Latest/$Default, or the previous configuration's image is `resolve:ssm:...`.

Auto Scaling groups (stock moto differs):
- **HealthCheckGracePeriod** defaults to 0 (CreateAutoScalingGroup: "Default: 0 seconds"; moto: 300, also for
  an explicit 0); **DefaultInstanceWarmup** is stored and described (-1 clears it, as UpdateAutoScalingGroup
  documents).
- **UpdateAutoScalingGroup** keeps a MixedInstancesPolicy the call does not name (moto drops it) and applies
  the parts of one it does name (LaunchTemplateSpecification, Overrides, InstancesDistribution fields), the
  rest kept; instances launched afterwards come from that template version, with the first override's
  instance type (InstancesDistribution, OnDemandAllocationStrategy `prioritized`: the overrides' order is the
  priority).
- **DeleteAutoScalingGroup** with instances needs ForceDelete (API reference: "If the group has instances or
  scaling activities in progress, you must specify the option to force the deletion in order for it to
  succeed"; otherwise ResourceInUse); ForceDelete terminates every instance, protected ones too.
- **Launches**: instances a group launches get the launch template version's IamInstanceProfile (Arn or Name)
  or the launch configuration's (an unknown profile is skipped), the `aws:ec2launchtemplate:version` tag and,
  in DescribeAutoScalingGroups/Instances, the LaunchTemplate Version they were launched from (moto: the
  template's default version). RunInstances with IamInstanceProfile and a count above 1 associates the profile
  with every instance (moto: the first only).
- **TerminateInstanceInAutoScalingGroup**: its replacement is `Pending` until the group is next described
  (then `InService`).

**Record** (`/_amictl/refresh/record` -> {"steps": [{"healthy", "desired", "status", "serving"}]}): an entry
at every change of a group's instances: each refresh step that terminates or launches, TerminateInstanceIn-
AutoScalingGroup, SetDesiredCapacity and UpdateAutoScalingGroup that change the desired capacity or the
instances, DetachInstances, AttachInstances, EC2 TerminateInstances of a member. "healthy": InService and Healthy instances
(a refresh step counts it after the step's terminations, before its launches); "serving": InService,
Auto Scaling-Healthy and, when the group has target groups, `healthy` in every one of them, counted when the
entry is made with the removed instances gone; "status": the refresh status or the action. A test asserts
the minimum from the emulator, not from amictl.
"""

from __future__ import annotations

import copy
import math
import time
import uuid

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import FakeAutoScalingGroup, InstanceState
from moto.autoscaling.responses import AutoScalingResponse
from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses.instances import InstanceResponse

import target_health as th

LOCK = th.LOCK
REFRESHES = {}  # (account, region, group) -> [refresh], newest first
RECORD = {}  # (account, region, group) -> [{"healthy", "desired", "status", "serving"}]
ACTIVE = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")
IRREVERSIBLE = (
    "The request failed because a desired configuration was not found or an incompatible launch template (uses a "
    "Systems Manager parameter instead of an AMI ID) or launch template version ($Latest or $Default) is present on "
    "the Auto Scaling group."
)


class InProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class NotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"


class Irreversible(AutoscalingClientError):
    code = "IrreversibleInstanceRefresh"


class ResourceInUse(AutoscalingClientError):
    code = "ResourceInUse"


def _backend(account, region):
    return get_backend("autoscaling")[account][region]


def _group(account, region, name):
    group = _backend(account, region).autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    return group


def _flag(value):
    return str(value).lower() == "true"


# --- launch configurations -----------------------------------------------------------------------------------


def _template(group, spec):
    ec2 = group.ec2_backend
    if spec.get("LaunchTemplateId"):
        return ec2.get_launch_template(spec["LaunchTemplateId"])
    if spec.get("LaunchTemplateName"):
        return ec2.get_launch_template_by_name(spec["LaunchTemplateName"])
    return group.ec2_launch_template


def _number(template, version):
    return str(template.get_version(version or "$Default").number)


def _launch_policy(group):
    """The mixed instances policy new instances launch with (during a refresh: the desired one)."""
    if "_amictl_launch_policy" in group.__dict__:
        return group.__dict__["_amictl_launch_policy"]
    return group.mixed_instances_policy


def _override_types(policy):
    overrides = ((policy or {}).get("LaunchTemplate") or {}).get("Overrides") or []
    return [o["InstanceType"] for o in overrides if o.get("InstanceType")]


def _types(policy, template, number):
    return set(_override_types(policy)) or {template.get_version(number).instance_type}


def _matches(instance, config):
    info = getattr(instance, "_amictl_launch", None)
    return (
        info is not None
        and info["template"] == config["template"].id
        and info["version"] == config["number"]
        and instance.instance_type in config["types"]
    )


def _config(group):
    """What the group names now (to restore, and to roll back to)."""
    template = group.ec2_launch_template
    version = str(group.launch_template_version or "$Default")
    number = _number(template, version)
    policy = copy.deepcopy(group.mixed_instances_policy)
    return {"template": template, "version": version, "number": number, "policy": policy,
            "types": _types(policy, template, number)}


def _launch_from(group, config):
    """New instances launch from `config` while the group still names what it named: AWS applies a
    refresh's DesiredConfiguration to the group only when the refresh succeeds."""
    group.ec2_launch_template = config["template"]
    group.launch_template_version = config["number"]
    group.__dict__["_amictl_launch_policy"] = config["policy"]


def _restore_launch(group, refresh):
    original = refresh["original"]
    group.ec2_launch_template = original["template"]
    group.launch_template_version = original["version"]
    group.__dict__.pop("_amictl_launch_policy", None)


def merge_policy(old, given):
    """A MixedInstancesPolicy with the parts of `given` applied to `old` (the rest kept)."""
    out = copy.deepcopy(old) if old else {}
    g_lt = given.get("LaunchTemplate") or {}
    if g_lt:
        lt = out.setdefault("LaunchTemplate", {})
        for key in ("LaunchTemplateSpecification", "Overrides"):
            if key in g_lt:
                lt[key] = copy.deepcopy(g_lt[key])
    if given.get("InstancesDistribution"):
        out.setdefault("InstancesDistribution", {}).update(copy.deepcopy(given["InstancesDistribution"]))
    return out


def _apply(group, refresh):
    """The refresh succeeded: the group takes its desired configuration."""
    target = refresh["target"]
    group.__dict__.pop("_amictl_launch_policy", None)
    if refresh["desired_kind"] is None:
        _restore_launch(group, refresh)
        return
    template = target["template"]
    group.ec2_launch_template = template
    group.launch_template_version = target["version"]
    if refresh["desired_kind"] == "MixedInstancesPolicy":
        policy = copy.deepcopy(target["policy"])
        policy.setdefault("LaunchTemplate", {})["LaunchTemplateSpecification"] = {
            "LaunchTemplateId": template.id,
            "LaunchTemplateName": template.name,
            "Version": target["version"],
        }
        policy["LaunchTemplate"].setdefault("Overrides", [])
        group.mixed_instances_policy = policy
    else:
        group.mixed_instances_policy = None
        group.provided_launch_template_version = target["version"]


def _alarms_firing(account, region, names):
    if not names:
        return []
    alarms = get_backend("cloudwatch")[account][region].alarms
    return [n for n in names if n in alarms and alarms[n].state_value == "ALARM"]


# --- the API ------------------------------------------------------------------------------------------------


def start_instance_refresh(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    group = _group(account, region, name)
    params = self._get_params()
    prefs = params.get("Preferences") or {}
    desired_cfg = {k: v for k, v in (params.get("DesiredConfiguration") or {}).items() if v}
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
        if group.ec2_launch_template is None:
            raise ValidationError("The instance refresh needs an Auto Scaling group that uses a launch template")
        if len(desired_cfg) > 1:
            raise ValidationError("A DesiredConfiguration specifies either a LaunchTemplate or a MixedInstancesPolicy, not both")
        original = _config(group)
        auto_rollback = _flag(prefs.get("AutoRollback", "false"))
        if auto_rollback and _irreversible(desired_cfg, original):
            raise ValidationError(
                "AutoRollback is not supported: the instance refresh has no DesiredConfiguration, the Auto Scaling "
                "group uses the launch template's $Latest or $Default version, or its launch template takes the "
                "image from a Systems Manager parameter"
            )
        desired_kind = next(iter(desired_cfg), None)
        if desired_kind == "MixedInstancesPolicy":
            policy = merge_policy(group.mixed_instances_policy, desired_cfg["MixedInstancesPolicy"])
            spec = (policy.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification") or {}
            template, version = _template(group, spec), str(spec.get("Version") or "$Default")
        elif desired_kind == "LaunchTemplate":
            spec = desired_cfg["LaunchTemplate"]
            policy, template, version = None, _template(group, spec), str(spec.get("Version") or "$Default")
        else:
            policy, template, version = original["policy"], original["template"], original["version"]
        number = _number(template, version)
        target = {"template": template, "version": version, "number": number, "policy": policy,
                  "types": _types(policy, template, number)}
        skip = _flag(prefs.get("SkipMatching", "false"))
        to_replace = [s.instance.id for s in group.instance_states if not (skip and _matches(s.instance, target))]
        checkpoints = sorted(int(p) for p in prefs.get("CheckpointPercentages") or [])
        warmup = prefs.get("InstanceWarmup")
        if warmup is None:
            warmup = getattr(group, "default_instance_warmup", None)
        if warmup is None:
            warmup = group.health_check_grace_period or 0
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
            "checkpoint_delay": int(prefs.get("CheckpointDelay", 3600)),
            "passed_checkpoints": [],
            "pause_until": None,
            "bake_time": int(prefs.get("BakeTime", 0) or 0),
            "bake_until": None,
            "warmup": int(warmup),
            "alarms": list((prefs.get("AlarmSpecification") or {}).get("Alarms") or []),
            "original": original,
            "target": target,
            "desired_kind": desired_kind,
            "to_replace": to_replace,
            "total": len(to_replace),
            "updated": 0,
            "new": {},  # instance id -> {"step", "at"}: launched by this refresh (or its rollback)
            "launched": set(),  # every instance the refresh launched
            "steps": 0,
            "preferences": prefs,
            "desired": desired_cfg,
            "rollback": None,
        }
        REFRESHES.setdefault(key, []).insert(0, refresh)
        _launch_from(group, target)
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def _irreversible(desired_cfg, original):
    image = original["template"].get_version(original["number"]).data.get("ImageId") or ""
    return (
        not desired_cfg
        or original["version"].lower() in ("$latest", "$default")
        or str(image).startswith("resolve:ssm:")
    )


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
        if refresh["Status"] == "Cancelling":
            raise NotFound(f"No in progress or pending Instance Refresh found for Auto Scaling group {name}")
        refresh["Status"] = "Cancelling"
        refresh["StatusReason"] = None
        refresh["cancel_steps"] = 1  # the next step still answers Cancelling
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def rollback_instance_refresh(self):
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        refresh = _active(account, region, name)
        if refresh["Status"] not in ("InProgress", "Baking"):
            raise NotFound(f"No in progress Instance Refresh to roll back for Auto Scaling group {name}")
        if _irreversible(refresh["desired"], refresh["original"]):
            raise Irreversible(IRREVERSIBLE)
        _begin_rollback(account, region, refresh, "Rollback requested")
    return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def _active(account, region, name):
    _group(account, region, name)
    for refresh in REFRESHES.get((account, region, name), []):
        if refresh["Status"] in ACTIVE:
            return refresh
    raise NotFound(f"No in progress or pending Instance Refresh found for Auto Scaling group {name}")


def _progress(r):
    """(PercentageComplete, InstancesToUpdate)."""
    total, updated = r["total"], min(r["updated"], r["total"])
    if r["Status"] == "Successful" and updated == total:
        return 100, 0
    if r["rollback"]:
        # PercentageComplete "gradually goes back down to zero during a rollback".
        base = r["rollback"]["PercentageCompleteOnRollback"]
        return (int(base * (total - updated) / total) if total else 0), total - updated
    return (100 if total == 0 else int(100 * updated / total)), total - updated


def _view(r):
    pct, left = _progress(r)
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
        view["DesiredConfiguration"] = r["desired"]
    if r["rollback"]:
        view["RollbackDetails"] = r["rollback"]
    return view


# --- steps --------------------------------------------------------------------------------------------------


def step(account, region, refresh):
    """One step of `refresh` (and a record of the group's instances when it changes them)."""
    group = _group(account, region, refresh["AutoScalingGroupName"])
    refresh["steps"] += 1
    status = refresh["Status"]
    if status == "Pending":
        refresh["Status"] = "InProgress"
        return
    if status == "Cancelling":
        if refresh.get("cancel_steps"):
            refresh["cancel_steps"] -= 1
            return
        _end(refresh, "Cancelled", "Cancelled by request")
        _restore_launch(group, refresh)
        return
    th.tick_group(group)  # the load balancer goes on checking while the refresh works
    th.evaluate(group)
    if status in ("InProgress", "Baking"):
        firing = _alarms_firing(account, region, refresh["alarms"])
        if firing:
            _fail(account, region, refresh, f"CloudWatch alarm(s) in ALARM state: {', '.join(firing)}")
            return
    now = time.monotonic()
    live = {s.instance.id: s for s in group.instance_states}
    new = {i: info for i, info in refresh["new"].items() if i in live}
    bad = [i for i in new if live[i].health_status != "Healthy"]
    if bad:
        _fail(account, region, refresh, f"{len(bad)} new instance(s) failed health checks: {', '.join(bad)}")
        return
    if status == "Baking":
        if now >= refresh["bake_until"]:
            _succeed(group, refresh)
        return
    if refresh["pause_until"] is not None:
        if now < refresh["pause_until"]:
            return
        refresh["pause_until"] = None
        refresh["StatusReason"] = None
    waits = {i: _waiting_for(group, refresh, live[i], info, now) for i, info in new.items()}
    waiting = [i for i, why in waits.items() if why]
    ready = len(new) - len(waiting)
    remaining = [i for i in refresh["to_replace"] if i in live]
    refresh["updated"] = max(0, min(refresh["total"] - len(remaining), ready))
    if status == "InProgress" and _checkpoint(group, refresh):
        return
    if not remaining and not waiting:
        _finish(group, refresh)
        return

    desired = group.desired_capacity or 0
    keep = math.ceil(desired * refresh["min"] / 100)
    cap = max(desired, math.floor(desired * refresh["max"] / 100))
    members = len(group.instance_states)
    healthy = sum(
        1
        for s in group.instance_states
        if s.lifecycle_state == "InService" and s.health_status == "Healthy" and s.instance.id not in waiting
    )
    # Unhealthy instances go first: replacing them takes nothing healthy out of service.
    unhealthy = [i for i in remaining if live[i].health_status != "Healthy"]
    order = unhealthy + [i for i in remaining if i not in unhealthy]
    t = min(len(remaining), len(unhealthy) + max(0, healthy - keep))
    if t == 0 and remaining and not waiting and members <= desired and refresh["min"] < 100 and healthy == desired:
        t = 1  # a refresh replaces at least one instance at a time
    members_after = members - t
    replacements = max(0, desired - members_after)
    after = members_after + replacements
    uncovered = (len(remaining) - t) - max(0, after - desired)  # old instances with no replacement launched yet
    extras = max(0, min(cap - after, uncovered))
    if t == 0 and replacements == 0 and extras == 0:
        if waiting:
            if refresh["Status"] == "InProgress":
                refresh["StatusReason"] = waits[waiting[0]]
            return
        _fail(account, region, refresh, f"fewer than {refresh['min']}% of the group's instances are healthy")
        return
    if t:
        _terminate(account, region, group, order[:t])
    _record(account, region, group, refresh["Status"])
    for instance_id in _launch(account, region, group, replacements + extras):
        refresh["new"][instance_id] = {"step": refresh["steps"], "at": now}
        refresh["launched"].add(instance_id)
    if refresh["Status"] == "InProgress":
        refresh["StatusReason"] = None


def _waiting_for(group, refresh, state, info, now):
    """Why the refresh does not count this new instance yet (None: it is updated)."""
    in_service = state.lifecycle_state == "InService" and state.health_status == "Healthy"
    if not in_service or refresh["steps"] <= info["step"] or now - info["at"] < refresh["warmup"]:
        return f"Waiting for instances to warm up before continuing. For example: {state.instance.id} is warming up."
    if (group.health_check_type or "EC2").upper() == "ELB" and group.target_group_arns:
        if any(s != "healthy" for s in th.target_states(group, state.instance.id)):
            return (
                "Waiting for remaining instances to be available. For example: "
                f"{state.instance.id} has insufficient data to evaluate its health with Elastic Load Balancing."
            )
    return None


def _terminate(account, region, group, ids):
    """The refresh terminates `ids`: they leave the group (and drain from its target groups)."""
    gone = set(ids)
    group.instance_states = [s for s in group.instance_states if s.instance.id not in gone]
    _backend(account, region).ec2_backend.terminate_instances(list(ids))
    th.sync_group(_backend(account, region), group)


def _launch(account, region, group, n):
    if n <= 0:
        return []
    before = {s.instance.id for s in group.instance_states}
    group.replace_autoscaling_group_instances(n, group.get_propagated_tags())
    th.sync_group(_backend(account, region), group)
    return [s.instance.id for s in group.instance_states if s.instance.id not in before]


def _checkpoint(group, refresh):
    """A checkpoint pauses the refresh for CheckpointDelay; the last one ends it. True: the step is over."""
    total = refresh["total"]
    pct = 100 if total == 0 else 100 * refresh["updated"] / total
    for c in refresh["checkpoints"]:
        if c in refresh["passed_checkpoints"] or pct < c:
            continue
        refresh["passed_checkpoints"].append(c)
        if c == refresh["checkpoints"][-1]:
            _finish(group, refresh)
            return True
        refresh["pause_until"] = time.monotonic() + refresh["checkpoint_delay"]
        refresh["StatusReason"] = f"Waiting for checkpoint: {c}% of the instances replaced"
        return True
    return False


def _end(refresh, status, reason):
    refresh["Status"] = status
    refresh["StatusReason"] = reason
    refresh["EndTime"] = utcnow()


def _finish(group, refresh):
    if refresh["Status"] == "RollbackInProgress":
        _end(refresh, "RollbackSuccessful", refresh["StatusReason"])
        _restore_launch(group, refresh)
        return
    if refresh["bake_time"] > 0:
        refresh["Status"] = "Baking"
        refresh["StatusReason"] = None
        refresh["bake_until"] = time.monotonic() + refresh["bake_time"]
        return
    _succeed(group, refresh)


def _succeed(group, refresh):
    _end(refresh, "Successful", None)
    _apply(group, refresh)


def _fail(account, region, refresh, why):
    if refresh["auto_rollback"] and refresh["Status"] in ("InProgress", "Baking"):
        _begin_rollback(account, region, refresh, why)
        return
    _end(refresh, "RollbackFailed" if refresh["Status"] == "RollbackInProgress" else "Failed", why)
    # The desired configuration is not applied: new instances launch as the group names.
    _restore_launch(_group(account, region, refresh["AutoScalingGroupName"]), refresh)


def _begin_rollback(account, region, refresh, why):
    group = _group(account, region, refresh["AutoScalingGroupName"])
    pct, left = _progress(refresh)
    refresh["rollback"] = {
        "RollbackReason": why,
        "RollbackStartTime": utcnow(),
        "PercentageCompleteOnRollback": pct,
        "InstancesToUpdateOnRollback": left,
    }
    refresh["Status"] = "RollbackInProgress"
    refresh["StatusReason"] = why
    _restore_launch(group, refresh)
    original, target = refresh["original"], refresh["target"]
    # What the refresh deployed: the instances it launched, and any the group launched from its configuration.
    refresh["to_replace"] = [
        s.instance.id
        for s in group.instance_states
        if not _matches(s.instance, original) and (s.instance.id in refresh["launched"] or _matches(s.instance, target))
    ]
    refresh["total"] = len(refresh["to_replace"])
    refresh["updated"] = 0
    refresh["new"] = {}
    refresh["pause_until"] = None
    refresh["bake_until"] = None


def _healthy(group):
    return sum(1 for s in group.instance_states if s.lifecycle_state == "InService" and s.health_status == "Healthy")


def _record(account, region, group, status):
    serving = th.serving(group)  # Auto Scaling's health checks first
    RECORD.setdefault((account, region, group.name), []).append(
        {"healthy": _healthy(group), "desired": group.desired_capacity, "status": status, "serving": serving}
    )


# --- control ------------------------------------------------------------------------------------------------


def control(path, body, default_account):
    account = body.get("account") or default_account
    region = body.get("region") or "us-east-1"
    if path == "/_amictl/unhealthy":
        with LOCK:
            out = th.mark(account, region, body)
            for group in _backend(account, region).autoscaling_groups.values():
                th.evaluate(group)
            return out
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


# --- Auto Scaling groups ------------------------------------------------------------------------------------


_stock_terminate_in_group = AutoScalingResponse.terminate_instance_in_auto_scaling_group


def terminate_instance_in_auto_scaling_group(self):
    """As stock moto (a replacement is launched at once unless the capacity is decremented), the
    replacement Pending until the group is next described, and an entry in the record."""
    account, region = self.current_account, self.region
    instance_id = self._get_param("InstanceId")
    with LOCK:
        for group in _backend(account, region).autoscaling_groups.values():
            if any(s.instance.id == instance_id for s in group.instance_states):
                before = {s.instance.id for s in group.instance_states}
                result = _stock_terminate_in_group(self)
                # A replacement is Pending until the group is next described, as it boots.
                for s in group.instance_states:
                    if s.instance.id not in before:
                        s.lifecycle_state = "Pending"
                _record(account, region, group, "TerminateInstanceInAutoScalingGroup")
                return result
    return _stock_terminate_in_group(self)


_stock_describe_groups = AutoScalingResponse.describe_auto_scaling_groups


def describe_auto_scaling_groups(self):
    """As stock moto, with Auto Scaling's health checks done; a replacement is Pending in the first
    answer that shows it, InService from the next (the answer is rendered after this returns, so the
    state changes at the start of a call)."""
    with LOCK:
        for group in _backend(self.current_account, self.region).autoscaling_groups.values():
            for s in group.instance_states:
                if s.lifecycle_state != "Pending":
                    continue
                if getattr(s, "amictl_seen_pending", False):
                    s.lifecycle_state = "InService"
                else:
                    s.amictl_seen_pending = True
            th.evaluate(group)
    return _stock_describe_groups(self)


_stock_describe_instances = AutoScalingResponse.describe_auto_scaling_instances


def describe_auto_scaling_instances(self):
    with LOCK:
        for group in _backend(self.current_account, self.region).autoscaling_groups.values():
            th.evaluate(group)
    return _stock_describe_instances(self)


def _snapshot(group):
    return (group.desired_capacity, frozenset(s.instance.id for s in group.instance_states))


def _recording(stock, action):
    """`stock` with an entry in the group's record when it changed the desired capacity or the instances."""

    def handler(self):
        account, region = self.current_account, self.region
        name = self._get_param("AutoScalingGroupName")
        with LOCK:
            group = _backend(account, region).autoscaling_groups.get(name)
            before = _snapshot(group) if group is not None else None
            result = stock(self)
            group = _backend(account, region).autoscaling_groups.get(name)
            if group is not None and before is not None and _snapshot(group) != before:
                _record(account, region, group, action)
            return result

    return handler


_stock_create_group = AutoScalingResponse.create_auto_scaling_group
_stock_update_group_response = AutoScalingResponse.update_auto_scaling_group


def _set_warmup(self, group):
    warmup = self._get_int_param("DefaultInstanceWarmup")
    if warmup is not None:
        group.default_instance_warmup = None if warmup < 0 else warmup


def create_auto_scaling_group(self):
    """HealthCheckGracePeriod defaults to 0 as the API reference says (moto: 300, and 300 for 0);
    DefaultInstanceWarmup is kept; LifecycleHookSpecificationList makes the group's lifecycle hooks
    (API reference, CreateAutoScalingGroup: "One or more lifecycle hooks to add to the Auto Scaling
    group before instances are launched"; moto ignores the list)."""
    result = _stock_create_group(self)
    with LOCK:
        backend = _backend(self.current_account, self.region)
        name = self._get_param("AutoScalingGroupName")
        group = backend.autoscaling_groups[name]
        group.health_check_grace_period = self._get_int_param("HealthCheckGracePeriod") or 0
        group.default_instance_warmup = None
        _set_warmup(self, group)
        for hook in self._get_params().get("LifecycleHookSpecificationList") or []:
            timeout = hook.get("HeartbeatTimeout")
            backend.create_lifecycle_hook(
                name=hook["LifecycleHookName"],
                as_name=name,
                transition=hook["LifecycleTransition"],
                timeout=int(timeout) if timeout is not None else None,
                result=hook.get("DefaultResult") or "ABANDON",
            )
    return result


def _update_group_response(self):
    result = _stock_update_group_response(self)
    group = _backend(self.current_account, self.region).autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
    if group is not None:
        _set_warmup(self, group)
    return result


update_auto_scaling_group = _recording(_update_group_response, "UpdateAutoScalingGroup")

_stock_group_update = FakeAutoScalingGroup.update


def group_update(self, availability_zones, desired_capacity, max_size, min_size, launch_config_name,
                 launch_template, vpc_zone_identifier, health_check_period, health_check_type,
                 new_instances_protected_from_scale_in=None, mixed_instances_policy=None):
    """UpdateAutoScalingGroup keeps what a call does not name: a MixedInstancesPolicy stays unless the
    call gives a LaunchTemplate or LaunchConfigurationName instead; one given is applied to it part by
    part (moto: the policy is replaced, and dropped when not given)."""
    kept = not mixed_instances_policy and not launch_template and not launch_config_name
    launch_version = getattr(self, "launch_template_version", None)
    if mixed_instances_policy:
        mixed_instances_policy = merge_policy(self.mixed_instances_policy, mixed_instances_policy)
    elif kept:
        mixed_instances_policy = copy.deepcopy(self.mixed_instances_policy)
    spec = ((mixed_instances_policy or {}).get("LaunchTemplate") or {}).get("LaunchTemplateSpecification") or {}
    if spec.get("LaunchTemplateId") and spec.get("LaunchTemplateName"):
        del spec["LaunchTemplateName"]  # as described it names both; moto re-reads it and wants one
    _stock_group_update(
        self, availability_zones, desired_capacity, max_size, min_size, launch_config_name, launch_template,
        vpc_zone_identifier, health_check_period, health_check_type,
        new_instances_protected_from_scale_in=new_instances_protected_from_scale_in,
        mixed_instances_policy=mixed_instances_policy,
    )
    if kept and mixed_instances_policy is not None:
        self.launch_template_version = launch_version  # a refresh may be launching from another version


_stock_delete_group = AutoScalingResponse.delete_auto_scaling_group


def delete_auto_scaling_group(self):
    """Without ForceDelete a group with instances is not deleted (ResourceInUse); with it every
    instance is terminated, and drains from the group's target groups."""
    account, region = self.current_account, self.region
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        backend = _backend(account, region)
        group = backend.autoscaling_groups.get(name)
        if group is not None and group.instance_states:
            if not self._get_bool_param("ForceDelete", False):
                raise ResourceInUse(
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance "
                    "request(s) still in the group."
                )
            ids = [s.instance.id for s in group.instance_states]
            group.instance_states = []
            backend.ec2_backend.terminate_instances(ids)
            th.sync_group(backend, group)
        result = _stock_delete_group(self)
        REFRESHES.pop((account, region, name), None)
        return result


_stock_replace_instances = FakeAutoScalingGroup.replace_autoscaling_group_instances


def replace_autoscaling_group_instances(self, count_needed, propagated_tags):
    """Launches as stock moto, and gives each instance what AWS gives it from the launch template
    version (or launch configuration): its IamInstanceProfile and the version it came from."""
    before = {s.instance.id for s in self.instance_states}
    _stock_replace_instances(self, count_needed, propagated_tags)
    new = [s.instance for s in self.instance_states if s.instance.id not in before]
    profile = {}
    info = None
    if self.ec2_launch_template is not None:
        version = self.ec2_launch_template.get_version(self.launch_template_version or "$Default")
        profile = version.data.get("IamInstanceProfile") or {}
        info = {"template": self.ec2_launch_template.id, "name": self.ec2_launch_template.name,
                "version": str(version.number)}
    elif self.launch_config is not None and getattr(self.launch_config, "iam_instance_profile", None):
        p = self.launch_config.iam_instance_profile
        profile = {"Arn": p} if str(p).startswith("arn:") else {"Name": p}
    for instance in new:
        if info is not None:
            instance._amictl_launch = info
            instance.add_tags({"aws:ec2launchtemplate:version": info["version"]})
        if profile:
            try:
                self.ec2_backend.associate_iam_instance_profile(
                    instance_id=instance.id,
                    iam_instance_profile_name=profile.get("Name"),
                    iam_instance_profile_arn=profile.get("Arn"),
                )
            except Exception:  # an unknown profile: the emulator launches without it
                pass


def _group_instance_type(self):
    """With a MixedInstancesPolicy, the first override's instance type (prioritized allocation)."""
    types = _override_types(_launch_policy(self))
    return types[0] if types else _stock_instance_type.fget(self)


_stock_instance_type = FakeAutoScalingGroup.instance_type
_stock_group_launch_template = FakeAutoScalingGroup.launch_template
_stock_state_launch_template = InstanceState.launch_template


def _group_launch_template(self):
    """A group with a MixedInstancesPolicy names its template there, not in LaunchTemplate."""
    if self.mixed_instances_policy:
        return None
    return _stock_group_launch_template.fget(self)


def _state_launch_template(self):
    """An instance's LaunchTemplate names the version it was launched from (moto: the default version)."""
    info = getattr(self.instance, "_amictl_launch", None)
    if info is None or self.auto_scaling_group is None or self.auto_scaling_group.ec2_launch_template is None:
        return _stock_state_launch_template.fget(self)
    return {"LaunchTemplateId": info["template"], "LaunchTemplateName": info["name"], "Version": info["version"]}


def _active_instances(self):
    """Instances that count toward the desired capacity: a Pending one is on its way, not missing
    (stock moto counts InService only, and would launch again for it)."""
    return [x for x in self.instance_states if x.lifecycle_state in ("InService", "Pending")]


_stock_ec2_terminate = InstanceResponse.terminate_instances


def ec2_terminate_instances(self):
    """EC2 TerminateInstances: as stock moto, and an entry in the record of each group it took an
    instance from."""
    account, region = self.current_account, self.region
    ids = set(self._get_param("InstanceIds", []))
    with LOCK:
        groups = [
            g for g in _backend(account, region).autoscaling_groups.values()
            if any(s.instance.id in ids for s in g.instance_states)
        ]
        result = _stock_ec2_terminate(self)
        for group in groups:
            _record(account, region, group, "TerminateInstances")
        return result


_stock_backend_run_instances = InstanceBackend.run_instances


def backend_run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
    """RunInstances with IamInstanceProfile associates it with every instance launched (moto's response
    associates the first only)."""
    reservation = _stock_backend_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
    name, arn = kwargs.get("iam_instance_profile_name"), kwargs.get("iam_instance_profile_arn")
    if name or arn:
        for instance in reservation.instances[1:]:
            self.associate_iam_instance_profile(instance.id, iam_instance_profile_name=name, iam_instance_profile_arn=arn)
    return reservation


def apply_patches():
    th.apply_patches()
    FakeAutoScalingGroup.active_instances = _active_instances
    FakeAutoScalingGroup.update = group_update
    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances
    FakeAutoScalingGroup.instance_type = property(_group_instance_type)
    FakeAutoScalingGroup.launch_template = property(_group_launch_template)
    InstanceState.launch_template = property(_state_launch_template)
    InstanceBackend.run_instances = backend_run_instances
    InstanceResponse.terminate_instances = ec2_terminate_instances
    AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingResponse.update_auto_scaling_group = update_auto_scaling_group
    AutoScalingResponse.delete_auto_scaling_group = delete_auto_scaling_group
    AutoScalingResponse.set_desired_capacity = _recording(AutoScalingResponse.set_desired_capacity, "SetDesiredCapacity")
    AutoScalingResponse.detach_instances = _recording(AutoScalingResponse.detach_instances, "DetachInstances")
    AutoScalingResponse.attach_instances = _recording(AutoScalingResponse.attach_instances, "AttachInstances")
    AutoScalingResponse.describe_auto_scaling_groups = describe_auto_scaling_groups
    AutoScalingResponse.describe_auto_scaling_instances = describe_auto_scaling_instances
    AutoScalingResponse.terminate_instance_in_auto_scaling_group = terminate_instance_in_auto_scaling_group
    AutoScalingResponse.start_instance_refresh = start_instance_refresh
    AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
    AutoScalingResponse.cancel_instance_refresh = cancel_instance_refresh
    AutoScalingResponse.rollback_instance_refresh = rollback_instance_refresh
