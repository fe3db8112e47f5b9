"""ELBv2 target health and Auto Scaling's view of it, as AWS documents them. Stock moto calls every
registered running instance `healthy` at once and for ever, keeps terminated instances draining for ever,
and Auto Scaling registers its instances in its target groups but never deregisters them.

**Target health** (ELBv2 API reference, TargetHealth and DescribeTargetHealth; user guide "Health checks
for Application Load Balancer target groups", section "Target health status" and its reason codes):

- `unused` / `Target.NotInUse` ("Target group is not configured to receive traffic from the load
  balancer") for every target of a target group that no listener default action and no listener rule
  forwards to (TargetGroupArn, or ForwardConfig.TargetGroups with any weight, 0 included: a weight-0
  target group is still associated with its load balancer and health checked).
- `initial` until the target has passed the group's `HealthyThresholdCount` consecutive health checks
  (the user guide: "initial - The load balancer is in the process of registering the target or
  performing the initial health checks on the target"; reason `Elb.RegistrationInProgress` "Target
  registration is in progress" for the first check, `Elb.InitialHealthChecking` "Initial health checks in
  progress" after it). Then `healthy`.
- `unhealthy` / `Target.FailedHealthChecks` ("Health checks failed") once a failing target has failed
  `UnhealthyThresholdCount` consecutive checks (the API reference, TargetGroup: "The number of
  consecutive health check failures required before considering a target unhealthy"); a healthy target
  that starts failing stays `healthy` until then. A target fails its checks when it is marked through
  `/_amictl/unhealthy` (either kind, see below).
- The clock of health checks: AWS checks every registered target every `HealthCheckIntervalSeconds`
  (TargetGroup, HealthCheckIntervalSeconds: "The approximate amount of time, in seconds, between health
  checks of an individual target"), whoever asks. The emulator does the same in emulator time: one
  interval lasts `HealthCheckIntervalSeconds` × the time scale (0.01 by default: a 30 s interval is
  0.3 s, so a target with the default 5 checks to pass is healthy about 1.5 s after it came into use),
  `POST /_amictl/health-checks {"time_scale": X}` sets it. Checks run only while a listener or rule
  forwards to the target group: the user guide's health checks are the load balancer's, and a target
  group no load balancer uses is checked by nobody. Registering while unused starts nothing; forwarding
  to the group starts the clock.
- `draining` / `Target.DeregistrationInProgress` ("Target deregistration is in progress") after
  DeregisterTargets, or when Auto Scaling deregisters an instance (below), or for a registered instance
  terminated with TerminateInstances, for the target group's `deregistration_delay.timeout_seconds`
  attribute (default 300) in wall-clock seconds (the user guide, "Deregistration delay": "Elastic Load
  Balancing waits ... before completing the deregistration process"). After that the target is no longer
  listed; named explicitly it is `unused` / `Target.NotRegistered`, as moto answers. Registering it again
  starts over with `initial`.
- A stopped instance is `unused` / `Target.InvalidState` ("Target is in the stopped state"), as moto
  answers, and its checks start over when it runs again; a terminated one still registered says
  "Target is in the terminated state".

**Auto Scaling and its target groups** (EC2 Auto Scaling user guide, "Use Elastic Load Balancing to
distribute incoming application traffic": instances are registered when they launch and deregistered
when they are terminated, detached or put in Standby, "the load balancer ... waits for the deregistration
delay"; API reference DetachInstances: "If there are target groups attached to your Auto Scaling group,
the instances are deregistered from the target groups"): every way an instance leaves a group (scale-in,
TerminateInstanceInAutoScalingGroup, refresh replacement, DetachInstances, DeleteAutoScalingGroup with
ForceDelete, TerminateInstances of a member, EnterStandby) deregisters it from the group's target groups,
so it drains. moto registers new instances only on some paths (not for the replacement TerminateInstances
launches): every membership change registers what is missing.

**Auto Scaling health** (EC2 Auto Scaling user guide, "Health checks for instances in an Auto Scaling
group" and "Set the health check grace period for an Auto Scaling group"): an instance becomes
`Unhealthy` only once the group's `HealthCheckGracePeriod` has passed since it launched, and then when
- it is impaired (EC2 status checks fail, or it is not running), whatever the HealthCheckType; or
- the group's HealthCheckType is `ELB` and one of the group's target groups reports it `unhealthy`
  ("If you enable ELB health checks, Amazon EC2 Auto Scaling considers the instance unhealthy if it
  fails either the EC2 status checks or the Elastic Load Balancing health checks").
The grace period's default is 0 (API reference, CreateAutoScalingGroup, HealthCheckGracePeriod:
"Default: 0 seconds"; the user guide: "Its default value is 0 seconds when you create an Auto Scaling
group using the AWS CLI or an SDK"); stock moto makes it 300 (and 300 for an explicit 0).

`POST /_amictl/unhealthy {"image_ids", "instance_ids", "kind"}` marks instances (from these images, now or
later, or these instances): `"kind": "instance"` (the default) — the instance is impaired: its EC2 status
checks fail, so Auto Scaling marks it Unhealthy whatever the HealthCheckType, and its targets fail their
health checks too; `"kind": "application"` — only the load balancer's health checks fail.
"""

