"""The demo estate: a small but complete EC2 image estate, seeded through the AWS API (boto3).

Every kind of AMI reference amictl must find is here, in each region, with stable names so tests can look
them up by name:

* families `web`, `api`, `worker` (tag `Application`) and `base` (name `base-al2023-*`), versions spread
  over ~400 days, built from the base (tag `SourceAMI`), some carrying a passed security scan
  (`amictl:scan=passed`);
* instances: running (web newest), stopped (api v2), terminated (worker v1: history, not use), and
  one running a public vendor image owned by another account;
* launch template `web-lt` with 5 versions (default 3, latest 5), used by ASG `web-prod` through `$Latest`
  at desired capacity 0;
* launch template `api-lt` used by ASG `api-prod` through `$Default`; `worker-lt` used by ASG `worker-prod`
  through the numbered version 2; `mixed-lt` used by ASG `mixed-prod` through a mixed instances policy;
* standalone launch template `golden-lt` with 21 versions (more than stock moto's 15), no ASG;
* launch configurations `worker-lc-v3` (used by ASG `worker-lc-prod`) and `worker-lc-old` (unattached);
* ASG `ghost-prod` whose launch template was deleted, and launch configuration `gone-lc` whose AMI was
  deregistered (attached to ASG `gone-prod`);
* AMIs shared with account 210987654321 and 999988887777, one public AMI, one tagged `DoNotDelete`;
* orphaned snapshots from CreateImage and CopyImage (their AMIs deregistered), and a manual volume snapshot.

With `amis=N` the families grow with more versions until the estate holds about N AMIs in all.
"""

from __future__ import annotations

import random

import boto3
from botocore.config import Config

SHARE_ACCOUNTS = ["210987654321", "999988887777"]
VENDOR_AMI = "ami-0a1b2c3d4e5f60718"  # emulator/vendor_amis.json: public, owned by another account
FAMILIES = ["web", "api", "worker"]
VERSIONS_PER_FAMILY = 6


