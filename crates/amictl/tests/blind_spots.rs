//! No in-use blind spots, through the emulator: every way an AMI can still be launched keeps
//! it, and evidence that cannot be read keeps the whole scope.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

/// `retire --keep 0 --min-age 90d --now` as JSON (a dry run).
fn plan(account: &str) -> Value {
    plan_exiting(account, 0)
}

/// The same, exiting `code` (2: its evidence is incomplete).
fn plan_exiting(account: &str, code: i32) -> Value {
    let out = amictl_in(account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--output", "json"])
        .output()
        .unwrap();
    assert_code(&out, code);
    json(&out)
}

/// Image id → (verdict, every reason's detail).
fn verdicts(plan: &Value) -> BTreeMap<String, (String, String)> {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let reasons: Vec<&str> =
                i["reasons"].as_array().unwrap().iter().map(|r| r["detail"].as_str().unwrap()).collect();
            (
                i["image_id"].as_str().unwrap().to_string(),
                (i["verdict"].as_str().unwrap().to_string(), reasons.join("; ")),
            )
        })
        .collect()
}

/// Old images nothing uses: what a keep-nothing plan would deregister.
fn retirable(account: &str) -> Vec<String> {
    deregister_targets(&plan(account))
}

fn template(account: &str, name: &str, image: &str) -> String {
    let out = aws(
        account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": name, "LaunchTemplateData": {"ImageId": image, "InstanceType": "t3.micro"}}),
    );
    out["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap().to_string()
}

fn put_parameter(account: &str, name: &str, value: &str) {
    aws(
        account,
        "ssm",
        "put_parameter",
        json!({"Name": name, "Value": value, "Type": "String", "DataType": "aws:ec2:image", "Overwrite": true}),
    );
}

#[test]
fn every_way_to_launch_an_image_keeps_it() {
    let (account, ids) = demo_account_with(&[R], 80);
    let x = retirable(&account);
    assert!(x.len() >= 9, "the grown demo estate has old unused images: {x:?}");

    // resolve:ssm: parameters that are not channels, plain, by version and by label.
    put_parameter(&account, "/golden/web/latest", &x[0]);
    put_parameter(&account, "/golden/api", &x[1]);
    put_parameter(&account, "/golden/api", &x[2]); // version 2
    aws(
        &account,
        "ssm",
        "label_parameter_version",
        json!({"Name": "/golden/api", "ParameterVersion": 2, "Labels": ["prod"]}),
    );
    put_parameter(&account, "/golden/api", &x[3]); // version 3: nothing names it
    template(&account, "by-parameter", "resolve:ssm:/golden/web/latest");
    template(&account, "by-version", "resolve:ssm:/golden/api:1");
    template(&account, "by-label", "resolve:ssm:/golden/api:prod");

    // A Spot Fleet request, an EC2 Fleet override, a persistent Spot Instance request.
    aws(
        &account,
        "ec2",
        "request_spot_fleet",
        json!({"SpotFleetRequestConfig": {
        "IamFleetRole": "arn:aws:iam::123456789012:role/fleet", "TargetCapacity": 1,
        "LaunchSpecifications": [{"ImageId": x[4], "InstanceType": "t3.micro"}]}}),
    );
    let vendor_template = template(&account, "fleet-base", ids[R]["web-1.6.0"].as_str().unwrap());
    aws(
        &account,
        "ec2",
        "create_fleet",
        json!({
        "Type": "maintain",
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"},
        "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {"LaunchTemplateId": vendor_template, "Version": "$Latest"},
                                    "Overrides": [{"ImageId": x[5], "InstanceType": "t3.small"}]}]}),
    );
    aws(
        &account,
        "ec2",
        "request_spot_instances",
        json!({"Type": "persistent", "InstanceCount": 1,
        "LaunchSpecification": {"ImageId": x[6], "InstanceType": "t3.micro"}}),
    );
    // A cancelled one-time request launches nothing more.
    let req = aws(
        &account,
        "ec2",
        "request_spot_instances",
        json!({"Type": "one-time", "InstanceCount": 1,
        "LaunchSpecification": {"ImageId": x[7], "InstanceType": "t3.micro"}}),
    );
    let sir = req["SpotInstanceRequests"][0]["SpotInstanceRequestId"].as_str().unwrap();
    aws(&account, "ec2", "cancel_spot_instance_requests", json!({"SpotInstanceRequestIds": [sir]}));

    let v = verdicts(&plan(&account));
    let kept = |n: usize, evidence: &str| {
        let (verdict, why) = &v[&x[n]];
        assert_eq!(verdict, "keep", "{}: {why}", x[n]);
        assert!(why.contains(evidence), "{}: {evidence:?} not in {why}", x[n]);
    };
    kept(0, "via resolve:ssm:/golden/web/latest (version 1)");
    kept(1, "via resolve:ssm:/golden/api:1 (version 1)");
    kept(2, "via resolve:ssm:/golden/api:prod (version 2)");
    kept(4, "spot fleet sfr-");
    kept(5, "ec2 fleet fleet-");
    kept(6, "spot request sir-");
    // Version 3 is named by nothing but the parameter's current value, which no template reads.
    assert_eq!(v[&x[3]].0, "retire", "{:?}", v[&x[3]]);
    // A cancelled request is no evidence (the instance it launched still is, as an instance).
    assert!(!v[&x[7]].1.contains("spot request"), "a cancelled request: {:?}", v[&x[7]]);
}

