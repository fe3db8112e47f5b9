"""Image safety features of EC2 that moto 5.2.5 lacks: image references, last launch, deregistration protection.

Every behaviour below follows the Amazon EC2 API reference (the botocore EC2 model carries the same text) or,
where it says so, the AWS CLI's documented examples. Where the documentation is silent the emulator answers
the less convenient way, and says so.

- **Emulator clock** (`now()`): wall-clock UTC plus an offset that `POST /_amictl/clock {"advance_days": N}`
  moves forward (`{"offset_days": N}` sets it; GET reads it). It drives only what this module and module
  recycle_bin add: when a launch is reported as LastLaunchedTime, the 24-hour cooldown of deregistration
  protection, and the Recycle Bin's retention periods. Everything else (CreationDate, DeprecationTime,
  instance LaunchTime, ...) keeps moto's wall clock. `/moto-api/reset` sets the offset back to 0 (and
  LastLaunchedTime's reporting delay back to 24 hours).

- **DescribeImageReferences** (API reference, DescribeImageReferences; ResourceTypeRequest;
  ResourceTypeOption; ImageReference). "Describes your Amazon Web Services resources that are referencing
  the specified images." ImageId.N: "Minimum number of 1 item. Maximum number of 10 items." Either
  IncludeAllResourceTypes or ResourceTypes must be specified; "If you also specify ResourceTypes with
  ResourceTypeOptions, your specified values override the default values." Supported types
  `ec2:Instance | ec2:LaunchTemplate | ssm:Parameter | imagebuilder:ImageRecipe |
  imagebuilder:ContainerRecipe`. Options: `state-name` for ec2:Instance ("Valid values: pending | running |
  shutting-down | terminated | stopping | stopped. Default: All states" - so terminated instances that EC2
  still lists count too; moto lists them until reset), `version-depth` for ec2:LaunchTemplate ("The number
  of launch template versions to check, starting from the most recent version"; "Valid values: Integers
  between 1 and 10000. Default: 10"). MaxResults minimum 5 (the model); pages with NextToken (default
  1000 a page here, the page-size cap applies). Each answer is {ImageId, ResourceType, Arn}:
    * ec2:Instance - instances of the caller's account and Region launched from the image (also through
      `resolve:ssm:` - the parameter's value at launch), `arn:aws:ec2:REGION:ACCOUNT:instance/ID`;
    * ec2:LaunchTemplate - a template once if one of its `version-depth` newest versions has the image's id
      as ImageId, `arn:aws:ec2:REGION:ACCOUNT:launch-template/ID`. A version whose ImageId is
      `resolve:ssm:NAME` is NOT reported: the reference does not say the check resolves parameters (the
      less convenient answer; the parameter itself is reported as ssm:Parameter when its data type is
      aws:ec2:image). Set LAUNCH_TEMPLATES_RESOLVE_SSM = True to change that;
    * ssm:Parameter - parameters of data type `aws:ec2:image` whose current value is the image id,
      `arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`;
    * imagebuilder:ImageRecipe / imagebuilder:ContainerRecipe - moto has no Image Builder: a test adds such
      references with `POST /_amictl/image-references/extra {"account", "region", "image_id",
      "resource_type", "arn"}` (`"remove": true` removes it), a stand-in for the Image Builder service.
  Errors: more than 10 ids or a bad option value InvalidParameterValue; neither IncludeAllResourceTypes nor
  ResourceTypes MissingParameter; an id that is not `ami-...` InvalidAMIID.Malformed; an unknown id
  InvalidAMIID.NotFound; a deregistered one InvalidAMIID.Unavailable (the reference lists no specific
  codes; these are the ones EC2 gives for image ids elsewhere).

- **LastLaunchedTime** (API reference, Image.LastLaunchedTime and ImageAttribute.LastLaunchedTime: "The date
  and time, in ISO 8601 date-time format, when the AMI was last used to launch an EC2 instance. When the
  AMI is used to launch an instance, there is a 24-hour delay before that usage is reported."). Every
  launch (RunInstances, and the instances Auto Scaling, Spot and EC2 Fleet launch) records the emulator
  clock's time on the image; DescribeImages answers the newest launch that is at least 24 hours old by the
  emulator clock (so a launch shows after `/_amictl/clock {"advance_days": 1}`), formatted
  `YYYY-MM-DDTHH:MM:SSZ`, and only to the image's owner (the reference is silent about other accounts: the
  less convenient answer). DescribeImageAttribute `lastLaunchedTime` answers {"LastLaunchedTime": {"Value"}}
  ({} when never reported; owner only, else AuthFailure; stock moto: HTTP 500). Controls:
  `POST /_amictl/last-launched {"account", "region", "image_id", "days_ago" | "time" (ISO 8601) | "time":
  null}` sets (or clears) the reported time at once, dropping unreported launches;
  `POST /_amictl/last-launched/delay {"hours": N}` changes the 24-hour reporting delay (0: at once).

- **Deregistration protection** (API reference, EnableImageDeregistrationProtection: "When deregistration
  protection is enabled, the AMI can't be deregistered"; WithCooldown: "If true, enforces deregistration
  protection for 24 hours after deregistration protection is disabled"; DisableImageDeregistrationProtection:
  "If you chose to include a 24-hour cooldown period when you enabled deregistration protection for the
  AMI, then, when you disable deregistration protection, you won't immediately be able to deregister the
  AMI"). The AWS CLI's examples (enable-image-deregistration-protection / disable-...) show `Return` as the
  new state: "enabled-without-cooldown" and "disabled"; with WithCooldown the state is
  "enabled-with-cooldown". Image.DeregistrationProtection answers the same strings ("disabled" for an image
  never protected). During the cooldown after disabling, the reference does not give the value: the
  emulator answers "disabled" (the less convenient answer: only DeregisterImage's refusal shows the
  cooldown). DescribeImageAttribute `deregistrationProtection` answers {"DeregistrationProtection":
  {"Value"}}. Only the owner may change it (AuthFailure, as for other owner-only image actions).
  DeregisterImage of a protected image, or within the cooldown, fails with `OperationNotPermitted` (the
  reference documents no code for this; the EC2 error-code list describes OperationNotPermitted with the
  analogous case, terminating an instance that has termination protection) and deregisters nothing.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, MalformedAMIIdError, UnvailableAMIIdError
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses.amis import AmisResponse

DEFAULT_ACCOUNT = "123456789012"
LOCK = threading.RLock()

# ---------------------------------------------------------------------------------------------------------------
# Emulator clock
# ---------------------------------------------------------------------------------------------------------------

_clock = {"offset": timedelta(0)}


def now():
    """The emulator clock: naive UTC like moto's own times, wall clock plus the offset tests set."""
    return utcnow() + _clock["offset"]


