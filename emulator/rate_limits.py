"""AWS rate limits (EC2's token buckets, CloudTrail LookupEvents' two a second) and the request-rate meter
of /_amictl/stats.

Off by default. `--aws-rate-limits` (alias `--ec2-rate-limits`) on the launcher's command line, or
`GET|POST /_amictl/aws-rate-limits` (alias `/_amictl/ec2-rate-limits`) {"enabled": true|false, "scale": 1.0,
"overrides": {"DescribeImages": {"bucket": N, "refill": R}, ...}} -> the setting in force. A POST replaces
the whole setting and refills every bucket.

EC2 (requests signed for the service `ec2`)
-------------------------------------------
Source: Amazon EC2 Developer Guide, "Request throttling for the Amazon EC2 API"
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). What it says, and how it is modelled:

* "Amazon EC2 throttles EC2 API requests for each AWS account on a per-Region basis", "each API is evaluated
  individually": one bucket per (account of the request's access key, Region of its SigV4 scope, action).
* "Amazon EC2 uses the token bucket algorithm"; "Each request that you make removes one token from the API's
  bucket"; over the limit "you get the RequestLimitExceeded error code": a request finding less than one
  token is answered RequestLimitExceeded (HTTP 503, EC2's error document) before moto sees it, so it has no
  effect, and it takes no token (the bucket is "reduced to zero (0) tokens", never below; a refused request
  has nothing to remove). Buckets start full.
* Refill: "If the bucket is below its maximum capacity, a set number of tokens is added back to it every
  second until it reaches its maximum capacity. If the bucket is full when refill tokens arrive, they are
  discarded." Modelled literally: the refill arrives once a second (each bucket's seconds counted from its
  first request), not as a trickle; fractional rates (`AdvertiseByoipCidr` 0.1) accumulate fractions of a
  token.
* Request token buckets, the guide's table "Request token bucket sizes and refill rates" (`CATEGORIES`
  below; capacity, refill per second): non-mutating actions (`Describe*`, `List*`, `Search*`, `Get*` not
  in another category) 100, 20; unfiltered and unpaginated non-mutating actions 50, 10; mutating actions
  (every other action) 50, 5; resource-intensive actions 50, 5; console non-mutating actions 100, 10 (not
  used: nothing here is the EC2 console); and the "Uncategorized actions" with their own sizes
  (`UNCATEGORIZED`, the whole table: e.g. CopyImage 100, 1; CreateTags 100, 10; DeregisterImage 100, 5;
  ModifyImageAttribute 100, 5; RunInstances 5, 2; TerminateInstances 100, 5). CreateImage is in no list, so
  it is a mutating action (50, 5); DescribeImages is not in the unfiltered list, so it is always 100, 20.
* "Unfiltered and unpaginated non-mutating actions — A specific subset of non-mutating API actions that,
  when requested without specifying either pagination or a filter, use tokens from a smaller token bucket
  ... so that tokens are deducted from the standard (larger) token bucket": DescribeInstances,
  DescribeInstanceStatus, DescribeNetworkInterfaces, DescribeSecurityGroups, DescribeSnapshots,
  DescribeSpotInstanceRequests, DescribeVolumes sent with no `Filter.N`, no `MaxResults` and no
  `NextToken` take their token from a second, smaller bucket of that action (50, 10) instead of the
  standard one. A request by ids alone (InstanceId.N, SnapshotId.N, OwnerId.N) has neither, so it is
  unfiltered (the guide names only pagination and filters).
* Resource token buckets, "These API actions have a separate resource token bucket that depletes based on
  the number of resources that are impacted by the request" (table "Resource token bucket sizes and refill
  rates"): RunInstances 1000, 2; TerminateInstances 1000, 20; StartInstances 1000, 2; StopInstances
  1000, 20. A request takes MaxCount tokens (RunInstances: the most it may launch) or one per InstanceId.N.
  "If you exceed a specific bucket limit for an API ... the action of the API is limited": a request needs
  its request token and its resource tokens. The guide does not say whether a request refused for
  resource tokens keeps its request token; modelled the less convenient way: the request token is spent
  ("each request that you make removes one token"), the resource bucket is untouched.

CloudTrail LookupEvents (requests signed for `cloudtrail`)
----------------------------------------------------------
Source: AWS CloudTrail API Reference, LookupEvents: "The rate of lookup requests is limited to two per
second, per account, per Region. If this limit is exceeded, a throttling error occurs." Modelled as at most 2
admitted requests in any 1-second sliding window per (account, Region) (stricter than a bucket of 2 refilled
every second, which lets 4 through across a second boundary: the guide says "two per second"); a refused
request is answered `ThrottlingException` (HTTP 400, {"__type": "ThrottlingException", "message": "Rate
exceeded"}; AWS Common Errors: "ThrottlingException: The request was denied due to request throttling.
HTTP Status Code: 400") and does not count.

Knobs (tests only; AWS has neither)
-----------------------------------
* "scale" (default 1.0, > 0) multiplies every capacity and refill rate (LookupEvents: its 2 a second); a
  capacity is never below 1 token, so every action stays possible. Below 1 a second, LookupEvents admits
  one request per 1/rate seconds.
* "overrides": {ACTION: {"bucket": N, "refill": R}} replaces the request bucket of ACTION (not scaled);
  "ACTION:unfiltered" the small bucket of an unfiltered-unpaginated action, "ACTION:resource" a resource
  bucket; "LookupEvents": {"per_second": N}.

Never limited: the emulator's own boto3 calls (/_amictl/call, the demo seed), control and /moto-api/
requests, unsigned requests, and services other than EC2 and CloudTrail LookupEvents. Refused requests are
counted in /_amictl/stats `throttled` / `throttled_by_action` like those of the random throttle.

Request-rate meter (/_amictl/stats)
-----------------------------------
`METER` counts every AWS request the emulator receives (throttled or not, the emulator's own boto3 calls
included, as `by_action` does), on arrival, per action (the query Action or the X-Amz-Target):
* "peak_rate_by_action": the largest number of requests received in any 1-second sliding window;
* "sustained_rate_by_action": the largest number received in any 10-second sliding window, divided by 10
  (requests a second; a run shorter than 10 seconds counts as a 10-second window).
Both since the last stats reset. Memory is the arrivals of the last 10 seconds per action.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from urllib.parse import parse_qs

# Request token buckets by category: (bucket maximum capacity, refill rate in tokens a second).
CATEGORIES = {
    "non-mutating": (100, 20),
    "unfiltered-unpaginated-non-mutating": (50, 10),
    "mutating": (50, 5),
    "resource-intensive": (50, 5),
    "console-non-mutating": (100, 10),  # requests from the EC2 console: none here
}
NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
UNFILTERED_UNPAGINATED = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# "Uncategorized actions": their own (capacity, refill) although they fit a category.
UNCATEGORIZED = {
    "AcceptVpcEndpointConnections": (10, 1),
    "AdvertiseByoipCidr": (1, 0.1),
    "AssignIpv6Addresses": (100, 5),
    "AssignPrivateIpAddresses": (100, 5),
    "AssignPrivateNatGatewayAddress": (10, 1),
    "AssociateCapacityReservationBillingOwner": (1, 0.5),
    "AssociateEnclaveCertificateIamRole": (10, 1),
    "AssociateIamInstanceProfile": (100, 5),
    "AssociateNatGatewayAddress": (10, 1),
    "AttachVerifiedAccessTrustProvider": (10, 2),
    "AuthorizeClientVpnIngress": (5, 2),
    "CancelDeclarativePoliciesReport": (1, 1),
    "CopyImage": (100, 1),
    "CreateClientVpnRoute": (5, 2),
    "CreateCoipCidr": (5, 1),
    "CreateCoipPool": (5, 1),
    "CreateDefaultSubnet": (1, 1),
    "CreateDefaultVpc": (1, 1),
    "CreateLaunchTemplateVersion": (100, 5),
    "CreateNatGateway": (10, 1),
    "CreateNetworkInterface": (100, 5),
    "CreateRestoreImageTask": (50, 0.1),
    "CreateSnapshot": (100, 5),
    "CreateSnapshots": (100, 5),
    "CreateSpotDatafeedSubscription": (50, 3),
    "CreateStoreImageTask": (50, 0.1),
    "CreateSubnetCidrReservation": (5, 1),
    "CreateTags": (100, 10),
    "CreateVerifiedAccessEndpoint": (20, 4),
    "CreateVerifiedAccessGroup": (10, 2),
    "CreateVerifiedAccessInstance": (10, 2),
    "CreateVerifiedAccessTrustProvider": (10, 2),
    "CreateVolume": (100, 5),
    "CreateVpcEndpoint": (4, 0.3),
    "CreateVpcEndpointServiceConfiguration": (10, 1),
    "DeleteClientVpnRoute": (5, 2),
    "DeleteCoipCidr": (5, 1),
    "DeleteCoipPool": (5, 1),
    "DeleteCoipPoolPermission": (5, 1),
    "DeleteNatGateway": (10, 1),
    "DeleteNetworkInterface": (100, 5),
    "DeleteSnapshot": (100, 5),
    "DeleteSpotDatafeedSubscription": (50, 3),
    "DeleteSubnetCidrReservation": (5, 1),
    "DeleteQueuedReservedInstances": (5, 5),
    "DeleteTags": (100, 10),
    "DeleteVerifiedAccessEndpoint": (20, 4),
    "DeleteVerifiedAccessGroup": (10, 2),
    "DeleteVerifiedAccessInstance": (10, 2),
    "DeleteVerifiedAccessTrustProvider": (10, 2),
    "DeleteVolume": (100, 5),
    "DeleteVpcEndpoints": (4, 0.3),
    "DeleteVpcEndpointServiceConfigurations": (10, 1),
    "DeprovisionByoipCidr": (1, 0.1),
    "DeregisterImage": (100, 5),
    "DescribeAggregateIdFormat": (10, 10),
    "DescribeByoipCidrs": (1, 0.5),
    "DescribeCapacityBlockExtensionOfferings": (10, 0.15),
    "DescribeCapacityBlockOfferings": (10, 0.15),
    "DescribeDeclarativePoliciesReports": (5, 5),
    "DescribeHostReservations": (5, 2),
    "DescribeHostReservationOfferings": (5, 2),
    "DescribeIdentityIdFormat": (10, 10),
    "DescribeIdFormat": (10, 10),
    "DescribeInstanceTopology": (1, 1),
    "DescribeMovingAddresses": (1, 1),
    "DescribePrincipalIdFormat": (10, 10),
    "DescribeReservedInstancesOfferings": (10, 10),
    "DescribeSecurityGroupReferences": (20, 5),
    "DescribeSpotDatafeedSubscription": (100, 13),
    "DescribeSpotFleetInstances": (100, 5),
    "DescribeSpotFleetRequestHistory": (100, 5),
    "DescribeSpotFleetRequests": (50, 3),
    "DescribeStaleSecurityGroups": (20, 5),
    "DescribeStoreImageTasks": (50, 0.5),
    "DescribeVerifiedAccessInstanceLoggingConfigurations": (10, 2),
    "DetachVerifiedAccessTrustProvider": (10, 2),
    "DisableFastLaunch": (5, 2),
    "DisableImageBlockPublicAccess": (1, 0.1),
    "DisableSnapshotBlockPublicAccess": (1, 0.1),
    "DisassociateCapacityReservationBillingOwner": (1, 0.5),
    "DisassociateEnclaveCertificateIamRole": (10, 1),
    "DisassociateIamInstanceProfile": (100, 5),
    "DisassociateNatGatewayAddress": (10, 1),
    "EnableFastLaunch": (5, 2),
    "EnableImageBlockPublicAccess": (1, 0.1),
    "EnableSnapshotBlockPublicAccess": (1, 0.1),
    "GetAssociatedEnclaveCertificateIamRoles": (10, 1),
    "GetDeclarativePoliciesReportSummary": (5, 5),
    "GetHostReservationPurchasePreview": (5, 2),
    "ModifyImageAttribute": (100, 5),
    "ModifyInstanceMetadataDefaults": (2, 2),
    "ModifyInstanceMetadataOptions": (100, 5),
    "ModifyLaunchTemplate": (100, 5),
    "ModifyNetworkInterfaceAttribute": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "ModifyVerifiedAccessEndpoint": (20, 4),
    "ModifyVerifiedAccessEndpointPolicy": (20, 4),
    "ModifyVerifiedAccessGroup": (10, 2),
    "ModifyVerifiedAccessGroupPolicy": (20, 4),
    "ModifyVerifiedAccessInstance": (10, 2),
    "ModifyVerifiedAccessInstanceLoggingConfiguration": (10, 2),
    "ModifyVerifiedAccessTrustProvider": (10, 2),
    "ModifyVpcEndpoint": (4, 0.3),
    "ModifyVpcEndpointServiceConfiguration": (10, 1),
    "MoveAddressToVpc": (1, 1),
    "ProvisionByoipCidr": (1, 0.1),
    "PurchaseCapacityBlock": (10, 0.15),
    "PurchaseCapacityBlockExtension": (10, 0.15),
    "PurchaseHostReservation": (5, 2),
    "PurchaseReservedInstancesOffering": (5, 5),
    "RejectVpcEndpointConnections": (10, 1),
    "RestoreAddressToClassic": (1, 1),
    "RevokeClientVpnIngress": (5, 2),
    "RunInstances": (5, 2),
    "StartDeclarativePoliciesReport": (1, 1),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "UnassignPrivateIpAddresses": (100, 5),
    "UnassignPrivateNatGatewayAddress": (10, 1),
    "WithdrawByoipCidr": (1, 0.1),
}
# Resource token buckets: (capacity, refill a second); a request takes one token per instance.
RESOURCE_BUCKETS = {
    "RunInstances": (1000, 2),
    "TerminateInstances": (1000, 20),
    "StartInstances": (1000, 2),
    "StopInstances": (1000, 20),
}
# CloudTrail LookupEvents: requests a second, per account and Region.
LOOKUP_EVENTS_PER_SECOND = 2

EPSILON = 1e-9  # fractional refills (0.1 a second) must add up to whole tokens


def category(action):
    """The guide's category of an EC2 action's standard request bucket."""
    if action in UNCATEGORIZED:
        return "uncategorized"
    if action in RESOURCE_INTENSIVE:
        return "resource-intensive"
    if action.startswith(NON_MUTATING_PREFIXES):
        return "non-mutating"
    return "mutating"


def request_bucket_size(action, unfiltered=False):
    """(capacity, refill a second) of the request bucket an EC2 request of `action` takes its token from."""
    if unfiltered:
        return CATEGORIES["unfiltered-unpaginated-non-mutating"]
    if action in UNCATEGORIZED:
        return UNCATEGORIZED[action]
    return CATEGORIES[category(action)]


class Bucket:
    __slots__ = ("capacity", "refill", "tokens", "tick")

    def __init__(self, capacity, refill, now):
        self.capacity = capacity
        self.refill = refill
        self.tokens = float(capacity)  # full at start
        self.tick = now  # when the last refill arrived; the next one comes a second later

    def _refill(self, now):
        if now - self.tick >= 1.0:
            seconds = int(now - self.tick)
            self.tokens = min(float(self.capacity), self.tokens + seconds * self.refill)
            self.tick += seconds

    def has(self, n, now):
        self._refill(now)
        return self.tokens + EPSILON >= n

    def take(self, n):
        self.tokens = max(0.0, self.tokens - n)


class RateLimits:
    """The AWS rate limits in force and every bucket, behind one lock (each check is a few dict look-ups)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accounts = {}  # access key id -> account (moto's mapping never changes for a key)
        self.set({})

    # -- setting --------------------------------------------------------------------------------------------

    def set(self, body):
        enabled = bool(body.get("enabled", False))
        scale = body.get("scale")
        scale = 1.0 if scale is None else float(scale)
        if not scale > 0:
            raise ValueError("scale must be a positive number")
        overrides = body.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ValueError('overrides must be {"Action": {"bucket": N, "refill": R}, ...}')
        clean = {}
        for name, value in overrides.items():
            if name == "LookupEvents":
                per_second = float(value["per_second"])
                if not per_second > 0:
                    raise ValueError("LookupEvents per_second must be positive")
                clean[name] = {"per_second": per_second}
                continue
            bucket, refill = float(value["bucket"]), float(value["refill"])
            if bucket < 1 or refill < 0:
                raise ValueError(f"override {name}: bucket must be >= 1 and refill >= 0")
            clean[name] = {"bucket": bucket, "refill": refill}
        with self.lock:
            self.enabled = enabled
            self.scale = scale
            self.overrides = clean
            self.buckets = {}
            self.lookups = {}
        return self.config()

    def config(self):
        with self.lock:
            return {"enabled": self.enabled, "scale": self.scale, "overrides": dict(self.overrides)}

    def _size(self, name, default):
        override = self.overrides.get(name)
        if override is not None:
            return override["bucket"], override["refill"]
        capacity, refill = default
        return max(1.0, capacity * self.scale), refill * self.scale

    # -- checks ---------------------------------------------------------------------------------------------

    def refuses(self, environ, action, body):
        """True when the request must be answered with the service's throttling error. Takes the
        request's tokens when it is let through. Callers pass only requests that may be throttled at all
        (signed AWS requests that are not the emulator's own)."""
        if not self.enabled:
            return False
        scope = _credential_scope(environ).split("/")
        if len(scope) < 5:
            return False
        key, region, service = scope[0], scope[2], scope[3]
        if service == "ec2":
            return self._ec2_refuses(self._account(key), region, action, body)
        if service == "cloudtrail" and action.rsplit(".", 1)[-1] == "LookupEvents":
            return self._lookup_refuses(self._account(key), region)
        return False

    def _ec2_refuses(self, account, region, action, body):
        params = None
        unfiltered = False
        if action in UNFILTERED_UNPAGINATED:
            params = _params(body)
            unfiltered = not any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params)
        resources = 0
        if action in RESOURCE_BUCKETS:
            params = params if params is not None else _params(body)
            if action == "RunInstances":
                resources = _int(params.get("MaxCount"), _int(params.get("MinCount"), 1))
            else:
                resources = sum(1 for k in params if k.startswith("InstanceId."))
        name = f"{action}:unfiltered" if unfiltered else action
        now = time.monotonic()
        with self.lock:
            request = self.buckets.get((account, region, name))
            if request is None:
                request = self.buckets[(account, region, name)] = Bucket(
                    *self._size(name, request_bucket_size(action, unfiltered)), now
                )
            if not request.has(1, now):
                return True
            request.take(1)
            if resources:
                rname = f"{action}:resource"
                resource = self.buckets.get((account, region, rname))
                if resource is None:
                    resource = self.buckets[(account, region, rname)] = Bucket(
                        *self._size(rname, RESOURCE_BUCKETS[action]), now
                    )
                if not resource.has(resources, now):
                    return True  # the request token stays spent (see the module docstring)
                resource.take(resources)
            return False

    def _lookup_refuses(self, account, region):
        now = time.monotonic()
        with self.lock:
            override = self.overrides.get("LookupEvents")
            rate = override["per_second"] if override else LOOKUP_EVENTS_PER_SECOND * self.scale
            count, window = (int(rate + EPSILON), 1.0) if rate >= 1 else (1, 1.0 / rate)
            admitted = self.lookups.setdefault((account, region), deque())
            while admitted and admitted[0] <= now - window:
                admitted.popleft()
            if len(admitted) >= count:
                return True
            admitted.append(now)
            return False

    def _account(self, key):
        account = self.accounts.get(key)
        if account is None:
            from moto.iam.models import get_account_id_from

            account = get_account_id_from(key)
            if len(self.accounts) > 100_000:
                self.accounts.clear()
            self.accounts[key] = account
        return account