#[test]
fn a_mixed_instances_override_template_is_use_with_its_own_evidence() {
    let (account, _) = demo_account_with(&[R], 80);
    let x = retirable(&account);
    let base = template(&account, "mip-base", &x[0]);
    let arm = template(&account, "mip-arm", &x[1]);
    aws(
        &account,
        "autoscaling",
        "create_auto_scaling_group",
        json!({
        "AutoScalingGroupName": "mixed", "MinSize": 0, "MaxSize": 2, "DesiredCapacity": 0,
        "AvailabilityZones": ["us-east-1a"],
        "MixedInstancesPolicy": {"LaunchTemplate": {
            "LaunchTemplateSpecification": {"LaunchTemplateId": base, "Version": "$Latest"},
            "Overrides": [{"InstanceType": "t4g.micro", "LaunchTemplateSpecification": {"LaunchTemplateId": arm, "Version": "$Latest"}}]}}}),
    );
    let v = verdicts(&plan(&account));
    assert!(v[&x[1]].1.contains(&format!("asg mixed via mixed instances override {arm}:$Latest")), "{:?}", v[&x[1]]);
}

#[test]
fn an_unreadable_parameter_keeps_the_scope_and_apply_refuses() {
    let (account, _) = demo_account_with(&[R], 80);
    template(&account, "dangling", "resolve:ssm:/nobody/has/this");
    let v = verdicts(&plan_exiting(&account, 2));
    assert!(v.values().all(|(verdict, _)| verdict == "keep"), "nothing retired in an incomplete scope");
    assert!(v.values().all(|(_, why)| why.contains("/nobody/has/this")));

    let audit = amictl_in(&account).args(["audit", "--output", "json"]).output().unwrap();
    assert_code(&audit, 2);
    let doc = json(&audit);
    assert!(doc["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["error"].as_str().unwrap().contains("/nobody/has/this")));

    let images =
        || aws(&account, "ec2", "describe_images", json!({"Owners": ["self"]}))["Images"].as_array().unwrap().len();
    let before = images();
    let dir = tempfile::tempdir().unwrap();
    let out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--apply", "--yes", "--journal"])
        .arg(dir.path().join("j.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("incomplete") && stderr.contains("/nobody/has/this"), "{stderr}");
    assert_eq!(images(), before, "nothing deleted");
}

#[test]
fn a_corrupt_retirement_tag_keeps_the_image_and_is_a_finding() {
    let (account, _) = demo_account_with(&[R], 80);
    let x = retirable(&account);
    aws(
        &account,
        "ec2",
        "create_tags",
        json!({"Resources": [&x[0]], "Tags": [
        {"Key": "amictl:retire-stage", "Value": "disabled"}, {"Key": "amictl:retire-after", "Value": "next tuesday"}]}),
    );
    let v = verdicts(&plan(&account));
    assert_eq!(v[&x[0]].0, "keep");
    assert!(v[&x[0]].1.contains("next tuesday"), "{:?}", v[&x[0]]);
    let audit = json(&amictl_in(&account).args(["audit", "--output", "json"]).output().unwrap());
    assert!(audit["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "ami-malformed-retire-tag" && f["resource"] == x[0].as_str()));
}