def _session(endpoint, account):
    base = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    if account == "123456789012":
        return base
    sts = boto3.client("sts", endpoint_url=endpoint, **base)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/amictl-seed", RoleSessionName="seed")["Credentials"]
    return dict(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def seed(endpoint, account, regions, amis, seed, backdate):
    """Seed the demo estate into `account`; return {"summary": str, "regions": {region: {name: id}}}."""
    rng = random.Random(seed)
    creds = _session(endpoint, account)
    out = {}
    total = 0
    per_region_target = max(0, amis // max(1, len(regions)))
    for region in regions:
        ids, count = _seed_region(endpoint, account, region, creds, rng, per_region_target, backdate)
        out[region] = ids
        total += count
    return {"summary": f"{total} AMIs in {len(regions)} region(s) of account {account}", "regions": out}


def _seed_region(endpoint, account, region, creds, rng, target, backdate):
    cfg = Config(retries={"max_attempts": 1})
    kw = {k: v for k, v in creds.items() if k != "region_name"}
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region, config=cfg, **kw)
    asg = boto3.client("autoscaling", endpoint_url=endpoint, region_name=region, config=cfg, **kw)
    ids = {}
    count = 0

    def tag(resource, tags):
        ec2.create_tags(Resources=[resource], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def make_image(name, days_ago, tags, builder):
        nonlocal count
        image_id = ec2.create_image(InstanceId=builder, Name=name)["ImageId"]
        if tags:
            tag(image_id, tags)
        backdate({"account": account, "region": region, "image_id": image_id, "days_ago": days_ago})
        count += 1
        return image_id

    # The base image is registered (no instance exists yet); everything else is baked from a builder.
    base_id = ec2.register_image(Name="base-al2023-2025.10.0", Description="Amazon Linux base")["ImageId"]
    backdate({"account": account, "region": region, "image_id": base_id, "days_ago": 420})
    count += 1
    ids["base-al2023-2025.10.0"] = base_id
    builder = ec2.run_instances(ImageId=base_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0][
        "InstanceId"
    ]
    tag(builder, {"Name": "builder"})
    base_new = make_image("base-al2023-2026.09.0", 80, {"amictl:scan": "passed", "SourceAMI": base_id}, builder)
    ids["base-al2023-2026.09.0"] = base_new

    # Families: versions 1..6, oldest ~400 days, newest ~5 days.
    for family in FAMILIES:
        for v in range(1, VERSIONS_PER_FAMILY + 1):
            days = 400 - (v - 1) * 79
            tags = {"Application": family, "Version": f"1.{v}.0", "SourceAMI": base_id if v < 4 else base_new}
            if v % 2 == 0 or v == VERSIONS_PER_FAMILY:
                tags["amictl:scan"] = "passed"
            name = f"{family}-1.{v}.0"
            ids[name] = make_image(name, days, tags, builder)

    # Instances: running, stopped, terminated.
    def launch(image, name):
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0][
            "InstanceId"
        ]
        tag(iid, {"Name": name})
        ids[name] = iid
        return iid

    launch(ids["web-1.6.0"], "web-running")
    launch(VENDOR_AMI, "vendor-running")
    ec2.stop_instances(InstanceIds=[launch(ids["api-1.2.0"], "api-stopped")])
    ec2.terminate_instances(InstanceIds=[launch(ids["worker-1.1.0"], "worker-terminated")])

    # Launch templates.
    def template(name, images, default=None):
        first = ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData={"ImageId": images[0], "InstanceType": "t3.micro"}
        )["LaunchTemplate"]
        lt_id = first["LaunchTemplateId"]
        for image in images[1:]:
            ec2.create_launch_template_version(
                LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"}
            )
        if default:
            ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(default))
        ids[name] = lt_id
        return lt_id

    azs = [f"{region}a"]
    web_lt = template("web-lt", [ids["base-al2023-2025.10.0"], ids["web-1.2.0"], ids["web-1.3.0"],
                                 ids["web-1.4.0"], ids["web-1.5.0"]], default=3)
    asg.create_auto_scaling_group(AutoScalingGroupName="web-prod", MinSize=0, MaxSize=4, DesiredCapacity=0,
                                  AvailabilityZones=azs,
                                  LaunchTemplate={"LaunchTemplateId": web_lt, "Version": "$Latest"})
    api_lt = template("api-lt", [ids["api-1.3.0"], ids["api-1.4.0"], ids["api-1.5.0"]], default=2)
    asg.create_auto_scaling_group(AutoScalingGroupName="api-prod", MinSize=1, MaxSize=2, DesiredCapacity=1,
                                  AvailabilityZones=azs,
                                  LaunchTemplate={"LaunchTemplateId": api_lt, "Version": "$Default"})
    worker_lt = template("worker-lt", [ids["worker-1.3.0"], ids["worker-1.4.0"], ids["worker-1.6.0"]])
    asg.create_auto_scaling_group(AutoScalingGroupName="worker-prod", MinSize=0, MaxSize=2, DesiredCapacity=0,
                                  AvailabilityZones=azs,
                                  LaunchTemplate={"LaunchTemplateId": worker_lt, "Version": "2"})
    mixed_lt = template("mixed-lt", [ids["api-1.6.0"]])
    asg.create_auto_scaling_group(
        AutoScalingGroupName="mixed-prod", MinSize=0, MaxSize=2, DesiredCapacity=0, AvailabilityZones=azs,
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": mixed_lt, "Version": "1"},
                "Overrides": [{"InstanceType": "t3.micro"}, {"InstanceType": "t3.small"}],
            }
        },
    )

    # A standalone template with more versions than stock moto lists: each version its own golden image.
    golden = [make_image(f"golden-1.0.{i}", 390 - i * 5, {"Application": "golden", "Version": f"1.0.{i}"},
                         builder) for i in range(21)]
    for i, g in enumerate(golden):
        ids[f"golden-1.0.{i}"] = g
    template("golden-lt", golden)

    # Launch configurations: attached and unattached.
    asg.create_launch_configuration(LaunchConfigurationName="worker-lc-v3", ImageId=ids["worker-1.5.0"],
                                    InstanceType="t3.micro")
    asg.create_auto_scaling_group(AutoScalingGroupName="worker-lc-prod", MinSize=0, MaxSize=1, DesiredCapacity=0,
                                  AvailabilityZones=azs, LaunchConfigurationName="worker-lc-v3")
    asg.create_launch_configuration(LaunchConfigurationName="worker-lc-old", ImageId=ids["worker-1.2.0"],
                                    InstanceType="t3.micro")

    # An ASG whose template is gone, and one whose launch configuration names a deregistered AMI.
    ghost_lt = template("ghost-lt", [ids["web-1.1.0"]])
    asg.create_auto_scaling_group(AutoScalingGroupName="ghost-prod", MinSize=0, MaxSize=1, DesiredCapacity=0,
                                  AvailabilityZones=azs,
                                  LaunchTemplate={"LaunchTemplateId": ghost_lt, "Version": "$Latest"})
    ec2.delete_launch_template(LaunchTemplateId=ghost_lt)
    gone = make_image("gone-1.0.0", 300, {"Application": "gone"}, builder)
    ids["gone-1.0.0"] = gone
    asg.create_launch_configuration(LaunchConfigurationName="gone-lc", ImageId=gone, InstanceType="t3.micro")
    asg.create_auto_scaling_group(AutoScalingGroupName="gone-prod", MinSize=0, MaxSize=1, DesiredCapacity=0,
                                  AvailabilityZones=azs, LaunchConfigurationName="gone-lc")
    ec2.deregister_image(ImageId=gone)  # its CreateImage snapshot stays behind: an orphan
    count -= 1

    # Sharing, public, keep tag.
    ec2.modify_image_attribute(ImageId=ids["api-1.1.0"], LaunchPermission={"Add": [{"UserId": SHARE_ACCOUNTS[0]}]})
    ec2.modify_image_attribute(ImageId=ids["worker-1.2.0"],
                               LaunchPermission={"Add": [{"UserId": SHARE_ACCOUNTS[1]}]})
    ec2.modify_image_attribute(ImageId=ids["web-1.1.0"], LaunchPermission={"Add": [{"Group": "all"}]})
    tag(ids["api-1.1.0"], {"amictl:shared": "partners"})
    tag(ids["worker-1.1.0"], {"DoNotDelete": "true"})

    # Orphans: a copy whose copy was deregistered, and a manual snapshot that is nobody's AMI snapshot.
    copy = ec2.copy_image(SourceImageId=ids["web-1.1.0"], SourceRegion=region, Name="web-1.1.0-copy")["ImageId"]
    ec2.deregister_image(ImageId=copy)
    vol = ec2.create_volume(AvailabilityZone=azs[0], Size=8)["VolumeId"]
    ids["manual-snapshot"] = ec2.create_snapshot(VolumeId=vol, Description="manual backup before upgrade")[
        "SnapshotId"
    ]

    ec2.terminate_instances(InstanceIds=[builder])

    # Bulk: more versions per family until the region holds `target` AMIs.
    families = FAMILIES + ["batch", "etl", "cache", "search"]
    n = 0
    while count < target:
        family = families[n % len(families)]
        n += 1
        version = f"2.{n // len(families)}.{n % 97}"
        make_image(f"{family}-{version}-{n}", rng.randint(1, 420),
                   {"Application": family, "Version": version, "SourceAMI": base_new}, ids["web-running"])

    return ids, count