from __future__ import annotations

import threading
import time

from moto.autoscaling.models import AutoScalingBackend
from moto.core.utils import utcnow
from moto.elbv2.exceptions import TargetGroupNotFoundError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

LOCK = threading.RLock()  # shared with instance_refresh: one lock for Auto Scaling and target health
MARKS = {}  # (account, region) -> {"instance": {"images", "instances"}, "application": {...}}
KINDS = ("instance", "application")
# Lifecycle states whose instances Auto Scaling keeps registered in its target groups.
REGISTERED_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")

NOT_IN_USE = ("unused", "Target.NotInUse", "Target group is not configured to receive traffic from the load balancer")
REGISTERING = ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
INITIAL = ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress")
FAILED = ("unhealthy", "Target.FailedHealthChecks", "Health checks failed")
DRAINING = ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress")
NOT_REGISTERED = ("unused", "Target.NotRegistered", "Target is not registered to the target group")


# --- marks ---------------------------------------------------------------------------------------------------


def _marks(account, region):
    return MARKS.setdefault((account, region), {k: {"images": set(), "instances": set()} for k in KINDS})


def mark_kind(account, region, instance):
    """How `instance` is marked: "instance" (impaired), "application" (fails only the load balancer's
    checks) or None."""
    marks = MARKS.get((account, region))
    if marks is None or instance is None:
        return None
    for kind in KINDS:
        if instance.id in marks[kind]["instances"] or instance.image_id in marks[kind]["images"]:
            return kind
    return None


def mark(account, region, body):
    kind = body.get("kind") or "instance"
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {list(KINDS)}")
    marks = _marks(account, region)
    marks[kind]["images"].update(body.get("image_ids") or [])
    marks[kind]["instances"].update(body.get("instance_ids") or [])
    return {
        "images": sorted(set().union(*(m["images"] for m in marks.values()))),
        "instances": sorted(set().union(*(m["instances"] for m in marks.values()))),
        "by_kind": {k: {"images": sorted(m["images"]), "instances": sorted(m["instances"])} for k, m in marks.items()},
    }


# --- target groups -------------------------------------------------------------------------------------------


def _records(tg):
    """Target id -> {"state", "ok", "fail", "checks"}: the health-check history of each registered target."""
    return tg.__dict__.setdefault("_amictl_health", {})


def _draining(tg):
    """Target id -> {"until" (time.monotonic()), "port"}: targets in their deregistration delay."""
    return tg.__dict__.setdefault("_amictl_draining", {})


def _new_record():
    return {"state": "initial", "ok": 0, "fail": 0, "checks": 0}


def _instances(ec2_backend):
    return {i.id: i for r in ec2_backend.all_reservations() for i in r.instances}


def _in_use(elb, arn):
    return elb._any_listener_using(arn)


def _delay(tg):
    try:
        return max(0, int(tg.attributes.get("deregistration_delay.timeout_seconds", 300)))
    except (TypeError, ValueError):
        return 300


def _start_draining(tg, target_id, port):
    _records(tg).pop(target_id, None)
    _draining(tg)[target_id] = {"until": time.monotonic() + _delay(tg), "port": port}


def _purge_drained(tg):
    now = time.monotonic()
    drains = _draining(tg)
    for target_id in [t for t, d in drains.items() if d["until"] <= now]:
        del drains[target_id]


