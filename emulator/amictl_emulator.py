#!/usr/bin/env python3
"""moto in server mode, hosted in-process, with the gaps amictl's tests need filled.

Listens on 127.0.0.1 only. On top of stock moto 5.2.5 it:

* paginates DescribeLaunchTemplates, DescribeLaunchTemplateVersions (MaxResults 1..200, default 200),
  DescribeImages, DescribeSnapshots, DescribeFleets, DescribeSpotFleetRequests and
  DescribeSpotInstanceRequests with MaxResults/NextToken (stock moto caps the first two at 15 items with
  no NextToken and ignores MaxResults on the others), so amictl's pagination is exercised as it is
  against AWS. As EC2 does, a describe by ids is not paginated, and DescribeImages, DescribeSnapshots
  (MaxResults at most 1000) and the fleet/spot describes answer a request with neither MaxResults nor
  NextToken with everything and no token. moto itself paginates DescribeInstances (MaxResults; it
  pages an unpaginated request at 100), DescribeAutoScalingGroups and DescribeLaunchConfigurations
  (MaxRecords, default 50), GetParametersByPath (MaxResults <= 10) and GetParameterHistory (<= 50);
* a page-size cap for tests (`--max-page-size N`, `POST /_amictl/page-size {"max": N}`, 0 = off): every
  page of every list above holds at most N items whatever MaxResults/MaxRecords says (for
  DescribeInstances, DescribeImages, DescribeSnapshots and the fleet/spot describes: every page of a
  paginated request, one with MaxResults or NextToken), so clients must follow NextToken;
* throttling for tests (`--throttle FRACTION [--throttle-seed N]`, `POST /_amictl/throttle {"fraction":
  0.3, "seed": 1, "actions": ["DescribeImages", ...] (optional; all actions when absent)}`): that
  fraction of AWS requests (chosen by random.Random(seed), so the same sequence of requests is
  throttled the same way each time) is answered, before moto sees it (no effect), with the service's
  own throttling error: EC2 `RequestLimitExceeded` (HTTP 503, EC2's <Response><Errors> document), JSON
  services such as SSM `ThrottlingException` (HTTP 400, {"__type", "message": "Rate exceeded"}), query
  services such as Auto Scaling and STS `Throttling` (HTTP 400, <ErrorResponse>, Type Sender, "Rate
  exceeded"). The service is the one in the SigV4 credential scope. Never throttled: control requests,
  /moto-api/, unsigned requests, REST-protocol services, and the emulator's own boto3 calls (demo seed,
  /_amictl/call: they carry a per-process secret header). An action name in "actions" matches the
  query Action or the operation part of X-Amz-Target ("GetParameter" or "AmazonSSM.GetParameter");
* DeregisterImage honours DeleteAssociatedSnapshots as the API reference documents it (see
  `deregister_image_response`): the image's snapshots that no other AMI maps are deleted with it,
  each reported in DeleteSnapshotResults;
* DescribeImages honours IncludeDisabled and IncludeDeprecated as the API reference documents them
  (see `_visible_images`): disabled images are left out unless IncludeDisabled, by id too; images of
  other owners whose DeprecationTime has passed are left out unless IncludeDeprecated; an owner always
  sees its own deprecated images;
* implements EnableImageDeprecation (DeprecateAt rounded to the nearest minute; refused in the past,
  beyond 10 years, or for a public AMI beyond 2 years after its creation; owner only) and
  DisableImageDeprecation, and answers Image.DeprecationTime (`YYYY-MM-DDTHH:MM:00.000Z`);
* EC2 Fleet / Spot: DescribeFleets filters fleet-state and type; RequestSpotFleet launches the
  LaunchTemplateConfigs version asked for ($Latest, $Default, N) with every override, and
  DescribeSpotFleetRequests answers the config as requested (LaunchTemplateConfigs or
  LaunchSpecifications, Type, CreateTime); CancelSpotFleetRequests and CancelSpotInstanceRequests keep
  the request describable as cancelled (stock moto forgets it) and report unknown ids as EC2 does;
  terminating a Spot Instance closes its one-time request (a persistent one reopens), status
  instance-terminated-by-user; DeleteFleets cancels the fleet's Spot requests; Spot requests have
  real CreateTime/UpdateTime and the DescribeSpotInstanceRequests filters launch.image-id,
  launch.instance-type, type, status-code, instance-id, ... (stock moto: HTTP 500);
* SSM GetParameter/GetParameters answer Parameter.Selector (":3", ":prod") for `name:version` /
  `name:label` requests;
* answers DescribeImageAttribute for a deregistered or unknown image with InvalidAMIID.Unavailable /
  InvalidAMIID.NotFound as EC2 does (stock moto: HTTP 500);
* writes CopyImage snapshot descriptions the way EC2 does ("Copied for DestinationAmi ...");
* looks images up by id directly (stock moto copies and scans every image of the region);
* looks up EC2 tags by resource id in constant time (stock moto scans every tag of the region for each
  resource, which makes a 10,000-image describe take minutes);
* Auto Scaling instance refresh (module instance_refresh): Start/Describe/Cancel/RollbackInstanceRefresh
  with MinHealthyPercentage, MaxHealthyPercentage, SkipMatching (template, version, instance type),
  InstanceWarmup, checkpoints with CheckpointDelay, BakeTime, AlarmSpecification, AutoRollback,
  IrreversibleInstanceRefresh, mixed instances policies, one step per DescribeInstanceRefreshes call; Auto
  Scaling groups as the API reference documents them: HealthCheckGracePeriod default 0,
  DefaultInstanceWarmup, UpdateAutoScalingGroup keeps a MixedInstancesPolicy it does not name, ForceDelete,
  launches get the template's IamInstanceProfile (RunInstances: every instance gets the profile);
* ELBv2 target health and Auto Scaling health checks (module target_health, applied by instance_refresh):
  `unused` (Target.NotInUse) for a target group no listener or rule forwards to, `initial` until
  HealthyThresholdCount checks pass (one check per DescribeTargetHealth call and per refresh step),
  `unhealthy` after UnhealthyThresholdCount failed checks, `draining` for the deregistration delay when
  deregistered or when an instance leaves its Auto Scaling group; Auto Scaling marks an instance Unhealthy
  after the grace period when it is impaired, or for HealthCheckType ELB when its target is unhealthy;
* CreateLaunchTemplateVersion honours SourceVersion (the new version inherits the source's parameters,
  those given overwrite them); stock moto keeps only the parameters given;
* honours the ClientToken of RunInstances and CopyImage: a retry answers what the first call made, other
  parameters with the same token IdempotentParameterMismatch (stock moto launches or copies again);
* SSM Run Command as AWS answers it (module run_command): SendCommand targets exactly the managed instances
  given or matching the tag targets (running, with an instance profile or tagged amictl-emulator:ssm=managed),
  GetCommandInvocation / ListCommandInvocations (Details, paginated) / ListCommands report each
  invocation's status, exit code and output as a test set it, DescribeInstanceInformation lists the managed
  instances;
* AWS rate limits (module rate_limits; off unless `--aws-rate-limits`/`--ec2-rate-limits` or
  `POST /_amictl/aws-rate-limits`): EC2's token buckets per account, Region and action as the EC2
  developer guide's "Request throttling for the Amazon EC2 API" tables give them (non-mutating 100 tokens
  refilled 20 a second, unfiltered-unpaginated 50/10, mutating 50/5, the uncategorized actions' own, the
  resource buckets of Run/Terminate/Start/StopInstances), answering RequestLimitExceeded; CloudTrail
  LookupEvents 2 a second per account and Region (ThrottlingException);
* CloudTrail event history (module cloudtrail): successful Modify/ResetImageAttribute and
  Modify/ResetSnapshotAttribute calls are recorded per account and Region as CloudTrail records them, and
  LookupEvents (stock moto: HTTP 500) answers them with LookupAttributes, StartTime/EndTime, MaxResults and
  NextToken, after a delivery delay a test may set;
* image safety (module image_safety): DescribeImageReferences (instances, launch template versions, SSM
  parameters of type aws:ec2:image, Image Builder stand-ins), LastLaunchedTime (DescribeImages to the owner,
  DescribeImageAttribute; reported 24 hours after the launch, as the reference says), deregistration
  protection (Enable/DisableImageDeregistrationProtection, Image.DeregistrationProtection, the 24-hour
  cooldown; DeregisterImage refused with OperationNotPermitted);
* Recycle Bin (module recycle_bin): the `rbin` service's retention rules (requests signed for `rbin`, a REST
  service moto lacks, go to the module); DeregisterImage and DeleteSnapshot (DeleteAssociatedSnapshots too)
  send the images and snapshots a rule retains to the bin; ListImagesInRecycleBin,
  ListSnapshotsInRecycleBin, RestoreImageFromRecycleBin, RestoreSnapshotFromRecycleBin; expiry by the
  emulator clock. Without a rule nothing changes;
* adds control endpoints under /_amictl/ for tests and benchmarks:
    GET  /_amictl/health                 -> {"ok": true}
    POST /_amictl/backdate               {"account", "region", "image_id", "days_ago" | "creation_date"}
    POST /_amictl/seed                   {"account", "regions", "amis", "seed"} -> the demo estate's key ids
    POST /_amictl/call                   {"account", "region", "service", "operation", "params"}: one boto3
                                         call (snake_case operation) in that account, for tests
    POST /_amictl/deprecate              {"account", "region", "image_id", "deprecation_time" (ISO 8601,
                                         null clears) | "days_ago"}: set DeprecationTime directly, past
                                         times included (EnableImageDeprecation refuses those)
    GET  /_amictl/stats                  -> {"requests", "server_seconds" (wall time with a request in
                                            flight), "request_seconds_summed", "by_action",
                                            "answer_seconds_by_action" (CPU time moto spent answering,
                                            summed per action), "throttled", "throttled_by_action",
                                            "peak_rate_by_action" (most requests received in any 1 s),
                                            "sustained_rate_by_action" (most in any 10 s, / 10); module
                                            rate_limits}
    POST /_amictl/stats/reset
    GET|POST /_amictl/actions            {"account"} -> {"account", "actions": ["ec2:DescribeImages", ...]}:
                                            every IAM action that account's requests asked for (AssumeRole in
                                            the account of the role), never reset
    GET|POST /_amictl/deny-role          {"role_arn", "deny": true|false} -> {"denied": [...]}: STS
                                            AssumeRole of that role answers 403 AccessDenied, as AWS does
                                            when the role's trust policy refuses the caller
    GET|POST /_amictl/throttle           {"fraction", "seed", "actions", "account"} -> the setting in force
    GET|POST /_amictl/page-size          {"max": N} -> the setting in force
    GET|POST /_amictl/latency            {"ms": N} -> milliseconds added to every AWS request (benchmarks)
    POST /_amictl/ssm-outcomes           {"account", "region", "instance_ids" | "tags" | "image_id",
                                         "command_contains", "status", "exit_code", "stdout", "stderr",
                                         "polls", "times"}: how the next matching invocations end
    POST /_amictl/ssm-outcomes/clear
    POST /_amictl/unhealthy              {"account", "region", "image_ids", "instance_ids", "kind"}: instances
                                         from these images (now or later), or these instances, fail health
                                         checks: kind "instance" (default; impaired: EC2 status checks and the
                                         load balancer's fail) or "application" (the load balancer's only)
    POST /_amictl/refresh/record         {"account", "region", "group"} -> {"steps": [{"healthy", "desired",
                                         "status", "serving"}]}: the group's healthy and serving (healthy in
                                         every target group too) counts at every change of its instances
    POST /_amictl/refresh/tick           {"account", "region", "group"}: advance its refresh one step
    POST /_amictl/routes/record          {"account", "region"} -> {"changes": [{"route", "healthy", "change"}]}: after
                                         every listener or rule change, the healthy targets behind each route
    GET|POST /_amictl/health-checks      {"time_scale": X} -> the setting in force: emulator seconds per
                                         second of a load balancer's health-check interval (0.01)
    GET|POST /_amictl/hold               {"account", "actions", "seconds"} (seconds 0 clears): the answers
                                         of these actions wait, after the call took effect (kill tests);
                                         GET -> {"rules", "held": answers held now}
    GET|POST /_amictl/clock              {"advance_days": N} | {"offset_days": N} -> {"now", "offset_days"}: the
                                         emulator clock; only modules image_safety and recycle_bin use it
    POST /_amictl/last-launched          {"account", "region", "image_id", "days_ago" | "time" (ISO 8601) |
                                         "time": null}: set or clear an image's reported LastLaunchedTime
    GET|POST /_amictl/last-launched/delay {"hours": N}: LastLaunchedTime's reporting delay (default 24)
    POST /_amictl/image-references/extra {"account", "region", "image_id", "resource_type", "arn", "remove"}:
                                         an imagebuilder:ImageRecipe / ContainerRecipe reference (stand-in
                                         for Image Builder, which moto lacks) for DescribeImageReferences
    GET|POST /_amictl/aws-rate-limits    {"enabled", "scale", "overrides"} -> the setting in force (alias
                                         /_amictl/ec2-rate-limits; module rate_limits)
    GET|POST /_amictl/cloudtrail/delay   {"seconds"}: events reach LookupEvents this long after the call
    POST /_amictl/cloudtrail/events      {"account", "region"} -> {"events": everything recorded}
    GET|POST /_amictl/cloudtrail/deny    {"account", "deny"}: LookupEvents answers AccessDeniedException
  Control requests are not counted in the stats. Throttled requests are: in "requests" and
  "by_action" like any other, and in "throttled" / "throttled_by_action".
  Every control request (any path under /_amictl/, health included) must carry the header
  `X-Amictl-Control: 1` and a loopback Host (`127.0.0.1`, `localhost` or `[::1]`, any port), and no
  `Origin` header; anything else, OPTIONS preflights included, is answered 403 {"error": ...} and does
  nothing. This keeps a web page open in a browser on this machine from driving the control API
  (cross-site requests, DNS rebinding); see `_control_refusal`.

Usage: amictl_emulator.py [--port 5000] [--seed-demo] [--amis N] [--regions us-east-1,eu-west-1]
                          [--throttle FRACTION] [--throttle-seed N] [--max-page-size N] [--aws-rate-limits]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape as xml_escape

# Before moto is imported: keep moto's ~1,300 bundled public AMIs (and their snapshots) out of every
# account, so that an estate contains what was seeded and nothing else.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
# One public vendor image (owned by another account) in every account and region, as real
# estates have: instances run it, and it is not ours to retire or revoke.
os.environ.setdefault("MOTO_AMIS_PATH", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor_amis.json"))

from moto.autoscaling.responses import AutoScalingResponse  # noqa: E402
from moto.backends import get_backend  # noqa: E402
from moto.core import responses as moto_responses  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.core.utils import utcnow  # noqa: E402
from moto.ec2.exceptions import EC2ClientError, FilterNotImplementedError, InvalidAMIIdError  # noqa: E402
from moto.ec2.exceptions import UnvailableAMIIdError  # noqa: E402
from moto.ec2.models import core as ec2_core  # noqa: E402
from moto.ec2.models.amis import Ami, AmiBackend  # noqa: E402
from moto.ec2.models.fleets import FleetsBackend  # noqa: E402
from moto.ec2.models.instances import Instance  # noqa: E402
from moto.ec2.models.spot_requests import SpotFleetRequest, SpotInstanceRequest, SpotRequestBackend  # noqa: E402
from moto.ec2.responses.amis import AmisResponse  # noqa: E402
from moto.ec2.responses.elastic_block_store import ElasticBlockStore  # noqa: E402
from moto.ec2.responses.fleets import Fleets  # noqa: E402
from moto.ec2.responses.instances import InstanceResponse  # noqa: E402
from moto.ec2.responses.launch_templates import LaunchTemplates  # noqa: E402
from moto.ec2.responses.spot_fleets import SpotFleets  # noqa: E402
from moto.ec2.responses.spot_instances import SpotInstances  # noqa: E402
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix  # noqa: E402
from moto.ssm.responses import SimpleSystemManagerResponse  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

import cloudtrail  # noqa: E402
import image_safety  # noqa: E402
import instance_refresh  # noqa: E402
import rate_limits  # noqa: E402
import recycle_bin  # noqa: E402
import run_command  # noqa: E402

DEFAULT_ACCOUNT = "123456789012"


# ---------------------------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------------------------


class Knobs:
    """Run-time switches for tests, shared by every request thread: the page-size cap and throttling."""

    def __init__(self):
        self.lock = threading.Lock()
        self.max_page_size = 0  # 0: no cap
        self.latency = 0.0  # seconds added to every AWS request: the round trip to a region
        self.set_throttle(0.0, 0, None)

    def set_latency(self, milliseconds):
        value = float(milliseconds or 0)
        if not 0.0 <= value <= 10_000.0:
            raise ValueError("latency must be between 0 and 10000 milliseconds")
        with self.lock:
            self.latency = value / 1000.0
        return self.latency_config()

    def latency_config(self):
        return {"ms": round(self.latency * 1000.0, 3)}

    def set_max_page_size(self, value):
        value = int(value or 0)
        if value < 0:
            raise ValueError("max page size must be 0 (off) or a positive number of items")
        with self.lock:
            self.max_page_size = value
        return self.page_size_config()

    def page_size_config(self):
        return {"max": self.max_page_size}

    def cap(self, size):
        """`size` items, or fewer when a page-size cap is set."""
        cap = self.max_page_size
        return min(size, cap) if cap else size

    def set_throttle(self, fraction, seed=0, actions=None, account=None):
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"throttle fraction must be between 0 and 1, not {fraction}")
        if actions is not None and (isinstance(actions, str) or not all(isinstance(a, str) for a in actions)):
            raise ValueError("actions must be a list of action names")
        with self.lock:
            self.throttle_fraction = fraction
            self.throttle_seed = int(seed or 0)
            self.throttle_actions = frozenset(actions) if actions else None
            self.throttle_account = account
            self.rng = random.Random(self.throttle_seed)
        return self.throttle_config()

    def throttle_config(self):
        with self.lock:
            actions = sorted(self.throttle_actions) if self.throttle_actions else None
            return {
                "fraction": self.throttle_fraction,
                "seed": self.throttle_seed,
                "actions": actions,
                "account": self.throttle_account,
            }

    def should_throttle(self, action, environ):
        """One draw of the seeded generator per throttleable request that the action list (and the
        account, when one is set) selects."""
        with self.lock:
            if self.throttle_fraction <= 0.0:
                return False
            if self.throttle_account is not None and _request_account(environ) != self.throttle_account:
                return False
            wanted = self.throttle_actions
            if wanted is not None and action not in wanted and action.rsplit(".", 1)[-1] not in wanted:
                return False
            return self.rng.random() < self.throttle_fraction


class Holds:
    """Answers held back after the call took effect, so a test can kill amictl while it waits for
    one: {"account", "actions", "seconds"}; `held` counts the answers being held now."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.held = 0

    def set(self, body):
        with self.lock:
            if not body.get("seconds"):
                self.rules = []
            else:
                self.rules.append((body.get("account"), frozenset(body.get("actions") or []), float(body["seconds"])))
            return self.config()

    def config(self):
        return {"rules": [{"account": a, "actions": sorted(x), "seconds": s} for a, x, s in self.rules], "held": self.held}

    def seconds(self, account, action):
        with self.lock:
            for a, actions, seconds in self.rules:
                if a in (None, account) and action.split(".")[-1] in actions:
                    return seconds
        return 0

    def hold(self, seconds):
        with self.lock:
            self.held += 1
        try:
            deadline = time.monotonic() + seconds
            # A cleared rule releases the answer early.
            while time.monotonic() < deadline and self.rules:
                time.sleep(0.05)
        finally:
            with self.lock:
                self.held -= 1