def _iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_control(body, method):
    if method == "POST":
        if "offset_days" in body:
            _clock["offset"] = timedelta(days=float(body["offset_days"]))
        elif "advance_days" in body:
            days = float(body["advance_days"])
            if days < 0:
                raise ValueError("advance_days moves the clock forward only (use offset_days to set it)")
            _clock["offset"] += timedelta(days=days)
        else:
            raise KeyError("give advance_days or offset_days")
    return {"now": _iso(now()), "offset_days": _clock["offset"].total_seconds() / 86400.0}


def _naive(value):
    """ISO 8601 text (or a datetime) as naive UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _ec2(account, region):
    return get_backend("ec2")[account or DEFAULT_ACCOUNT][region]


def _image(body):
    backend = _ec2(body.get("account"), body["region"])
    image = backend.amis.get(body["image_id"])
    if image is None:
        raise KeyError(f"no image {body['image_id']} in {body.get('account') or DEFAULT_ACCOUNT}/{body['region']}")
    return backend, image


# ---------------------------------------------------------------------------------------------------------------
# LastLaunchedTime
# ---------------------------------------------------------------------------------------------------------------

_report = {"delay": timedelta(hours=24)}
# The account DescribeImages answers for, per request thread: LastLaunchedTime is shown to the owner only.
_VIEW = threading.local()


def record_launch(image, when):
    with LOCK:
        launches = getattr(image, "_amictl_launches", None)
        if launches is None:
            launches = image._amictl_launches = {"reported": None, "pending": []}
        launches["pending"].append(when)


def reported_last_launch(image):
    """The newest launch whose reporting delay has passed by the emulator clock, or None."""
    launches = getattr(image, "_amictl_launches", None)
    if launches is None:
        return None
    with LOCK:
        cutoff = now() - _report["delay"]
        due = [t for t in launches["pending"] if t <= cutoff]
        if due:
            launches["pending"] = [t for t in launches["pending"] if t > cutoff]
            newest = max(due)
            if launches["reported"] is None or newest > launches["reported"]:
                launches["reported"] = newest
        return launches["reported"]


def _ami_last_launched_time(self):
    viewer = getattr(_VIEW, "account", None)
    if viewer is None or viewer != self.owner_id:
        return None
    at = reported_last_launch(self)
    return _iso(at) if at is not None else None


def _resolve_image_id(backend, image_id):
    """An instance's image id with `resolve:ssm:NAME[:VERSION|:LABEL]` resolved in the same account and
    Region (the parameter's value now, i.e. at launch); None when it does not resolve."""
    if not isinstance(image_id, str) or not image_id.startswith("resolve:ssm:"):
        return image_id
    from moto.ssm.models import ssm_backends

    name = image_id[len("resolve:ssm:"):]
    try:
        parameter = ssm_backends[backend.account_id][backend.region_name].get_parameter(name)
    except Exception:
        return None
    return parameter.value if parameter is not None else None


def _wrap_run_instances(stock):
    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        reservation = stock(self, image_id, count, user_data, security_group_names, **kwargs)
        when = now()
        for instance in reservation.instances:
            resolved = _resolve_image_id(self, instance.image_id)
            instance._amictl_image_id = resolved
            image = self.amis.get(resolved) if resolved else None
            if image is not None:
                record_launch(image, when)
        return reservation

    run_instances.__doc__ = stock.__doc__
    return run_instances


def last_launched_control(body):
    backend, image = _image(body)
    with LOCK:
        if "days_ago" in body:
            when = now() - timedelta(days=float(body["days_ago"]))
        elif body.get("time") is not None:
            when = _naive(body["time"])
        elif "time" in body:
            when = None
        else:
            raise KeyError('give "days_ago", "time" (ISO 8601) or "time": null')
        image._amictl_launches = {"reported": when, "pending": []}
    return {"image_id": image.id, "last_launched_time": _iso(when) if when else None}


def last_launched_delay_control(body, method):
    if method == "POST":
        hours = float(body.get("hours", 24))
        if hours < 0:
            raise ValueError("hours must not be negative")
        _report["delay"] = timedelta(hours=hours)
    return {"hours": _report["delay"].total_seconds() / 3600.0}


# ---------------------------------------------------------------------------------------------------------------
# Deregistration protection
# ---------------------------------------------------------------------------------------------------------------

COOLDOWN = timedelta(hours=24)


def protection_state(image):
    state = getattr(image, "_amictl_protection", None)
    if state == "with-cooldown":
        return "enabled-with-cooldown"
    if state == "without-cooldown":
        return "enabled-without-cooldown"
    return "disabled"


def _ami_deregistration_protection(self):
    return protection_state(self)


def refuses_deregistration(image):
    """Why DeregisterImage must refuse `image` now, or None."""
    if getattr(image, "_amictl_protection", None):
        return f"The image {image.id} has deregistration protection enabled. Disable it to deregister the image."
    until = getattr(image, "_amictl_protected_until", None)
    if until is not None and now() < until:
        return (
            f"The image {image.id} is protected from deregistration until {_iso(until)}: deregistration "
            "protection was disabled less than 24 hours ago and was enabled with a cooldown."
        )
    return None


def _wrap_deregister_image(stock):
    def deregister_image(self, ami_id):
        image = self.amis.get(ami_id)
        if image is not None:
            reason = refuses_deregistration(image)
            if reason:
                raise EC2ClientError("OperationNotPermitted", reason)
        return stock(self, ami_id)

    return deregister_image


# ---------------------------------------------------------------------------------------------------------------
# Response handlers (EC2 query API)
# ---------------------------------------------------------------------------------------------------------------

_helpers = {}


def enable_image_deregistration_protection(self):
    image_id = self._get_param("ImageId")
    with_cooldown = self._get_bool_param("WithCooldown", False)
    self.error_on_dryrun()
    if not image_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    image = _helpers["own_image"](self.ec2_backend, image_id, self.current_account)
    with LOCK:
        image._amictl_protection = "with-cooldown" if with_cooldown else "without-cooldown"
    return ActionResult({"Return": protection_state(image)})


def disable_image_deregistration_protection(self):
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    if not image_id:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    image = _helpers["own_image"](self.ec2_backend, image_id, self.current_account)
    with LOCK:
        if getattr(image, "_amictl_protection", None) == "with-cooldown":
            until = now() + COOLDOWN
            previous = getattr(image, "_amictl_protected_until", None)
            image._amictl_protected_until = max(until, previous) if previous else until
        image._amictl_protection = None
    return ActionResult({"Return": protection_state(image)})


def _wrap_describe_images(stock):
    def describe_images(self):
        _VIEW.account = self.current_account  # read while the answer is serialised
        return stock(self)

    describe_images.__doc__ = stock.__doc__
    return describe_images


def _wrap_describe_image_attribute(stock):
    def describe_image_attribute(self):
        """DescribeImageAttribute `lastLaunchedTime` and `deregistrationProtection` (stock moto: HTTP 500 and
        InvalidRequest); every other attribute as before."""
        attribute = self._get_param("Attribute")
        if attribute not in ("lastLaunchedTime", "deregistrationProtection"):
            return stock(self)
        image_id = self._get_param("ImageId")
        self.error_on_dryrun()
        image = _helpers["own_image"](self.ec2_backend, image_id, self.current_account)
        if attribute == "lastLaunchedTime":
            at = reported_last_launch(image)
            return ActionResult({"ImageId": image.id, "LastLaunchedTime": {"Value": _iso(at)} if at else {}})
        return ActionResult({"ImageId": image.id, "DeregistrationProtection": {"Value": protection_state(image)}})

    return describe_image_attribute


# --- DescribeImageReferences -------------------------------------------------------------------------------------

RESOURCE_TYPES = (
    "ec2:Instance",
    "ec2:LaunchTemplate",
    "ssm:Parameter",
    "imagebuilder:ImageRecipe",
    "imagebuilder:ContainerRecipe",
)
EXTRA_TYPES = ("imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe")
INSTANCE_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
DEFAULT_VERSION_DEPTH = 10
LAUNCH_TEMPLATES_RESOLVE_SSM = False


def _bad(message):
    return EC2ClientError("InvalidParameterValue", message)


def _options_of(resource_types, include_all):
    """{resource type: {option name: [values]}} of the types to check."""
    chosen = {t: {} for t in RESOURCE_TYPES} if include_all else {}
    for entry in resource_types or []:
        rtype = entry.get("ResourceType")
        if rtype not in RESOURCE_TYPES:
            raise _bad(f"Value ({rtype}) for parameter ResourceType is invalid. Valid values: {', '.join(RESOURCE_TYPES)}")
        options = chosen.setdefault(rtype, {})
        for option in entry.get("ResourceTypeOptions") or []:
            name, values = option.get("OptionName"), [str(v) for v in option.get("OptionValues") or []]
            if name == "state-name" and rtype == "ec2:Instance":
                wrong = [v for v in values if v not in INSTANCE_STATES]
                if wrong or not values:
                    raise _bad(f"Value ({', '.join(wrong)}) for option state-name is invalid. Valid values: {', '.join(INSTANCE_STATES)}")
            elif name == "version-depth" and rtype == "ec2:LaunchTemplate":
                if len(values) != 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= 10000:
                    raise _bad(f"Value ({', '.join(values)}) for option version-depth is invalid. Valid values: integers between 1 and 10000")
            else:
                raise _bad(f"Option {name} is not valid for resource type {rtype}")
            options[name] = values
    return chosen


def _check_image_ids(backend, image_ids):
    if not image_ids:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ImageId")
    if len(image_ids) > 10:
        raise _bad(f"The request can check at most 10 images; it names {len(image_ids)}.")
    malformed = [i for i in image_ids if not str(i).startswith("ami-")]
    if malformed:
        raise MalformedAMIIdError(malformed)
    for image_id in image_ids:
        if image_id in backend.amis:
            continue
        if image_id in backend.deleted_amis:
            raise UnvailableAMIIdError(image_id)
        raise InvalidAMIIdError(image_id)


def image_references(backend, partition, image_ids, options):
    account, region = backend.account_id, backend.region_name
    found = []
    wanted = set(image_ids)
    if "ec2:Instance" in options:
        states = set(options["ec2:Instance"].get("state-name") or INSTANCE_STATES)
        for instance in backend.all_instances():
            image_id = getattr(instance, "_amictl_image_id", instance.image_id)
            if image_id in wanted and instance.state in states:
                found.append((image_id, "ec2:Instance", f"arn:{partition}:ec2:{region}:{account}:instance/{instance.id}"))
    if "ec2:LaunchTemplate" in options:
        depth = int((options["ec2:LaunchTemplate"].get("version-depth") or [DEFAULT_VERSION_DEPTH])[0])
        for template in backend.launch_templates.values():
            hits = []
            for version in sorted(template.versions, key=lambda v: v.number, reverse=True)[:depth]:
                image_id = version.data.get("ImageId")
                if LAUNCH_TEMPLATES_RESOLVE_SSM:
                    image_id = _resolve_image_id(backend, image_id)
                if image_id in wanted and image_id not in hits:
                    hits.append(image_id)
            arn = f"arn:{partition}:ec2:{region}:{account}:launch-template/{template.id}"
            found += [(image_id, "ec2:LaunchTemplate", arn) for image_id in hits]
    if "ssm:Parameter" in options:
        from moto.ssm.models import ssm_backends

        parameters = ssm_backends[account][region]._parameters
        for name, versions in list(parameters.items()):
            current = versions[-1] if versions else None
            if current is None or getattr(current, "data_type", None) != "aws:ec2:image":
                continue
            if current.value in wanted:
                path = name if name.startswith("/") else "/" + name
                found.append((current.value, "ssm:Parameter", f"arn:{partition}:ssm:{region}:{account}:parameter{path}"))
    for image_id, rtype, arn in getattr(backend, "_amictl_image_refs_extra", []):
        if rtype in options and image_id in wanted:
            found.append((image_id, rtype, arn))
    order = {image_id: n for n, image_id in enumerate(image_ids)}
    kinds = {rtype: n for n, rtype in enumerate(RESOURCE_TYPES)}
    found.sort(key=lambda r: (order[r[0]], kinds[r[1]]))
    return [{"ImageId": i, "ResourceType": t, "Arn": a} for i, t, a in found]


def describe_image_references(self):
    image_ids = self._get_param("ImageIds", []) or []
    include_all = self._get_bool_param("IncludeAllResourceTypes", False)
    resource_types = self._get_param("ResourceTypes", []) or []
    max_results = self._get_int_param("MaxResults")
    self.error_on_dryrun()
    backend = self.ec2_backend
    _check_image_ids(backend, image_ids)
    if not include_all and not resource_types:
        raise EC2ClientError(
            "MissingParameter", "Either IncludeAllResourceTypes or ResourceTypes must be specified."
        )
    if max_results is not None and max_results < 5:
        raise _bad(f"Value ({max_results}) for parameter MaxResults is invalid. Expecting a value greater than 5.")
    options = _options_of(resource_types, include_all)
    references = image_references(backend, self.partition, image_ids, options)
    page, token = _helpers["page"](self, references, 1000)
    result = {"ImageReferences": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def image_references_extra_control(body):
    """{"account", "region", "image_id", "resource_type" (imagebuilder:ImageRecipe |
    imagebuilder:ContainerRecipe), "arn", "remove": false}: a reference only AWS's own check knows (Image
    Builder, which moto lacks)."""
    backend, image = _image(body)
    rtype, arn = body["resource_type"], body["arn"]
    if rtype not in EXTRA_TYPES:
        raise ValueError(f"resource_type must be one of {EXTRA_TYPES}; the others are computed from the emulator's state")
    with LOCK:
        extra = list(getattr(backend, "_amictl_image_refs_extra", []))
        entry = (image.id, rtype, arn)
        extra = [e for e in extra if e != entry]
        if not body.get("remove"):
            extra.append(entry)
        backend._amictl_image_refs_extra = extra
    return {"references": [{"ImageId": i, "ResourceType": t, "Arn": a} for i, t, a in extra]}


# ---------------------------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------------------------


def control(path, body, method):
    if path == "/_amictl/clock":
        return clock_control(body, method)
    if path == "/_amictl/last-launched":
        return last_launched_control(body)
    if path == "/_amictl/last-launched/delay":
        return last_launched_delay_control(body, method)
    if path == "/_amictl/image-references/extra":
        return image_references_extra_control(body)
    raise KeyError(f"unknown control path {path}")


def _wrap_moto_reset(stock):
    def reset(self):
        """`/moto-api/reset` clears all state: the emulator clock and the reporting delay too."""
        stock(self)
        _clock["offset"] = timedelta(0)
        _report["delay"] = timedelta(hours=24)

    return reset


def apply_patches(page, own_image):
    """Install the patches. Call after the launcher's own AmiBackend/AmisResponse patches and after
    recycle_bin.apply_patches (so that a protected image is refused before it could reach the Recycle Bin):
    DescribeImages and DeregisterImage are wrapped, not replaced. `page` slices a list by
    MaxResults/NextToken, `own_image` finds an image for an owner-only action (or raises EC2's error)."""
    _helpers["page"] = page
    _helpers["own_image"] = own_image
    Ami.last_launched_time = property(_ami_last_launched_time)
    Ami.deregistration_protection = property(_ami_deregistration_protection)
    InstanceBackend.run_instances = _wrap_run_instances(InstanceBackend.run_instances)
    AmiBackend.deregister_image = _wrap_deregister_image(AmiBackend.deregister_image)
    AmisResponse.describe_images = _wrap_describe_images(AmisResponse.describe_images)
    AmisResponse.describe_image_attribute = _wrap_describe_image_attribute(AmisResponse.describe_image_attribute)
    AmisResponse.enable_image_deregistration_protection = enable_image_deregistration_protection
    AmisResponse.disable_image_deregistration_protection = disable_image_deregistration_protection
    AmisResponse.describe_image_references = describe_image_references
    from moto.moto_api._internal.models import MotoAPIBackend

    MotoAPIBackend.reset = _wrap_moto_reset(MotoAPIBackend.reset)