def _threshold(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


TIME_SCALE = [0.01]  # emulator seconds per second of AWS health checking


def set_time_scale(body):
    value = float(body.get("time_scale", TIME_SCALE[0]))
    if not 0.0001 <= value <= 10.0:
        raise ValueError("time_scale must be between 0.0001 and 10")
    TIME_SCALE[0] = value
    return {"time_scale": TIME_SCALE[0]}


def _period(tg):
    return max(0.001, _threshold(tg.health_check_interval_seconds, 30) * TIME_SCALE[0])


def _clock(elb, tg):
    """When the health checks of `tg` began counting (None while no load balancer uses it)."""
    if not _in_use(elb, tg.arn):
        tg.__dict__["_amictl_clock"] = None
        return None
    if tg.__dict__.get("_amictl_clock") is None:
        tg.__dict__["_amictl_clock"] = time.monotonic()
    return tg.__dict__["_amictl_clock"]


def accrue(elb, tg, instances=None):
    """Runs the health checks of `tg` that came due since it was last looked at: one every interval
    (in emulator time) while a load balancer uses it."""
    since = _clock(elb, tg)
    if since is None:
        return
    period = _period(tg)
    due = int((time.monotonic() - since) / period)
    if due <= 0:
        return
    # Past both thresholds more checks change nothing: a long quiet spell costs a few ticks only.
    cap = _threshold(tg.healthy_threshold_count, 5) + _threshold(tg.unhealthy_threshold_count, 2) + 2
    for _ in range(min(due, cap)):
        tick(tg, instances)
    tg.__dict__["_amictl_clock"] = since + due * period


def sync_clocks(elb):
    """After a listener or rule changed: each target group's LoadBalancerArns names the load balancers
    that route to it now (ELBv2 API reference, TargetGroup.LoadBalancerArns: "The Amazon Resource Name
    (ARN) of the load balancer that routes traffic to this target group"; moto sets it when a listener is
    created and never again, so a group a ModifyListener or rule starts or stops using kept the old list);
    groups that came into use start their health-check clock now, groups that went out of use stop it."""
    with LOCK:
        routing = {}
        for lb in elb.load_balancers.values():
            for listener in lb.listeners.values():
                for rule in listener.rules.values():
                    for action in rule.actions:
                        for arn in elb._get_target_group_arns_from(action_data=action.data):
                            lbs = routing.setdefault(arn, [])
                            if lb.arn not in lbs:
                                lbs.append(lb.arn)
        for tg in elb.target_groups.values():
            tg.load_balancer_arns = routing.get(tg.arn, [])
            _clock(elb, tg)


def tick(tg, instances=None):
    """One health check of every registered target of `tg` (the caller knows the group is in use)."""
    instances = instances if instances is not None else _instances(tg.ec2_backend)
    healthy_after = _threshold(tg.healthy_threshold_count, 5)
    unhealthy_after = _threshold(tg.unhealthy_threshold_count, 2)
    records = _records(tg)
    for target_id in tg.targets:
        rec = records.setdefault(target_id, _new_record())
        instance = instances.get(target_id)
        if instance is not None and instance.state != "running":
            records[target_id] = _new_record()  # no checks while it is not running; they start over
            continue
        rec["checks"] += 1
        if mark_kind(tg.account_id, tg.region_name, instance) is None:
            rec["ok"], rec["fail"] = rec["ok"] + 1, 0
        else:
            rec["ok"], rec["fail"] = 0, rec["fail"] + 1
        if rec["state"] in ("initial", "unhealthy") and rec["ok"] >= healthy_after:
            rec["state"] = "healthy"
        elif rec["state"] in ("initial", "healthy") and rec["fail"] >= unhealthy_after:
            rec["state"] = "unhealthy"


def _status(tg, target_id, port, state):
    return FakeHealthStatus(target_id, port, tg.health_check_port, *state)


def health(tg, target, in_use, instances):
    """The FakeHealthStatus of `target` ({"Id", "Port"?}) in `tg` now (no health check)."""
    target_id = target["Id"]
    registered = tg.targets.get(target_id)
    if registered is None:
        drain = _draining(tg).get(target_id)
        if drain is not None:
            return _status(tg, target_id, drain["port"], DRAINING)
        port = target.get("Port", tg.port)
        if target_id.startswith("i-"):
            return _status(tg, target_id, port, NOT_REGISTERED)
        return _status(tg, target_id, port, ("unavailable", "Target.NotRegistered", "Target is not registered"))
    port = registered["Port"]
    instance = instances.get(target_id)
    if instance is not None and instance.state in ("stopped", "stopping"):
        return _status(tg, target_id, port, ("unused", "Target.InvalidState", "Target is in the stopped state"))
    if instance is not None and instance.state in ("terminated", "shutting-down"):
        return _status(tg, target_id, port, ("unused", "Target.InvalidState", "Target is in the terminated state"))
    if not in_use:
        return _status(tg, target_id, port, NOT_IN_USE)
    rec = _records(tg).get(target_id) or _new_record()
    if rec["state"] == "healthy":
        return FakeHealthStatus(target_id, port, tg.health_check_port, "healthy")
    if rec["state"] == "unhealthy":
        return _status(tg, target_id, port, FAILED)
    return _status(tg, target_id, port, REGISTERING if rec["checks"] <= 1 else INITIAL)


def state_of(elb, tg, target_id, instances=None):
    """The state DescribeTargetHealth would report for `target_id` now, without a health check."""
    instances = instances if instances is not None else _instances(tg.ec2_backend)
    _purge_drained(tg)
    accrue(elb, tg, instances)
    return health(tg, {"Id": target_id}, _in_use(elb, tg.arn), instances).status


def describe_target_health(self, target_group_arn, targets):
    """DescribeTargetHealth: the health checks that came due (see `accrue`), then each target's state
    (all registered and draining targets when none is named)."""
    with LOCK:
        tg = self.target_groups.get(target_group_arn)
        if tg is None:
            raise TargetGroupNotFoundError()
        instances = _instances(self.ec2_backend)
        in_use = _in_use(self, target_group_arn)
        _purge_drained(tg)
        accrue(self, tg, instances)
        if not targets:
            targets = list(tg.targets.values()) + [{"Id": t, "Port": d["port"]} for t, d in _draining(tg).items()]
        return [health(tg, t, in_use, instances) for t in targets]


_stock_register = FakeTargetGroup.register
_stock_deregister = FakeTargetGroup.deregister


def register(self, targets):
    """RegisterTargets: a target not registered yet starts with `initial` (a draining one stops draining)."""
    with LOCK:
        before = set(self.targets)
        _stock_register(self, targets)
        for target in targets:
            if target["Id"] not in before:
                _records(self)[target["Id"]] = _new_record()
            _draining(self).pop(target["Id"], None)


def deregister(self, targets):
    """DeregisterTargets: the targets drain for the group's deregistration delay."""
    with LOCK:
        ports = {t["Id"]: self.targets[t["Id"]]["Port"] for t in targets if t["Id"] in self.targets}
        try:
            _stock_deregister(self, targets)
        finally:
            for target_id, port in ports.items():
                if target_id not in self.targets:
                    self.deregistered_targets.pop(target_id, None)
                    _start_draining(self, target_id, port)


def deregister_terminated_instances(self, instance_ids):
    """A registered instance terminated (EC2 TerminateInstances) drains for the deregistration delay,
    then is gone (stock moto: draining for ever)."""
    with LOCK:
        for target_id in [t for t in self.targets if t in instance_ids]:
            _start_draining(self, target_id, self.targets.pop(target_id)["Port"])


# --- Auto Scaling --------------------------------------------------------------------------------------------


def sync_group(asg_backend, group):
    """Registers the group's instances in its target groups and deregisters (drains) the ones it
    registered that have left it."""
    elb = asg_backend.elbv2_backend
    members = {s.instance.id for s in group.instance_states if s.lifecycle_state in REGISTERED_STATES}
    running = {s.instance.id for s in group.instance_states if s.instance.state == "running"}
    known = group.__dict__.setdefault("_amictl_registered", {})  # target group ARN -> ids the group registered
    for arn in list(group.target_group_arns):
        tg = elb.target_groups.get(arn)
        if tg is None:
            continue  # target groups can be deleted before their Auto Scaling group
        mine = known.setdefault(arn, set())
        add = [i for i in members if i not in tg.targets and i in running]
        if add:
            tg.register([{"Id": i, "Port": tg.port} for i in add])
        mine.update(add)
        gone = [i for i in mine if i not in members]
        leaving = [i for i in gone if i in tg.targets]
        if leaving:
            tg.deregister([{"Id": i} for i in leaving])
        mine.difference_update(gone)


def update_attached_target_groups(self, group_name):
    group = self.autoscaling_groups[group_name]
    with LOCK:
        sync_group(self, group)


_stock_notify_terminate = AutoScalingBackend.notify_terminate_instances


def notify_terminate_instances(self, instance_ids):
    """EC2 TerminateInstances of group members: as stock moto (the group launches replacements), and
    the terminated instances drain from the group's target groups while the replacements register."""
    with LOCK:
        _stock_notify_terminate(self, instance_ids)
        for group in list(self.autoscaling_groups.values()):
            if group.target_group_arns:
                sync_group(self, group)


def _seconds_since(when):
    if when is None:
        return float("inf")
    try:
        return (utcnow() - when).total_seconds()
    except TypeError:
        return float("inf")


def evaluate(group):
    """Auto Scaling's health checks of the group's instances, now: see the module docstring."""
    grace = int(group.health_check_grace_period or 0)
    account, region = group.account_id, group.region
    elb = group.autoscaling_backend.elbv2_backend
    tgs = None
    for s in group.instance_states:
        if s.health_status != "Healthy" or s.lifecycle_state not in REGISTERED_STATES:
            continue
        if _seconds_since(getattr(s.instance, "launch_time", None)) < grace:
            continue
        kind = mark_kind(account, region, s.instance)
        if kind == "instance" or s.instance.state != "running":
            s.health_status = "Unhealthy"
            continue
        if (group.health_check_type or "EC2").upper() == "ELB" and group.target_group_arns:
            if tgs is None:
                tgs = [elb.target_groups[a] for a in group.target_group_arns if a in elb.target_groups]
                instances = _instances(group.ec2_backend)
            if any(state_of(elb, tg, s.instance.id, instances) == "unhealthy" for tg in tgs):
                s.health_status = "Unhealthy"


def tick_group(group):
    """The health checks that came due in each target group of `group` (a refresh step takes time)."""
    elb = group.autoscaling_backend.elbv2_backend
    instances = None
    for arn in group.target_group_arns:
        tg = elb.target_groups.get(arn)
        if tg is not None:
            instances = instances if instances is not None else _instances(group.ec2_backend)
            _purge_drained(tg)
            accrue(elb, tg, instances)


def target_states(group, instance_id, instances=None):
    """The state of `instance_id` in each of the group's target groups (a deleted one: "missing")."""
    elb = group.autoscaling_backend.elbv2_backend
    instances = instances if instances is not None else _instances(group.ec2_backend)
    out = []
    for arn in group.target_group_arns:
        tg = elb.target_groups.get(arn)
        out.append("missing" if tg is None else state_of(elb, tg, instance_id, instances))
    return out


def serving(group):
    """The group's instances that serve: InService, Auto Scaling-Healthy and, when the group has target
    groups, `healthy` in every one of them."""
    evaluate(group)
    instances = _instances(group.ec2_backend) if group.target_group_arns else None
    count = 0
    for s in group.instance_states:
        if s.lifecycle_state != "InService" or s.health_status != "Healthy":
            continue
        if group.target_group_arns and any(st != "healthy" for st in target_states(group, s.instance.id, instances)):
            continue
        count += 1
    return count


ROUTES_RECORD = {}  # (account, region) -> [{"route", "healthy", "change"}]


def _weighted_arns(action_data):
    """The target groups a forward action sends traffic to (weight above 0)."""
    config = action_data.get("ForwardConfig") or {}
    groups = config.get("TargetGroups") or []
    if groups:
        return [g["TargetGroupArn"] for g in groups if int(g.get("Weight", 1) or 0) > 0]
    return [action_data["TargetGroupArn"]] if action_data.get("TargetGroupArn") else []


def record_routes(elb, change):
    """After a change of listeners or rules: for every listener default action and rule that forwards,
    how many healthy targets stand behind the target groups it sends traffic to (weight above 0). A test
    asserts that no route was ever left with none."""
    with LOCK:
        instances = _instances(elb.ec2_backend)
        rows = ROUTES_RECORD.setdefault((elb.account_id, elb.region_name), [])
        for lb in elb.load_balancers.values():
            for listener in lb.listeners.values():
                for rule in listener.rules.values():
                    arns = [a for action in rule.actions if action.type == "forward" for a in _weighted_arns(action.data)]
                    if not arns:
                        continue
                    healthy = 0
                    for arn in arns:
                        tg = elb.target_groups.get(arn)
                        if tg is not None:
                            healthy += sum(state_of(elb, tg, t, instances) == "healthy" for t in list(tg.targets))
                    rows.append({"route": rule.arn, "healthy": healthy, "change": change})


def routes_record(body, default_account):
    return {"changes": ROUTES_RECORD.get((body.get("account") or default_account, body.get("region") or "us-east-1"), [])}


def _syncing(stock, name):
    """`stock` (a change of listeners or rules), then the target groups' health-check clocks and the record
    of healthy targets behind each route."""

    def wrapper(self, *args, **kwargs):
        result = stock(self, *args, **kwargs)
        sync_clocks(self)
        record_routes(self, name)
        return result

    return wrapper


def apply_patches():
    for name in ("create_listener", "modify_listener", "delete_listener", "create_rule", "modify_rule",
                 "delete_rule", "delete_load_balancer"):
        setattr(ELBv2Backend, name, _syncing(getattr(ELBv2Backend, name), name))
    ELBv2Backend.describe_target_health = describe_target_health
    FakeTargetGroup.register = register
    FakeTargetGroup.deregister = deregister
    FakeTargetGroup.deregister_terminated_instances = deregister_terminated_instances
    AutoScalingBackend.update_attached_target_groups = update_attached_target_groups
    AutoScalingBackend.notify_terminate_instances = notify_terminate_instances