KNOBS = Knobs()
HOLDS = Holds()


def _page(handler, items, default_max, maximum=None, unpaginated_returns_all=False):
    """Slice `items` by the request's MaxResults/NextToken; return (page, next_token or None).

    `default_max`: the page size when the request gives NextToken but no MaxResults (or, unless
    `unpaginated_returns_all`, neither). `maximum`: the API's documented largest page. With
    `unpaginated_returns_all` a request with neither MaxResults nor NextToken gets every item and no
    token, as EC2 answers an unpaginated describe. The run-time page-size cap (KNOBS) applies to every
    page this returns."""
    max_results = handler._get_int_param("MaxResults")
    token = handler._get_param("NextToken")
    if unpaginated_returns_all and max_results is None and not token:
        return items, None
    size = max_results or default_max
    if maximum:
        size = min(size, maximum)
    size = KNOBS.cap(size)
    start = int(token) if token else 0
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _capped(method, param, default):
    """Wrap a moto response method that paginates by itself with `param` (MaxResults or MaxRecords,
    `default` when absent): while a page-size cap is set, moto sees min(requested or default, cap)."""

    @functools.wraps(method)
    def wrapper(self):
        cap = KNOBS.max_page_size
        if not cap:
            return method(self)
        stock_get_param = self._get_param

        def get_param(name, if_none=None):
            value = stock_get_param(name, if_none)
            if name == param:
                requested = stock_get_param(name)
                return min(int(requested) if requested is not None else default, cap)
            return value

        self._get_param = get_param
        try:
            return method(self)
        finally:
            del self._get_param

    return wrapper


