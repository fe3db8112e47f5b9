#!/usr/bin/env python3
"""moto in server mode, hosted in-process, with the gaps amictl's tests need filled.

Listens on 127.0.0.1 only. On top of stock moto 5.2.5 it:

* paginates DescribeLaunchTemplates, DescribeLaunchTemplateVersions, DescribeImages and DescribeSnapshots
  with MaxResults/NextToken (stock moto caps the first two at 15 items with no NextToken and ignores
  MaxResults on the others), so amictl's pagination is exercised as it is against AWS;
* writes CopyImage snapshot descriptions the way EC2 does ("Copied for DestinationAmi ...");
* looks images up by id directly (stock moto copies and scans every image of the region);
* looks up EC2 tags by resource id in constant time (stock moto scans every tag of the region for each
  resource, which makes a 10,000-image describe take minutes);
* adds control endpoints under /_amictl/ for tests and benchmarks:
    GET  /_amictl/health                 -> {"ok": true}
    POST /_amictl/backdate               {"account", "region", "image_id", "days_ago" | "creation_date"}
    POST /_amictl/seed                   {"account", "regions", "amis", "seed"} -> the demo estate's key ids
    POST /_amictl/call                   {"account", "region", "service", "operation", "params"}: one boto3
                                         call (snake_case operation) in that account, for tests
    GET  /_amictl/stats                  -> {"requests", "server_seconds" (wall time with a request in
                                            flight), "request_seconds_summed", "by_action"}
    POST /_amictl/stats/reset
  Control requests are not counted in the stats.
  Every control request (any path under /_amictl/, health included) must carry the header
  `X-Amictl-Control: 1` and a loopback Host (`127.0.0.1`, `localhost` or `[::1]`, any port), and no
  `Origin` header; anything else, OPTIONS preflights included, is answered 403 {"error": ...} and does
  nothing. This keeps a web page open in a browser on this machine from driving the control API
  (cross-site requests, DNS rebinding); see `_control_refusal`.

Usage: amictl_emulator.py [--port 5000] [--seed-demo] [--amis N] [--regions us-east-1,eu-west-1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

# Before moto is imported: keep moto's ~1,300 bundled public AMIs (and their snapshots) out of every
# account, so that an estate contains what was seeded and nothing else.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
# One public vendor image (owned by another account) in every account and region, as real
# estates have: instances run it, and it is not ours to retire or revoke.
os.environ.setdefault("MOTO_AMIS_PATH", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor_amis.json"))

from moto.backends import get_backend  # noqa: E402
from moto.ec2.models import core as ec2_core  # noqa: E402
from moto.ec2.models.amis import AmiBackend  # noqa: E402
from moto.ec2.responses.amis import AmisResponse  # noqa: E402
from moto.ec2.responses.elastic_block_store import ElasticBlockStore  # noqa: E402
from moto.ec2.responses.launch_templates import LaunchTemplates  # noqa: E402
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

DEFAULT_ACCOUNT = "123456789012"


# ---------------------------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------------------------


def _page(handler, items, default_max):
    """Slice `items` by the request's MaxResults/NextToken; return (page, next_token or None)."""
    max_results = handler._get_int_param("MaxResults", default_max) or default_max
    token = handler._get_param("NextToken")
    start = int(token) if token else 0
    end = start + max_results
    return items[start:end], (str(end) if end < len(items) else None)


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
    page, token = _page(self, found, 200)
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
    page, token = _page(self, templates, 200)
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
    if ami_ids:  # EC2 does not paginate a request by id
        return ActionResult({"Images": images})
    page, token = _page(self, images, 1000)
    return ActionResult(_with_token({"Images": page}, token))


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
    page, token = _page(self, snapshots, 1000)
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


def apply_patches():
    LaunchTemplates.describe_launch_template_versions = describe_launch_template_versions
    LaunchTemplates.describe_launch_templates = describe_launch_templates
    AmisResponse.describe_images = describe_images
    ElasticBlockStore.describe_snapshots = describe_snapshots
    ec2_core.TaggedEC2Resource.get_tags = get_tags
    AmiBackend.copy_image = copy_image
    AmiBackend.describe_images = backend_describe_images


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

    def begin(self):
        with self.lock:
            if self.in_flight == 0:
                self.busy_since = time.perf_counter()
            self.in_flight += 1

    def end(self, action, seconds):
        with self.lock:
            self.requests += 1
            self.seconds += seconds
            self.by_action[action] += 1
            self.in_flight = max(0, self.in_flight - 1)
            if self.in_flight == 0 and self.busy_since is not None:
                self.busy += time.perf_counter() - self.busy_since
                self.busy_since = None

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
            }


class App:
    """WSGI app: /_amictl/* control endpoints, everything else to moto (timed)."""

    def __init__(self, port):
        self.moto = DomainDispatcherApplication(create_backend_app)
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
        action = request.args.get("Action") or _form_action(body) or request.headers.get("X-Amz-Target", "?")
        self.stats.begin()
        try:
            chunks = list(self.moto(environ, start_response))
        finally:
            self.stats.end(action, time.perf_counter() - started)
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
    args = parser.parse_args()

    apply_patches()
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