def _credential_scope(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return ""
    return auth.split(marker, 1)[1].split(",", 1)[0].strip()


def _params(body):
    try:
        return {k: v[0] for k, v in parse_qs((body or b"").decode("utf-8", "replace")).items()}
    except Exception:
        return {}


def _int(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


LIMITS = RateLimits()


def control(body, method):
    """GET|POST /_amictl/aws-rate-limits (alias /_amictl/ec2-rate-limits)."""
    return LIMITS.set(body) if method == "POST" else LIMITS.config()


class RateMeter:
    """Arrivals per action: the busiest 1-second and 10-second sliding windows since the last reset."""

    SHORT, LONG = 1.0, 10.0

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.short = {}  # action -> deque of arrival times within the last second
            self.long = {}  # action -> deque of arrival times within the last 10 seconds
            self.peak = {}
            self.peak_long = {}

    def hit(self, action):
        with self.lock:
            now = time.monotonic()  # taken under the lock: every deque stays in order
            short = self.short.get(action)
            if short is None:
                short = self.short[action] = deque()
                self.long[action] = deque()
            long = self.long[action]
            short.append(now)
            long.append(now)
            # Half-open windows (now - length, now]: the busiest window ends at an arrival.
            while short[0] <= now - self.SHORT:
                short.popleft()
            while long[0] <= now - self.LONG:
                long.popleft()
            if len(short) > self.peak.get(action, 0):
                self.peak[action] = len(short)
            if len(long) > self.peak_long.get(action, 0):
                self.peak_long[action] = len(long)

    def snapshot(self):
        with self.lock:
            return {
                "peak_rate_by_action": dict(self.peak),
                "sustained_rate_by_action": {k: v / self.LONG for k, v in self.peak_long.items()},
            }


METER = RateMeter()