def _capped_when_paginated(method, param, default):
    """Like _capped, for EC2 calls that page only when asked (MaxResults or NextToken given)."""
    capped = _capped(method, param, default)

    @functools.wraps(method)
    def wrapper(self):
        if self._get_param(param) is None and not self._get_param("NextToken"):
            return method(self)
        return capped(self)

    return wrapper


def _with_token(result, token):
    if token:
        result["NextToken"] = token
    return result


def describe_launch_template_versions(self):
    name = self._get_param("LaunchTemplateName")
    template_id = self._get_param("LaunchTemplateId")
    versions = self._get_param("Versions", [])
    self.error_on_dryrun()
    found = self.ec2_backend.describe_launch_template_versions(
        template_name=name,
        template_id=template_id,
        versions=versions,
        min_version=self._get_int_param("MinVersion"),
        max_version=self._get_int_param("MaxVersion"),
        max_results=10**9,
    )
    page, token = _page(self, found, 200, maximum=200)
    result = {
        "LaunchTemplateVersions": [
            {
                "CreateTime": version.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersion": template.is_default(version),
                "LaunchTemplateData": version.data,
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "VersionDescription": version.description,
                "VersionNumber": version.number,
            }
            for template, version in page
        ]
    }
    return ActionResult(_with_token(result, token))


def describe_launch_templates(self):
    self.error_on_dryrun()
    templates = self.ec2_backend.describe_launch_templates(
        template_names=self._get_param("LaunchTemplateNames", []),
        template_ids=self._get_param("LaunchTemplateIds", []),
        filters=self._filters_from_querystring(),
    )
    page, token = _page(self, templates, 200, maximum=200)
    result = {
        "LaunchTemplates": [
            {
                "CreateTime": t.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersionNumber": t.default_version_number,
                "LatestVersionNumber": t.latest_version_number,
                "LaunchTemplateId": t.id,
                "LaunchTemplateName": t.name,
                "Tags": t.tags,
            }
            for t in page
        ]
    }
    return ActionResult(_with_token(result, token))


def describe_images(self):
    self.error_on_dryrun()
    ami_ids = self._get_param("ImageIds", [])
    images = self.ec2_backend.describe_images(
        ami_ids=ami_ids,
        filters=self._filters_from_querystring(),
        exec_users=self._get_param("ExecutableUsers", []),
        owners=self._get_param("Owners", []),
    )
    images = _visible_images(self, images)
    if ami_ids:  # EC2 does not paginate a request by id
        return ActionResult({"Images": images})
    page, token = _page(self, images, 1000, unpaginated_returns_all=True)
    return ActionResult(_with_token({"Images": page}, token))


def _visible_images(handler, images):
    """What DescribeImages leaves out unless asked, per the EC2 API reference (DescribeImages):

    IncludeDisabled: "Specifies whether to include disabled AMIs. Default: No disabled AMIs are
    included in the response."  The reference makes no exception for ImageIds, so a disabled image
    asked for by id is left out too (the answer is then empty, not an error: the image exists).

    IncludeDeprecated: "Specifies whether to include deprecated AMIs. Default: No deprecated AMIs
    are included in the response. Note: If you are the AMI owner, all deprecated AMIs appear in the
    response regardless of what you specify for this parameter."  So only deprecated images owned
    by another account are left out by default. An image is deprecated once its DeprecationTime
    (EnableImageDeprecation) has passed."""
    include_disabled = handler._get_bool_param("IncludeDisabled", False)
    include_deprecated = handler._get_bool_param("IncludeDeprecated", False)
    if include_disabled and include_deprecated:
        return images
    now = utcnow()
    account = handler.current_account
    return [
        image
        for image in images
        if (include_disabled or image.state != "disabled")
        and (include_deprecated or image.owner_id == account or not _is_deprecated(image, now))
    ]


def _is_deprecated(image, now):
    at = getattr(image, "_amictl_deprecate_at", None)
    return at is not None and at <= now


def _ami_deprecation_time(self):
    """Image.DeprecationTime as DescribeImages renders it (ISO 8601 UTC, whole minutes), or None."""
    at = getattr(self, "_amictl_deprecate_at", None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z") if at is not None else None


def _naive_utc(value):
    """A request timestamp (datetime, ISO 8601 string or epoch seconds) as naive UTC, like moto's own."""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromtimestamp(float(text), timezone.utc)
        except ValueError:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _round_to_minute(when):
    """EnableImageDeprecation's DeprecateAt: "If you specify a value for seconds, Amazon EC2 rounds
    the seconds to the nearest minute." (30 seconds and more round up.)"""
    base = when.replace(second=0, microsecond=0)
    return base + timedelta(minutes=1) if (when - base) >= timedelta(seconds=30) else base


def _own_image(backend, image_id, account):
    """The image `image_id` of `account` for an owner-only action, or the error EC2 answers."""
    if image_id in backend.deleted_amis:
        raise UnvailableAMIIdError(image_id)
    image = backend.amis.get(image_id)
    if image is None:
        backend.describe_images(ami_ids=[image_id])  # InvalidAMIID.Malformed / .NotFound as moto words them
        raise InvalidAMIIdError(image_id)
    if image.owner_id != account:
        raise EC2ClientError("AuthFailure", f"Not authorized for image:{image_id}")
    return image


def enable_image_deprecation(self):
    """EnableImageDeprecation (moto 5.2.5 lacks it). API reference, DeprecateAt: "The date and time
    to deprecate the AMI, in UTC, in the following format: YYYY-MM-DDTHH:MM:SSZ. If you specify a
    value for seconds, Amazon EC2 rounds the seconds to the nearest minute. You can't specify a date
    in the past. The upper limit for DeprecateAt is 10 years from now, except for public AMIs, where
    the upper limit is 2 years from the creation date." Answers {"Return": true}."""
    image_id = self._get_param("ImageId")
    deprecate_at = self._get_param("DeprecateAt")
    self.error_on_dryrun()
    if not image_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    if deprecate_at in (None, ""):
        raise EC2ClientError("MissingParameter", "The request must contain the parameter DeprecateAt")
    image = _own_image(self.ec2_backend, image_id, self.current_account)
    try:
        when = _naive_utc(deprecate_at)
    except (TypeError, ValueError):
        raise EC2ClientError("InvalidParameterValue", f"Value ({deprecate_at}) for parameter DeprecateAt is invalid.")
    now = utcnow()
    if when < now:
        raise EC2ClientError("InvalidParameterValue", "The deprecation time can't be in the past.")
    if image.is_public:
        created = _naive_utc(image.creation_date) if image.creation_date else now
        limit, what = created + timedelta(days=2 * 365), "2 years from the creation date of a public AMI"
    else:
        limit, what = now + timedelta(days=10 * 365), "10 years from now"
    if when > limit:
        raise EC2ClientError("InvalidParameterValue", f"The deprecation time can't be later than {what}.")
    image._amictl_deprecate_at = _round_to_minute(when)
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    """DisableImageDeprecation (moto 5.2.5 lacks it): "Cancels the deprecation of the specified AMI."
    Answers {"Return": true}."""
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    if not image_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    image = _own_image(self.ec2_backend, image_id, self.current_account)
    image._amictl_deprecate_at = None
    return ActionResult({"Return": True})


_stock_backend_describe_images = AmiBackend.describe_images


def backend_describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    """By id, look the ids up instead of copying and scanning every image of the region (stock
    moto), which makes per-image calls quadratic on a large estate."""
    if ami_ids and not filters and not exec_users and not owners:
        found = [self.amis[i] for i in ami_ids if i in self.amis]
        if found or any(i in self.deleted_amis for i in ami_ids):
            return found
    return _stock_backend_describe_images(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)


def describe_snapshots(self):
    snapshot_ids = self._get_param("SnapshotIds", [])
    snapshots = self.ec2_backend.describe_snapshots(
        snapshot_ids=snapshot_ids, filters=self._filters_from_querystring()
    )
    if snapshot_ids:
        return ActionResult({"Snapshots": snapshots})
    # botocore's EC2 model (the 2016-09-15 text; the current one only links to "Pagination"),
    # DescribeSnapshots MaxResults: "This value can be between 5 and 1000; if
    # MaxResults is given a value larger than 1000, only 1000 results are returned. If this parameter
    # is not used, then DescribeSnapshots returns all results."
    page, token = _page(self, snapshots, 1000, maximum=1000, unpaginated_returns_all=True)
    return ActionResult(_with_token({"Snapshots": page}, token))


def get_tags(self):
    if not self.id:
        return []
    resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
    return [
        {"resource_id": self.id, "key": k, "value": v, "resource_type": resource_type}
        for k, v in self.ec2_backend.tags.get(self.id, {}).items()
    ]


_stock_copy_image = AmiBackend.copy_image


def copy_image(self, source_image_id, source_region, name=None, description=None):
    ami = _stock_copy_image(self, source_image_id, source_region, name, description)
    source = self.describe_images(ami_ids=[source_image_id])[0] if source_region == self.region_name else None
    source_snap = source.ebs_snapshot.id if source is not None else "snap-00000000"
    stamp = datetime.now(timezone.utc).strftime("%a %b %d %H:%M:%S %Z %Y")
    ami.ebs_snapshot.description = (
        f"Copied for DestinationAmi {ami.id} from SourceAmi {source_image_id} "
        f"for SourceSnapshot {source_snap}. Task created on {stamp}."
    )
    return ami


# --- EC2 Fleet, Spot Fleet, Spot Instance requests -------------------------------------------------------------


def describe_fleets(self):
    """DescribeFleets with MaxResults/NextToken and the fleet-state / type filters (stock moto ignores
    both and answers every fleet at once)."""
    fleet_ids = self._get_param("FleetIds", [])
    self.error_on_dryrun()
    fleets = self.ec2_backend.describe_fleets(fleet_ids)
    for name, values in self._filters_from_querystring().items():
        if name == "fleet-state":
            fleets = [f for f in fleets if f.state in values]
        elif name == "type":
            fleets = [f for f in fleets if f.fleet_type in values]
        else:
            raise FilterNotImplementedError(name, "DescribeFleets")
    if fleet_ids:
        return ActionResult({"Fleets": fleets})
    page, token = _page(self, fleets, 1000, unpaginated_returns_all=True)
    return ActionResult(_with_token({"Fleets": page}, token))


_stock_delete_fleets = FleetsBackend.delete_fleets


def delete_fleets(self, fleet_ids, terminate_instances):
    """Deleting an EC2 Fleet cancels its Spot Instance requests (its instances run on unless
    TerminateInstances); stock moto leaves them active, and persistent ones would reopen."""
    for fleet_id in fleet_ids:
        fleet = self.fleets.get(fleet_id)
        for request in getattr(fleet, "spot_requests", []) if fleet is not None else []:
            _cancel_spot_request(request)
    return _stock_delete_fleets(self, fleet_ids, terminate_instances)


def _specs_from_template_configs(backend, configs):
    """Spot Fleet LaunchTemplateConfigs as the launch specifications they launch: the template version
    the request names ($Latest, $Default or a number; stock moto always takes the latest), merged
    with each of its Overrides (stock moto takes only the first)."""
    specs = []
    for config in configs:
        spec = config.get("LaunchTemplateSpecification") or {}
        if spec.get("LaunchTemplateId"):
            template = backend.get_launch_template(spec["LaunchTemplateId"])
        elif spec.get("LaunchTemplateName"):
            template = backend.get_launch_template_by_name(spec["LaunchTemplateName"])
        else:
            raise EC2ClientError(
                "InvalidParameterValue", "A launch template ID or name must be specified in LaunchTemplateSpecification"
            )
        data = template.get_version(spec.get("Version") or "$Default").data
        for override in config.get("Overrides") or [{}]:
            merged = dict(data)
            merged.update(override)
            specs.append(merged)
    return specs


def request_spot_fleet(self):
    """RequestSpotFleet that remembers the request as given: DescribeSpotFleetRequests then answers
    SpotFleetRequestConfig with LaunchTemplateConfigs (stock moto turns them into LaunchSpecifications
    and drops the template reference), Type (default "maintain") and CreateTime."""
    spot_config = self._get_param("SpotFleetRequestConfig", {})
    self.error_on_dryrun()
    specs = list(spot_config.get("LaunchSpecifications") or [])
    specs += _specs_from_template_configs(self.ec2_backend, spot_config.get("LaunchTemplateConfigs") or [])
    if not specs:
        raise EC2ClientError(
            "InvalidSpotFleetRequestConfig", "Must specify either LaunchSpecifications or LaunchTemplateConfigs"
        )
    request = self.ec2_backend.request_spot_fleet(
        spot_price=spot_config.get("SpotPrice"),
        target_capacity=spot_config["TargetCapacity"],
        iam_fleet_role=spot_config["IamFleetRole"],
        allocation_strategy=spot_config.get("AllocationStrategy", "lowestPrice"),
        launch_specs=specs,
        launch_template_config=[],
        instance_interruption_behaviour=spot_config.get("InstanceInterruptionBehavior"),
        tag_specifications=spot_config.get("TagSpecifications"),
    )
    request._amictl_config = json.loads(json.dumps(spot_config, default=str))
    for key in ("ValidFrom", "ValidUntil"):
        if spot_config.get(key) is not None:
            request._amictl_config[key] = spot_config[key]
    return ActionResult({"SpotFleetRequestId": request.id})


_stock_spot_fleet_request_config = SpotFleetRequest.spot_fleet_request_config


def _spot_fleet_request_config(self):
    given = getattr(self, "_amictl_config", None)
    if given is None:
        return _stock_spot_fleet_request_config.fget(self)
    config = json.loads(json.dumps(given, default=str))
    for key in ("ValidFrom", "ValidUntil"):
        if key in given:
            config[key] = given[key]
    config.setdefault("Type", "maintain")
    config["TargetCapacity"] = self.target_capacity
    config["FulfilledCapacity"] = self.fulfilled_capacity
    return config


_stock_spot_fleet_init = SpotFleetRequest.__init__


def _spot_fleet_init(self, *args, **kwargs):
    self._amictl_created = utcnow()
    _stock_spot_fleet_init(self, *args, **kwargs)


def cancel_spot_fleet_requests(self):
    """CancelSpotFleetRequests as the API reference has it: the request enters cancelled_terminating
    (TerminateInstances) or cancelled_running, stays describable ("Spot Fleet requests are deleted 48
    hours after they are canceled and their instances are terminated"; stock moto forgets it at once),
    its Spot Instance requests are cancelled, and an unknown id is reported in
    UnsuccessfulFleetRequests (stock moto: HTTP 500). Termination is instant here, so a terminating
    request is then `cancelled`."""
    ids = self._get_param("SpotFleetRequestIds", [])
    terminate = self._get_bool_param("TerminateInstances", False)
    self.error_on_dryrun()
    backend = self.ec2_backend
    successful, unsuccessful = [], []
    for request_id in ids:
        fleet = backend.spot_fleet_requests.get(request_id)
        if fleet is None or fleet.state in ("cancelled", "cancelled_running", "cancelled_terminating"):
            code, message = (
                ("fleetRequestIdDoesNotExist", f"The spot fleet request Id '{request_id}' does not exist.")
                if fleet is None
                else ("fleetRequestNotInCancellableState", f"The spot fleet request {request_id} is already cancelled.")
            )
            unsuccessful.append({"SpotFleetRequestId": request_id, "Error": {"Code": code, "Message": message}})
            continue
        previous = fleet.state
        for request in fleet.spot_requests:
            _cancel_spot_request(request)
        if terminate:
            fleet.target_capacity = 0
            fleet.terminate_instances()
            fleet.state = "cancelled"
            current = "cancelled_terminating"
        else:
            fleet.state = current = "cancelled_running"
        successful.append(
            {
                "SpotFleetRequestId": request_id,
                "CurrentSpotFleetRequestState": current,
                "PreviousSpotFleetRequestState": previous,
            }
        )
    return ActionResult({"SuccessfulFleetRequests": successful, "UnsuccessfulFleetRequests": unsuccessful})


def describe_spot_fleet_requests(self):
    ids = self._get_param("SpotFleetRequestIds", [])
    requests = self.ec2_backend.describe_spot_fleet_requests(ids)
    if ids:
        return ActionResult({"SpotFleetRequestConfigs": requests})
    page, token = _page(self, requests, 1000, unpaginated_returns_all=True)
    return ActionResult(_with_token({"SpotFleetRequestConfigs": page}, token))


def describe_spot_instance_requests(self):
    ids = self._get_param("SpotInstanceRequestIds", [])
    self.error_on_dryrun()
    requests = self.ec2_backend.describe_spot_instance_requests(
        filters=self._filters_from_querystring(), spot_instance_ids=ids
    )
    if ids:
        return ActionResult({"SpotInstanceRequests": requests})
    page, token = _page(self, requests, 1000, unpaginated_returns_all=True)
    return ActionResult(_with_token({"SpotInstanceRequests": page}, token))


def _set_spot_status(request, state, code, message):
    request.state = state
    request._status_code = code
    request.status_message = message
    request._amictl_status_time = utcnow()


def _cancel_spot_request(request):
    if request.state in ("cancelled", "closed", "failed"):
        if request.state != "cancelled":
            request.state = "cancelled"
        return
    instance = getattr(request, "instance", None)
    if request.state == "active" and instance is not None and instance.state != "terminated":
        _set_spot_status(request, "cancelled", "request-canceled-and-instance-running",
                         "Spot Instance request canceled by user; the instance is still running.")
    else:
        _set_spot_status(request, "cancelled", "canceled-before-fulfillment",
                         "Your Spot request was canceled before it was fulfilled.")


def cancel_spot_instance_requests_backend(self, request_ids):
    """CancelSpotInstanceRequests: the request becomes `cancelled` and stays describable (API
    reference: "Spot Instance requests are deleted four hours after they are canceled and their
    instances are terminated"; stock moto deletes it at once); "Canceling a Spot Instance request does
    not terminate running Spot Instances associated with the request". An unknown id fails the call
    with InvalidSpotInstanceRequestID.NotFound (stock moto: HTTP 500)."""
    missing = [i for i in request_ids if i not in self.spot_instance_requests]
    if missing:
        raise EC2ClientError(
            "InvalidSpotInstanceRequestID.NotFound", f"The spot instance request ID '{missing[0]}' does not exist"
        )
    requests = [self.spot_instance_requests[i] for i in request_ids]
    for request in requests:
        _cancel_spot_request(request)
    return requests


_stock_instance_terminate = Instance.terminate


def instance_terminate(self, *args, **kwargs):
    """Terminating a fulfilled Spot Instance moves its request on, as EC2 documents for status
    `instance-terminated-by-user`: "the request state is closed (unless it's a persistent request)";
    a persistent request opens again (EC2 would then launch a replacement; the emulator does not). A
    cancelled request whose instance was still running stays cancelled, with that status."""
    result = _stock_instance_terminate(self, *args, **kwargs)
    for request in list(getattr(self.ec2_backend, "spot_instance_requests", {}).values()):
        if getattr(request, "instance", None) is not self:
            continue
        if request.state == "active":
            state = "open" if request.type == "persistent" else "closed"
        elif request.state == "cancelled" and request._status_code == "request-canceled-and-instance-running":
            state = "cancelled"
        else:
            continue
        _set_spot_status(
            request, state, "instance-terminated-by-user", "Spot Instance terminated due to user-initiated termination."
        )
    return result


_stock_spot_request_init = SpotInstanceRequest.__init__


def _spot_request_init(self, *args, **kwargs):
    self._amictl_created = utcnow()
    _stock_spot_request_init(self, *args, **kwargs)
    self._amictl_status_time = utcnow()


def _spot_request_status(self):
    return {
        "Code": self._status_code,
        "Message": self.status_message,
        "UpdateTime": getattr(self, "_amictl_status_time", None) or getattr(self, "_amictl_created", None),
    }


def _spot_groups(request):
    return request.launch_specification.groups or []


_SPOT_REQUEST_FILTERS = {
    "launch.image-id": lambda r: r.launch_specification.image_id,
    "launch.instance-type": lambda r: r.launch_specification.instance_type,
    "launch.key-name": lambda r: r.launch_specification.key_name,
    "launch.kernel-id": lambda r: r.launch_specification.kernel_id,
    "launch.ramdisk-id": lambda r: r.launch_specification.ramdisk_id,
    "launch.group-id": lambda r: [g.id for g in _spot_groups(r)],
    "launch.group-name": lambda r: [g.name for g in _spot_groups(r)],
    "instance-id": lambda r: r.instance.id if getattr(r, "instance", None) is not None else None,
    "type": lambda r: r.type,
    "state": lambda r: r.state,
    "status-code": lambda r: r._status_code,
    "status-message": lambda r: r.status_message,
    "product-description": lambda r: r.product_description,
    "spot-price": lambda r: r.price,
    "launch-group": lambda r: r.launch_group,
    "availability-zone-group": lambda r: r.availability_zone_group,
}
_stock_spot_request_filter_value = SpotInstanceRequest.get_filter_value


def spot_request_filter_value(self, filter_name, method_name=None):
    """DescribeSpotInstanceRequests filters of the API reference that stock moto lacks (it answers
    HTTP 500 for launch.image-id, type, status-code, ...)."""
    if filter_name in _SPOT_REQUEST_FILTERS:
        return _SPOT_REQUEST_FILTERS[filter_name](self)
    return _stock_spot_request_filter_value(self, filter_name, method_name)


# --- SSM ---------------------------------------------------------------------------------------------------------


def _ssm_selector(backend, name):
    """The `:VERSION` / `:LABEL` part of a parameter name as Parameter.Selector renders it, or None."""
    bare = backend._strip_parameter_arn(name)
    return ":" + bare.split(":", 1)[1] if ":" in bare else None


_stock_ssm_get_parameter = SimpleSystemManagerResponse.get_parameter


def ssm_get_parameter(self):
    """GetParameter answering Parameter.Selector for a `name:version` / `name:label` request (API
    reference, Parameter.Selector: "Either the version number or the label used to retrieve the
    parameter value"); stock moto leaves it out."""
    result = _stock_ssm_get_parameter(self)
    selector = _ssm_selector(self.ssm_backend, self._get_param("Name"))
    if selector:
        result.result["Parameter"]["Selector"] = selector
    return result


def ssm_get_parameters(self):
    """GetParameters with Parameter.Selector (see ssm_get_parameter); otherwise as stock moto."""
    names = self._get_param("Names")
    with_decryption = self._get_param("WithDecryption")
    found = self.ssm_backend.get_parameters(names)
    response = {"Parameters": [], "InvalidParameters": []}
    for name, parameter in found.items():
        data = parameter.response_object(with_decryption, self.region)
        selector = _ssm_selector(self.ssm_backend, name)
        if selector:
            data["Selector"] = selector
        response["Parameters"].append(data)
    response["InvalidParameters"] = [name for name in names if name not in found]
    return ActionResult(response)


_stock_describe_image_attribute = AmiBackend.describe_image_attribute


def backend_describe_image_attribute(self, ami_id, attribute_name):
    """EC2 answers an attribute request for a deregistered or unknown image with
    InvalidAMIID.Unavailable / InvalidAMIID.NotFound; stock moto raises a KeyError (HTTP 500)."""
    if ami_id in self.deleted_amis:
        raise UnvailableAMIIdError(ami_id)
    if ami_id not in self.amis:
        raise InvalidAMIIdError(ami_id)
    return _stock_describe_image_attribute(self, ami_id, attribute_name)


_stock_create_launch_template_version = LaunchTemplates.create_launch_template_version


def create_launch_template_version(self):
    """CreateLaunchTemplateVersion with SourceVersion (API reference: "the new version inherits the launch
    parameters from the source version. If you specify additional launch parameters for the new version,
    they overwrite the corresponding launch parameters from the source version"); stock moto ignores it and
    the new version holds only the parameters given."""
    source = self._get_param("SourceVersion")
    if source:
        name = self._get_param("LaunchTemplateName")
        tmpl_id = self._get_param("LaunchTemplateId")
        template = (
            self.ec2_backend.get_launch_template(tmpl_id) if tmpl_id else self.ec2_backend.get_launch_template_by_name(name)
        )
        base = template.get_version(source)
        given = self._get_param("LaunchTemplateData", {}) or {}
        merged = dict(base.data)
        merged.update(given)
        original = self._get_param
        self._get_param = lambda key, default=None: merged if key == "LaunchTemplateData" else original(key, default)
        try:
            return _stock_create_launch_template_version(self)
        finally:
            self._get_param = original
    return _stock_create_launch_template_version(self)


_stock_run_instances = InstanceResponse.run_instances
_stock_copy_image_response = AmisResponse.copy_image
_CLIENT_TOKENS = {}
_TOKEN_LOCK = threading.Lock()


class IdempotentParameterMismatch(EC2ClientError):
    def __init__(self, token):
        super().__init__(
            "IdempotentParameterMismatch",
            f"Client token {token} was used before with different parameters",
        )


def _idempotent(self, action, params, call, result_id, replay):
    """EC2's ClientToken ("Ensuring idempotency"): a repeated token with the same parameters answers
    what the first call made, with other parameters IdempotentParameterMismatch; stock moto ignores it."""
    token = self._get_param("ClientToken")
    if not token:
        return call(self)
    key = (self.current_account, self.region, action, token)
    with _TOKEN_LOCK:
        seen = _CLIENT_TOKENS.get(key)
        if seen is not None:
            if seen[0] != params:
                raise IdempotentParameterMismatch(token)
            answer = replay(self, seen[1])
            if answer is not None:
                return answer
        result = call(self)
        _CLIENT_TOKENS[key] = (params, result_id(result))
        return result


def run_instances(self):
    """RunInstances with ClientToken idempotency: a retry answers the first call's reservation."""
    params = (self._get_param("ImageId"), self._get_param("InstanceType"), self._get_param("MinCount"))

    def replay(handler, reservation_id):
        reservation = handler.ec2_backend.reservations.get(reservation_id)
        return ActionResult(reservation) if reservation is not None else None

    return _idempotent(self, "RunInstances", params, _stock_run_instances, lambda r: r.result.id, replay)


def copy_image_response(self):
    """CopyImage with ClientToken idempotency: a retry answers the copy the first call made."""
    params = (self._get_param("SourceImageId"), self._get_param("SourceRegion"), self._get_param("Name"))

    def replay(handler, image_id):
        return ActionResult({"ImageId": image_id}) if image_id in handler.ec2_backend.amis else None

    return _idempotent(self, "CopyImage", params, _stock_copy_image_response, lambda r: r.result["ImageId"], replay)


def _cached_method_names():
    """moto lists a response class's methods with `inspect.getmembers` on every request to find
    the action's handler (a tenth of the emulator's time under load). The classes are complete
    once the patches below are applied, before the first request, so the list is made once per
    class; the answer is the same."""
    stock = moto_responses.method_names_from_class

    @functools.lru_cache(maxsize=None)
    def method_names(clazz):
        return frozenset(stock(clazz))

    moto_responses.method_names_from_class = method_names


def _cached_backend_lookup():
    """moto matches a request's host against every service's URL patterns, twice per request
    (a tenth of its time under load). The answer depends on the host alone, so each host is
    matched once."""
    stock = DomainDispatcherApplication.get_backend_for_host

    @functools.lru_cache(maxsize=1024)
    def get_backend_for_host(self, host):
        return stock(self, host)

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


_stock_deregister_image_response = AmisResponse.deregister_image


def deregister_image_response(self):
    """DeregisterImage with DeleteAssociatedSnapshots, as the EC2 API reference documents it (stock
    moto ignores the parameter): "Specifies whether to delete the snapshots associated with the AMI
    during deregistration. If a snapshot is associated with multiple AMIs, it is not deleted,
    regardless of this setting. Default: The snapshots are not deleted." The answer lists each
    snapshot in DeleteSnapshotResults with its ReturnCode: `success`, or `skipped` ("not deleted
    because it's associated with other AMIs")."""
    if not self._get_bool_param("DeleteAssociatedSnapshots", False):
        return _stock_deregister_image_response(self)
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    backend = self.ec2_backend
    image = backend.amis.get(ami_id)
    snapshots = [m["Ebs"]["SnapshotId"] for m in image.block_device_mappings if "Ebs" in m] if image else []
    backend.deregister_image(ami_id)  # a missing or deregistered image fails here, as stock
    results = []
    for snapshot_id in snapshots:
        others = [a for a in backend.amis.values() if getattr(a, "ebs_snapshot", None) and a.ebs_snapshot.id == snapshot_id]
        if others:
            code = "skipped"
        else:
            try:
                backend.delete_snapshot(snapshot_id)
                code = "success"
            except EC2ClientError:
                code = "client-error"
        results.append({"SnapshotId": snapshot_id, "ReturnCode": code})
    return ActionResult({"Return": True, "DeleteSnapshotResults": results})


def apply_patches():
    _cached_method_names()
    _cached_backend_lookup()
    InstanceResponse.run_instances = run_instances
    AmisResponse.copy_image = copy_image_response
    LaunchTemplates.create_launch_template_version = create_launch_template_version
    run_command.apply_patches(_page)
    instance_refresh.apply_patches()
    cloudtrail.apply_patches()  # LookupEvents and the event history (module cloudtrail)
    AmiBackend.describe_image_attribute = backend_describe_image_attribute
    LaunchTemplates.describe_launch_template_versions = describe_launch_template_versions
    LaunchTemplates.describe_launch_templates = describe_launch_templates
    AmisResponse.describe_images = describe_images
    AmisResponse.deregister_image = deregister_image_response
    ElasticBlockStore.describe_snapshots = describe_snapshots
    ec2_core.TaggedEC2Resource.get_tags = get_tags
    AmiBackend.copy_image = copy_image
    AmiBackend.describe_images = backend_describe_images
    # Image deprecation (DeprecationTime in DescribeImages; EnableImageDeprecation, DisableImageDeprecation).
    Ami.deprecation_time = property(_ami_deprecation_time)
    AmisResponse.enable_image_deprecation = enable_image_deprecation
    AmisResponse.disable_image_deprecation = disable_image_deprecation
    # EC2 Fleet, Spot Fleet and Spot Instance requests.
    Fleets.describe_fleets = describe_fleets
    FleetsBackend.delete_fleets = delete_fleets
    SpotFleets.request_spot_fleet = request_spot_fleet
    SpotFleets.cancel_spot_fleet_requests = cancel_spot_fleet_requests
    SpotFleets.describe_spot_fleet_requests = describe_spot_fleet_requests
    SpotFleetRequest.spot_fleet_request_config = property(_spot_fleet_request_config)
    SpotFleetRequest.create_time = property(lambda self: getattr(self, "_amictl_created", None))
    SpotFleetRequest.__init__ = _spot_fleet_init
    SpotInstances.describe_spot_instance_requests = describe_spot_instance_requests
    SpotRequestBackend.cancel_spot_instance_requests = cancel_spot_instance_requests_backend
    SpotInstanceRequest.__init__ = _spot_request_init
    SpotInstanceRequest.create_time = property(lambda self: getattr(self, "_amictl_created", None))
    SpotInstanceRequest.status = property(_spot_request_status)
    SpotInstanceRequest.get_filter_value = spot_request_filter_value
    Instance.terminate = instance_terminate
    # SSM: Parameter.Selector.
    SimpleSystemManagerResponse.get_parameter = ssm_get_parameter
    SimpleSystemManagerResponse.get_parameters = ssm_get_parameters
    # The run-time page-size cap on the lists moto paginates by itself.
    InstanceResponse.describe_instances = _capped_when_paginated(InstanceResponse.describe_instances, "MaxResults", 100)
    AutoScalingResponse.describe_auto_scaling_groups = _capped(
        AutoScalingResponse.describe_auto_scaling_groups, "MaxRecords", 50
    )
    AutoScalingResponse.describe_launch_configurations = _capped(
        AutoScalingResponse.describe_launch_configurations, "MaxRecords", 50
    )
    SimpleSystemManagerResponse.get_parameters_by_path = _capped(
        SimpleSystemManagerResponse.get_parameters_by_path, "MaxResults", 10
    )
    SimpleSystemManagerResponse.get_parameter_history = _capped(
        SimpleSystemManagerResponse.get_parameter_history, "MaxResults", 50
    )
    # Recycle Bin, then image safety (last: both wrap DeregisterImage, protection checked first, and DescribeImages).
    recycle_bin.apply_patches(_page, KNOBS.cap)  # module recycle_bin
    image_safety.apply_patches(_page, _own_image)  # module image_safety


# ---------------------------------------------------------------------------------------------------------------
# Control endpoints
# ---------------------------------------------------------------------------------------------------------------


def ec2_backend(account, region):
    return get_backend("ec2")[account or DEFAULT_ACCOUNT][region]


def backdate(body):
    backend = ec2_backend(body.get("account"), body["region"])
    image = backend.amis.get(body["image_id"])
    if image is None:
        raise KeyError(f"no image {body['image_id']} in {body.get('account') or DEFAULT_ACCOUNT}/{body['region']}")
    if "creation_date" in body:
        when = datetime.fromisoformat(body["creation_date"].replace("Z", "+00:00"))
    else:
        when = datetime.now(timezone.utc) - timedelta(days=float(body["days_ago"]))
    # moto renders creation_date as given; keep it naive UTC like the objects it makes itself.
    image.creation_date = when.astimezone(timezone.utc).replace(tzinfo=None)
    return {"image_id": image.id, "creation_date": image.creation_date.isoformat() + "Z"}


def set_deprecation(body):
    """Set (or with "deprecation_time": null clear) an image's DeprecationTime directly, past times
    included, which EnableImageDeprecation refuses: {"account", "region", "image_id",
    "deprecation_time" (ISO 8601) | "days_ago"}."""
    backend = ec2_backend(body.get("account"), body["region"])
    image = backend.amis.get(body["image_id"])
    if image is None:
        raise KeyError(f"no image {body['image_id']} in {body.get('account') or DEFAULT_ACCOUNT}/{body['region']}")
    if "days_ago" in body:
        when = utcnow() - timedelta(days=float(body["days_ago"]))
    elif body.get("deprecation_time") is not None:
        when = _naive_utc(body["deprecation_time"])
    elif "deprecation_time" in body:
        when = None
    else:
        raise KeyError("give deprecation_time (ISO 8601, or null to clear) or days_ago")
    image._amictl_deprecate_at = _round_to_minute(when) if when is not None else None
    return {"image_id": image.id, "deprecation_time": image.deprecation_time}


def aws_call(port, body):
    """One AWS API call made with boto3 inside account `account` (through STS AssumeRole), for
    tests that change the estate underneath amictl: {"account", "region", "service", "operation", "params"}."""
    import boto3
    from botocore.config import Config

    import demo_estate

    creds = demo_estate._session(f"http://127.0.0.1:{port}", body.get("account") or DEFAULT_ACCOUNT)
    creds = {k: v for k, v in creds.items() if k != "region_name"}
    client = boto3.client(
        body["service"],
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=body.get("region") or "us-east-1",
        config=Config(retries={"max_attempts": 1}),
        **creds,
    )
    result = getattr(client, body["operation"])(**(body.get("params") or {}))
    result.pop("ResponseMetadata", None)
    return json.loads(json.dumps(result, default=str))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = 0
            self.seconds = 0.0  # summed over requests: counts overlapping requests twice
            self.busy = 0.0  # wall time with at least one request in flight
            self.in_flight = 0
            self.busy_since = None
            self.by_action = Counter()
            self.answer_seconds_by_action = Counter()
            self.throttled = 0
            self.throttled_by_action = Counter()
        rate_limits.METER.reset()  # peak_rate_by_action, sustained_rate_by_action

    def begin(self):
        with self.lock:
            if self.in_flight == 0:
                self.busy_since = time.perf_counter()
            self.in_flight += 1

    def end(self, action, seconds, answering=0.0):
        with self.lock:
            self.requests += 1
            self.seconds += seconds
            self.by_action[action] += 1
            self.answer_seconds_by_action[action] += answering
            self.in_flight = max(0, self.in_flight - 1)
            if self.in_flight == 0 and self.busy_since is not None:
                self.busy += time.perf_counter() - self.busy_since
                self.busy_since = None

    def throttle(self, action, seconds):
        """A request answered with a throttling error: counted in `requests` and `by_action` like any
        other, and in `throttled` / `throttled_by_action`."""
        with self.lock:
            self.requests += 1
            self.seconds += seconds
            self.by_action[action] += 1
            self.throttled += 1
            self.throttled_by_action[action] += 1

    def snapshot(self):
        with self.lock:
            busy = self.busy
            if self.busy_since is not None:
                busy += time.perf_counter() - self.busy_since
            return {
                "requests": self.requests,
                "server_seconds": round(busy, 6),
                "request_seconds_summed": round(self.seconds, 6),
                "by_action": dict(self.by_action),
                "answer_seconds_by_action": {k: round(v, 6) for k, v in self.answer_seconds_by_action.items()},
                "throttled": self.throttled,
                "throttled_by_action": dict(self.throttled_by_action),
                **rate_limits.METER.snapshot(),  # peak_rate_by_action, sustained_rate_by_action
            }


# The IAM prefix of each SigV4 signing name whose prefix differs.
_IAM_PREFIX = {"monitoring": "cloudwatch"}


class Actions:
    """Every IAM action (`ec2:DescribeImages`) each account's requests from the AWS SDK for Rust asked
    for, never reset (tests use fresh accounts): what `amictl iam-policy` must grant. An AssumeRole is counted in the account of
    the role it assumes, since that is the account it was made to reach."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_account = {}

    def record(self, environ, action, body):
        # Only amictl's own requests (the AWS SDK for Rust), not a test's set-up through boto3.
        if "aws-sdk-rust" not in environ.get("HTTP_USER_AGENT", "") + environ.get("HTTP_X_AMZ_USER_AGENT", ""):
            return
        service = _signing_service(environ)
        if not service or not action or action == "?":
            return
        name = action.rsplit(".", 1)[-1]
        account = _request_account(environ)
        if name == "AssumeRole":
            role = DeniedRoles._role(body) or ""
            parts = role.split(":")
            account = parts[4] if len(parts) > 4 and parts[4] else account
        needed = [name]
        if name == "DeregisterImage" and b"DeleteAssociatedSnapshots=true" in (body or b""):
            # Its snapshots are deleted under the caller's DeleteSnapshot permission (the API
            # reference's ReturnCode `missing-permissions`: "the role lacks DeleteSnapshot permissions").
            needed.append("DeleteSnapshot")
        if name == "CreateTargetGroup" and b"Tags.member." in (body or b""):
            # ELB user guide, "Tag your target group": tagging on create needs elasticloadbalancing:AddTags.
            needed.append("AddTags")
        if name == "CreateAutoScalingGroup" and b"Tags.member." in (body or b""):
            # EC2 Auto Scaling user guide, "Tag Auto Scaling groups and instances" (permissions): tags given on
            # create need autoscaling:CreateOrUpdateTags.
            needed.append("CreateOrUpdateTags")
        with self.lock:
            for n in needed:
                self.by_account.setdefault(account, set()).add(f"{_IAM_PREFIX.get(service, service)}:{n}")

    def of(self, account):
        with self.lock:
            return {"account": account, "actions": sorted(self.by_account.get(account, ()))}


ACTIONS = Actions()


class App:
    """WSGI app: /_amictl/* control endpoints, everything else to moto (timed)."""

    def __init__(self, port):
        self.moto = recycle_bin.route(DomainDispatcherApplication(create_backend_app))  # rbin: module recycle_bin
        self.stats = Stats()
        self.port = port

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_amictl/"):
            return self.control(environ, start_response)
        expired = _expired_credentials(environ)
        if expired is not None:
            return expired(environ, start_response)
        started = time.perf_counter()
        request = Request(environ)
        # Reading the form consumes the body; cache it so moto still sees it.
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        form_action = request.args.get("Action") or _form_action(body)
        action = form_action or request.headers.get("X-Amz-Target", "?")
        if recycle_bin.is_rbin(environ):  # Recycle Bin (REST-JSON): "rbin.CreateRule" for stats and ACTIONS
            action = recycle_bin.operation(environ)
        ACTIONS.record(environ, action, body)
        if form_action == "AssumeRole" and DENIED_ROLES.denies(body):
            return DENIED_ROLES.refusal(body)(environ, start_response)
        rate_limits.METER.hit(action)  # on arrival: peak/sustained request rates in the stats
        protocol = _throttle_protocol(environ, path, form_action)
        if protocol is not None and KNOBS.latency:
            # Every signed AWS request waits as if it crossed to a region and back (benchmarks).
            time.sleep(KNOBS.latency)
        if protocol is not None and KNOBS.should_throttle(action, environ):
            # Answered before moto sees it: a throttled request has no effect.
            self.stats.throttle(action, time.perf_counter() - started)
            return _throttling_error(environ, protocol)(environ, start_response)
        if protocol is not None and rate_limits.LIMITS.refuses(environ, action, body):
            # AWS rate limits (module rate_limits): EC2's token buckets, LookupEvents' 2 a second.
            self.stats.throttle(action, time.perf_counter() - started)
            return _throttling_error(environ, protocol)(environ, start_response)
        start_response = cloudtrail.watch(environ, action, body, start_response)  # event history
        self.stats.begin()
        answering = time.thread_time()  # CPU time: other requests' turns on the GIL excluded
        try:
            chunks = list(self.moto(environ, start_response))
        finally:
            self.stats.end(action, time.perf_counter() - started, time.thread_time() - answering)
        hold = HOLDS.seconds(_request_account(environ), action) if HOLDS.rules else 0
        if hold:
            HOLDS.hold(hold)
        return chunks

    def control(self, environ, start_response):
        refusal = _control_refusal(environ)
        if refusal is not None:
            return Response(json.dumps({"error": refusal}), 403, mimetype="application/json")(environ, start_response)
        request = Request(environ)
        path = request.path
        try:
            body = request.get_json(force=True, silent=True) or {}
            if path == "/_amictl/health":
                out = {"ok": True}
            elif path == "/_amictl/backdate":
                out = backdate(body)
            elif path == "/_amictl/seed":
                import demo_estate

                out = demo_estate.seed(
                    endpoint=f"http://127.0.0.1:{self.port}",
                    account=body.get("account") or DEFAULT_ACCOUNT,
                    regions=body.get("regions") or ["us-east-1", "eu-west-1"],
                    amis=int(body.get("amis") or 0),
                    seed=int(body.get("seed") or 7),
                    backdate=backdate,
                )
            elif path == "/_amictl/call":
                out = aws_call(self.port, body)
            elif path == "/_amictl/stats":
                out = self.stats.snapshot()
            elif path == "/_amictl/stats/reset":
                self.stats.reset()
                out = {"ok": True}
            elif path == "/_amictl/deprecate":
                out = set_deprecation(body)
            elif path == "/_amictl/throttle":
                if request.method == "POST":
                    out = KNOBS.set_throttle(
                        body.get("fraction", 0.0), body.get("seed", 0), body.get("actions"), body.get("account")
                    )
                else:
                    out = KNOBS.throttle_config()
            elif path == "/_amictl/latency":
                out = KNOBS.set_latency(body.get("ms", 0)) if request.method == "POST" else KNOBS.latency_config()
            elif path == "/_amictl/page-size":
                out = KNOBS.set_max_page_size(body.get("max", 0)) if request.method == "POST" else KNOBS.page_size_config()
            elif path == "/_amictl/actions":
                out = ACTIONS.of(body.get("account") or request.args.get("account") or DEFAULT_ACCOUNT)
            elif path == "/_amictl/deny-role":
                out = DENIED_ROLES.set(body) if request.method == "POST" else DENIED_ROLES.config()
            elif path == "/_amictl/hold":
                out = HOLDS.set(body) if request.method == "POST" else HOLDS.config()
            elif path == "/_amictl/routes/record":
                import target_health

                out = target_health.routes_record(body, DEFAULT_ACCOUNT)
            elif path == "/_amictl/health-checks":
                import target_health

                out = target_health.set_time_scale(body) if request.method == "POST" else {
                    "time_scale": target_health.TIME_SCALE[0]
                }
            elif path in ("/_amictl/unhealthy", "/_amictl/refresh/record", "/_amictl/refresh/tick"):
                out = instance_refresh.control(path, body, DEFAULT_ACCOUNT)
            elif path in ("/_amictl/aws-rate-limits", "/_amictl/ec2-rate-limits"):
                out = rate_limits.control(body, request.method)
            elif path.startswith("/_amictl/cloudtrail/"):
                out = cloudtrail.control(path, body, request.method)
            elif path in ("/_amictl/clock", "/_amictl/last-launched", "/_amictl/last-launched/delay",
                          "/_amictl/image-references/extra"):  # module image_safety
                out = image_safety.control(path, body, request.method)
            elif path.startswith("/_amictl/ssm-outcomes"):
                out = run_command.control(path, body)
            else:
                return Response(json.dumps({"error": f"unknown control path {path}"}), 404)(environ, start_response)
            return Response(json.dumps(out), 200, mimetype="application/json")(environ, start_response)
        except Exception as err:  # a control error is the caller's bug: say what it was
            return Response(json.dumps({"error": f"{type(err).__name__}: {err}"}), 400, mimetype="application/json")(
                environ, start_response
            )


CONTROL_HEADER = "X-Amictl-Control"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _control_refusal(environ):
    """Why a control request is refused, or None to serve it.

    The control API runs any boto3 call, so a web page open in a browser on this machine must not
    reach it. Listening on 127.0.0.1 is not enough: a page can POST to it cross-site (a text/plain
    POST is a "simple" request that needs no CORS preflight), and by DNS rebinding it can make its
    own host name resolve to 127.0.0.1 and then read the answers as same-origin. So a control request
    needs:
    * the custom header `X-Amictl-Control: 1`: a browser sends a custom header cross-site only after
      a CORS preflight (OPTIONS), which is refused here like any request without the header;
    * a loopback Host (127.0.0.1, localhost or [::1], any port): a rebound page sends its own name;
    * no `Origin` header: browsers send one on cross-site and on POST requests; amictl's client,
      tests and scripts never do.
    """
    problems = []
    if environ.get("REQUEST_METHOD") == "OPTIONS":
        problems.append("CORS preflight (OPTIONS) is not allowed on the control API")
    if environ.get("HTTP_X_AMICTL_CONTROL", "").strip() != "1":
        problems.append(f"missing header {CONTROL_HEADER}: 1")
    host = environ.get("HTTP_HOST", "")
    if not _is_loopback_host(host):
        problems.append(f"Host {host!r} is not 127.0.0.1, localhost or [::1]" if host else "missing Host header")
    if "HTTP_ORIGIN" in environ:
        problems.append(f"Origin header {environ['HTTP_ORIGIN']!r} present: no browser may use the control API")
    return "; ".join(problems) or None


def _is_loopback_host(host):
    """`host` (a Host header) is 127.0.0.1, localhost or [::1], with a numeric port or none."""
    if host.endswith("]") or ":" not in host:
        name, port = host, None
    else:
        name, _, port = host.rpartition(":")
    return name in LOOPBACK_HOSTS and (port is None or port.isdigit())


def _expired_credentials(environ):
    """Access keys starting with EXPIRED are answered as AWS answers an expired session token.

    moto accepts any credentials; tests use this to see what amictl says about expired ones.
    """
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return None
    scope = auth.split(marker, 1)[1].split(",", 1)[0]
    if not scope.startswith("EXPIRED"):
        return None
    message = "The security token included in the request is expired"
    if "/sts/" in scope:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>"
            f"<Message>{message}</Message></Error><RequestId>expired</RequestId></ErrorResponse>"
        )
    else:
        body = (
            "<Response><Errors><Error><Code>RequestExpired</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>expired</RequestID></Response>"
        )
    return Response(body, 400, mimetype="text/xml")


# Every boto3 client the emulator itself makes (the demo seed, /_amictl/call) sends this header with a
# secret made at start, so that its requests are never throttled: they are control requests.
INTERNAL_HEADER = "X-Amictl-Internal"
INTERNAL_SECRET = secrets.token_hex(16)

# Query-protocol services: the xmlns of their ErrorResponse.
QUERY_NAMESPACES = {
    "autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
    "sns": "http://sns.amazonaws.com/doc/2010-03-31/",
    "monitoring": "http://monitoring.amazonaws.com/doc/2010-08-01/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
}


def _mark_internal_requests():
    """Make every boto3 client of this process (boto3's default session) send INTERNAL_HEADER."""
    import boto3

    def add_header(request, **_):
        request.headers[INTERNAL_HEADER] = INTERNAL_SECRET

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-send", add_header)


def _credential_scope(environ):
    """The SigV4 credential scope `KEY/DATE/REGION/SERVICE/aws4_request` of the request, or ''."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return ""
    return auth.split(marker, 1)[1].split(",", 1)[0].strip()


def _request_account(environ):
    """The account a signed request acts in (moto maps assumed-role keys to their account)."""
    from moto.iam.models import get_account_id_from

    key = _credential_scope(environ).split("/")[0]
    return get_account_id_from(key) if key else DEFAULT_ACCOUNT


def _signing_service(environ):
    parts = _credential_scope(environ).split("/")
    return parts[3] if len(parts) >= 5 else None


def _throttle_protocol(environ, path, form_action):
    """How the throttle answers this request ("ec2", "json" or "query"), or None when it may not:
    control and moto-api requests, the emulator's own requests, unsigned requests, and protocols
    other than EC2, query and JSON (REST services)."""
    if path.startswith("/moto-api") or environ.get("HTTP_X_AMICTL_INTERNAL") == INTERNAL_SECRET:
        return None
    service = _signing_service(environ)
    if not service:
        return None
    if service == "ec2":
        return "ec2"
    if environ.get("HTTP_X_AMZ_TARGET") or environ.get("CONTENT_TYPE", "").startswith("application/x-amz-json"):
        return "json"
    return "query" if form_action else None


def _throttling_error(environ, protocol):
    """The service's own throttling error (a WSGI Response) for a request of `protocol`."""
    service = _signing_service(environ)
    request_id = str(uuid.uuid4())
    content_type = environ.get("CONTENT_TYPE", "")
    if protocol == "ec2":
        # EC2: RequestLimitExceeded, HTTP 503, EC2's own error document.
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
            "<Message>Request limit exceeded.</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        return Response(body, 503, content_type="text/xml;charset=UTF-8")
    if protocol == "json":
        # JSON protocol (SSM, ...): ThrottlingException, HTTP 400.
        version = "1.0" if content_type.startswith("application/x-amz-json-1.0") else "1.1"
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
        return Response(
            body, 400, content_type=f"application/x-amz-json-{version}", headers={"x-amzn-RequestId": request_id}
        )
    # Query protocol (Auto Scaling, STS, ...): Throttling, HTTP 400, ErrorResponse.
    namespace = QUERY_NAMESPACES.get(service)
    xmlns = f' xmlns="{xml_escape(namespace)}"' if namespace else ""
    body = (
        f"<ErrorResponse{xmlns}><Error><Type>Sender</Type><Code>Throttling</Code>"
        f"<Message>Rate exceeded</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return Response(body, 400, content_type="text/xml", headers={"x-amzn-RequestId": request_id})


class DeniedRoles:
    """Roles whose AssumeRole STS refuses as AWS does when the role's trust policy does not let the
    caller in (or the role does not exist): HTTP 403, `AccessDenied`. {"role_arn", "deny": true|false}."""

    def __init__(self):
        self.lock = threading.Lock()
        self.roles = set()

    def set(self, body):
        with self.lock:
            if body.get("deny", True):
                self.roles.add(body["role_arn"])
            else:
                self.roles.discard(body["role_arn"])
        return self.config()

    def config(self):
        with self.lock:
            return {"denied": sorted(self.roles)}

    @staticmethod
    def _role(body):
        from urllib.parse import parse_qs

        values = parse_qs(body.decode("utf-8", "replace")).get("RoleArn")
        return values[0] if values else None

    def denies(self, body):
        with self.lock:
            return bool(self.roles) and self._role(body) in self.roles

    def refusal(self, body):
        role = self._role(body)
        xml = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            "<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/testing is not authorized "
            f"to perform: sts:AssumeRole on resource: {role}</Message></Error>"
            "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
        )
        return Response(xml, 403, mimetype="text/xml")


DENIED_ROLES = DeniedRoles()


def _form_action(body):
    from urllib.parse import parse_qs

    try:
        values = parse_qs(body.decode("utf-8", "replace")).get("Action")
    except Exception:
        return None
    return values[0] if values else None


class QuietHandler(WSGIRequestHandler):
    """No line per request: a 10,000-image seed would print tens of thousands."""

    def log_request(self, *args, **kwargs):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("AMICTL_EMULATOR_PORT", "5000")))
    parser.add_argument("--seed-demo", action="store_true", help="seed the demo estate in the default account")
    parser.add_argument("--amis", type=int, default=0, help="with --seed-demo: grow the estate to about N AMIs")
    parser.add_argument("--regions", default="us-east-1,eu-west-1")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="exit when the process that started it exits (tests)"
    )
    parser.add_argument(
        "--throttle", type=float, default=0.0, metavar="FRACTION",
        help="answer this fraction (0..1) of AWS requests with the service's throttling error",
    )
    parser.add_argument("--throttle-seed", type=int, default=0, help="seed of the throttle's random choices")
    parser.add_argument(
        "--max-page-size", type=int, default=0, metavar="N", help="cap every paginated list at N items a page (0: off)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="MS",
        help="add this many milliseconds to every AWS request (the round trip to a region, for benchmarks)",
    )
    parser.add_argument(
        "--aws-rate-limits", "--ec2-rate-limits", action="store_true",
        help="apply EC2's documented token buckets and LookupEvents' 2 a second (module rate_limits)",
    )
    args = parser.parse_args()

    apply_patches()
    _mark_internal_requests()
    KNOBS.set_throttle(args.throttle, args.throttle_seed, None)
    KNOBS.set_max_page_size(args.max_page_size)
    KNOBS.set_latency(args.latency_ms)
    rate_limits.LIMITS.set({"enabled": args.aws_rate_limits})
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app = App(args.port)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"amictl emulator (moto) listening on http://127.0.0.1:{args.port}", flush=True)
    if args.seed_demo:
        import demo_estate

        started = time.perf_counter()
        out = demo_estate.seed(
            endpoint=f"http://127.0.0.1:{args.port}",
            account=DEFAULT_ACCOUNT,
            regions=args.regions.split(","),
            amis=args.amis,
            seed=7,
            backdate=backdate,
        )
        app.stats.reset()
        print(
            f"demo estate seeded: {out['summary']} in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
    print("ready", flush=True)
    if args.exit_with_parent:
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
