//! `amictl deploy`, `rollback` and `status` against the emulator's instance refresh: the new
//! numbered template version keeps every other field, the group ends pinned, a failing health
//! gate brings the old version back, the healthy count (from the emulator's record) never
//! drops below --min-healthy, the previous image is protected as last-known-good.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

/// The verdict tags of an image fit to deploy.
const GOOD: &[(&str, &str)] = &[("amictl:validation", "passed"), ("amictl:scan", "passed")];

struct Estate {
    account: String,
    old: String,
    new: String,
    template: String,
}

/// A group `web` of 10 on `$Default` of a template with user data and an instance type.
fn estate() -> Estate {
    let account = fresh_account();
    let old = image_from_instance(&account, "web-1.0.0", GOOD);
    let new = image_from_instance(&account, "web-1.1.0", GOOD);
    let t = aws(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "web", "LaunchTemplateData": {"ImageId": old, "InstanceType": "t3.small",
               "UserData": "ZWNobyBoZWxsbw==", "MetadataOptions": {"HttpTokens": "required"}}}),
    );
    let template = t["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap().to_string();
    aws(
        &account,
        "autoscaling",
        "create_auto_scaling_group",
        json!({"AutoScalingGroupName": "web", "LaunchTemplate": {"LaunchTemplateId": template},
               "MinSize": 10, "MaxSize": 12, "DesiredCapacity": 10, "AvailabilityZones": ["us-east-1a"]}),
    );
    Estate { account, old, new, template }
}

fn journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db").display().to_string();
    (dir, path)
}

/// Image id → instance count of the group's instances.
fn images_of_group(account: &str) -> std::collections::BTreeMap<String, usize> {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web"]}));
    let ids: Vec<Value> =
        g["AutoScalingGroups"][0]["Instances"].as_array().unwrap().iter().map(|i| i["InstanceId"].clone()).collect();
    let d = aws(account, "ec2", "describe_instances", json!({"InstanceIds": ids}));
    let mut out = std::collections::BTreeMap::new();
    for r in d["Reservations"].as_array().unwrap() {
        for i in r["Instances"].as_array().unwrap() {
            *out.entry(i["ImageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    out
}

fn group_version(account: &str) -> Value {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web"]}));
    g["AutoScalingGroups"][0]["LaunchTemplate"]["Version"].clone()
}

/// The lowest healthy count the emulator saw during the group's replacements.
fn lowest_healthy(account: &str) -> u64 {
    let record = emulator()
        .control
        .post("/_amictl/refresh/record", &json!({"account": account, "region": R, "group": "web"}))
        .unwrap();
    let steps = record["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "the emulator recorded no replacement");
    steps.iter().map(|s| s["healthy"].as_u64().unwrap()).min().unwrap()
}

fn deploy(e: &Estate, j: &str, extra: &[&str]) -> std::process::Output {
    amictl_in(&e.account)
        .args([
            "deploy",
            "--asg",
            "web",
            "--image",
            &e.new,
            "--yes",
            "--journal",
            j,
            "-o",
            "json",
            "--poll-interval",
            "200ms",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn rolling_deploy_pins_a_numbered_version_that_keeps_every_other_field_and_rollback_restores() {
    let e = estate();
    let (_dir, j) = journal();
    let out = deploy(&e, &j, &["--checkpoints", "50", "--checkpoint-delay", "1s", "--min-healthy", "80"]);
    assert_code(&out, 0);
    let d = json(&out);
    assert_eq!(d["outcome"], "deployed");
    assert_eq!(d["version"], 2);
    assert_eq!(images_of_group(&e.account), [(e.new.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "2", "pinned to a number, not $Default");
    assert!(lowest_healthy(&e.account) >= 8, "never below 80% of 10");

    // Nothing but the image changed in the new version.
    let v = aws(
        &e.account,
        "ec2",
        "describe_launch_template_versions",
        json!({"LaunchTemplateId": e.template, "Versions": ["1", "2"]}),
    );
    let data: Vec<&Value> =
        v["LaunchTemplateVersions"].as_array().unwrap().iter().map(|v| &v["LaunchTemplateData"]).collect();
    let mut first = data.iter().find(|d| d["ImageId"] == e.old.as_str()).unwrap().as_object().unwrap().clone();
    let mut second = data.iter().find(|d| d["ImageId"] == e.new.as_str()).unwrap().as_object().unwrap().clone();
    first.remove("ImageId");
    second.remove("ImageId");
    assert_eq!(first, second);

    // The previous image is the group's last-known-good, which retirement keeps.
    let tags = aws(&e.account, "ec2", "describe_images", json!({"ImageIds": [e.old]}));
    assert!(tags["Images"][0]["Tags"].to_string().contains("amictl:last-known-good"), "{tags}");
    let plan = amictl_in(&e.account).args(["retire", "--keep", "0", "--min-age", "0d", "-o", "json"]).output().unwrap();
    let plan = json(&plan);
    let old = plan["images"].as_array().unwrap().iter().find(|i| i["image_id"] == e.old.as_str()).unwrap();
    assert_eq!(old["verdict"], "keep");
    assert!(old["reasons"].to_string().contains("last-known-good"), "{old}");

    let status =
        amictl_in(&e.account).args(["status", "--asg", "web", "--journal", &j, "-o", "json"]).output().unwrap();
    let s = &json(&status)["groups"][0];
    assert_eq!((s["pinned"].as_bool(), s["version"].as_i64()), (Some(true), Some(2)), "{s}");
    assert_eq!(s["last_known_good"]["image_id"], e.old.as_str());

    let back = amictl_in(&e.account)
        .args(["rollback", "--asg", "web", "--yes", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&back, 0);
    assert_eq!(json(&back)["version"], 1);
    assert_eq!(images_of_group(&e.account), [(e.old.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "1");
}

#[test]
fn a_failing_health_gate_rolls_back_and_keeps_the_old_instances() {
    for strategy in ["rolling", "batched"] {
        let e = estate();
        emulator()
            .control
            .post("/_amictl/unhealthy", &json!({"account": e.account, "region": R, "image_ids": [e.new]}))
            .unwrap();
        let (_dir, j) = journal();
        let out = deploy(&e, &j, &["--strategy", strategy, "--min-healthy", "90"]);
        assert_code(&out, 1);
        let d = json(&out);
        assert_eq!(d["outcome"], "rolled-back", "{strategy}: {d}");
        assert_eq!(images_of_group(&e.account), [(e.old.clone(), 10)].into(), "{strategy}");
        assert_eq!(group_version(&e.account), "1", "{strategy}: back on the previous version");
        assert!(lowest_healthy(&e.account) >= 8, "{strategy}: one new instance out at a time (plus the sick one)");
        let h = amictl().args(["history", "--journal", &j, "-o", "json"]).output().unwrap();
        assert_eq!(json(&h)["runs"][0]["status"], "rolled-back", "{strategy}");
    }
}

#[test]
fn batched_deploy_replaces_a_batch_at_a_time_above_the_floor() {
    let e = estate();
    let (_dir, j) = journal();
    let out = deploy(&e, &j, &["--strategy", "batched", "--batch-size", "50%", "--min-healthy", "70"]);
    assert_code(&out, 0);
    assert_eq!(images_of_group(&e.account), [(e.new.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "2");
    assert_eq!(lowest_healthy(&e.account), 7, "three at a time: 70% of 10 stay");
}

#[test]
fn bad_input_is_one_line_exit_2_and_changes_nothing() {
    let e = estate();
    let (_dir, j) = journal();
    let unvalidated = image_from_instance(&e.account, "web-1.2.0", &[("amictl:scan", "passed")]);
    let revoked = image_from_instance(
        &e.account,
        "web-1.3.0",
        &[("amictl:validation", "passed"), ("amictl:scan", "passed"), ("amictl:revoked", "2026-11-01T00:00:00Z")],
    );
    let elsewhere = {
        let run = emulator()
            .control
            .aws(
                &e.account,
                "eu-west-1",
                "ec2",
                "run_instances",
                json!({"ImageId": "ami-00000001", "MinCount": 1, "MaxCount": 1}),
            )
            .unwrap();
        let i = run["Instances"][0]["InstanceId"].as_str().unwrap().to_string();
        let made = emulator()
            .control
            .aws(&e.account, "eu-west-1", "ec2", "create_image", json!({"InstanceId": i, "Name": "web-eu"}))
            .unwrap();
        made["ImageId"].as_str().unwrap().to_string()
    };
    aws(
        &e.account,
        "autoscaling",
        "create_launch_configuration",
        json!({"LaunchConfigurationName": "legacy-lc", "ImageId": e.old, "InstanceType": "t3.micro"}),
    );
    aws(
        &e.account,
        "autoscaling",
        "create_auto_scaling_group",
        json!({"AutoScalingGroupName": "legacy", "LaunchConfigurationName": "legacy-lc", "MinSize": 1, "MaxSize": 1, "DesiredCapacity": 1, "AvailabilityZones": ["us-east-1a"]}),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--asg".into(), "nosuch".into(), "--image".into(), e.new.clone()], "Auto Scaling group nosuch not found"),
        (vec!["--asg".into(), "legacy".into(), "--image".into(), e.new.clone()], "uses launch configuration legacy-lc"),
        (vec!["--asg".into(), "web".into(), "--image".into(), elsewhere.clone()], "another region"),
        (vec!["--asg".into(), "web".into(), "--image".into(), unvalidated], "has not been validated"),
        (vec!["--asg".into(), "web".into(), "--image".into(), revoked.clone()], "is revoked"),
        (
            vec!["--asg".into(), "web".into(), "--image".into(), e.new.clone(), "--min-healthy".into(), "120".into()],
            "--min-healthy",
        ),
        (vec!["--asg".into(), "web".into(), "--channel".into(), "web/nosuch".into()], "channel nosuch of family web"),
    ];
    for (args, needle) in cases {
        let out = amictl_in(&e.account).args(["deploy", "--yes", "--journal", &j]).args(&args).output().unwrap();
        assert_code(&out, 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // --force does not deploy a revoked image either.
    let out = amictl_in(&e.account)
        .args(["deploy", "--yes", "--force", "--journal", &j, "--asg", "web", "--image", &revoked])
        .output()
        .unwrap();
    assert_code(&out, 2);
    let v = aws(&e.account, "ec2", "describe_launch_template_versions", json!({"LaunchTemplateId": e.template}));
    assert_eq!(v["LaunchTemplateVersions"].as_array().unwrap().len(), 1, "no version was made");
    assert_eq!(images_of_group(&e.account), [(e.old.clone(), 10)].into());
    let nothing = amictl_in(&e.account).args(["rollback", "--asg", "web", "--yes", "--journal", &j]).output().unwrap();
    assert_code(&nothing, 2);
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("nothing to roll back to"));
}

/// `amictl deploy` (rolling) killed while the answer of a DescribeInstanceRefreshes is held
/// back: the refresh has started and taken a step.
fn killed_mid_refresh(e: &Estate, j: &str, dir: &std::path::Path) {
    let args = ["deploy", "--asg", "web", "--image", &e.new, "--yes", "--journal", j, "--poll-interval", "200ms"];
    let mut child = spawn_held(&e.account, "DescribeInstanceRefreshes", dir, &args);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&e.account, &[], 0.0).unwrap();
}

fn refreshes(account: &str) -> usize {
    aws(account, "autoscaling", "describe_instance_refreshes", json!({"AutoScalingGroupName": "web"}))
        ["InstanceRefreshes"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn an_interrupted_deploy_resumes_without_a_second_version_or_refresh() {
    let e = estate();
    let (dir, j) = journal();
    killed_mid_refresh(&e, &j, dir.path());
    let out = amictl_in(&e.account)
        .args(["deploy", "--resume", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(json(&out)["outcome"], "deployed");
    let v = aws(&e.account, "ec2", "describe_launch_template_versions", json!({"LaunchTemplateId": e.template}));
    assert_eq!(v["LaunchTemplateVersions"].as_array().unwrap().len(), 2, "one new version, not two");
    assert_eq!(refreshes(&e.account), 1, "the refresh it started, followed; no second one");
    assert_eq!(images_of_group(&e.account), [(e.new.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "2");
}

#[test]
fn an_interrupted_deploy_rolls_back_through_the_refresh_it_started() {
    let e = estate();
    let (dir, j) = journal();
    killed_mid_refresh(&e, &j, dir.path());
    let out = amictl_in(&e.account)
        .args(["rollback", "--asg", "web", "--yes", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(refreshes(&e.account), 1, "AWS's own rollback of the refresh, not a second refresh");
    let r = aws(&e.account, "autoscaling", "describe_instance_refreshes", json!({"AutoScalingGroupName": "web"}));
    assert_eq!(r["InstanceRefreshes"][0]["Status"], "RollbackSuccessful");
    assert_eq!(images_of_group(&e.account), [(e.old.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "1");
}

struct Balanced {
    e: Estate,
    blue_tg: String,
    listener: String,
}

/// The estate's group behind a load balancer: a VPC, a target group, a listener forwarding to
/// it; `web` (4 instances) in that target group.
fn balanced() -> Balanced {
    let account = fresh_account();
    let old = image_from_instance(&account, "web-1.0.0", GOOD);
    let new = image_from_instance(&account, "web-1.1.0", GOOD);
    let (vpc, a, lb) = load_balancer(&account);
    let (blue_tg, listener) =
        forwarded_target_group(&account, &vpc, &lb, "web", 80, json!({"HealthCheckPath": "/health"}));
    let t = aws(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "web", "LaunchTemplateData": {"ImageId": old, "InstanceType": "t3.small"}}),
    );
    let template = t["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap().to_string();
    aws(
        &account,
        "autoscaling",
        "create_auto_scaling_group",
        json!({"AutoScalingGroupName": "web",
        "LaunchTemplate": {"LaunchTemplateId": template, "Version": "1"}, "MinSize": 4, "MaxSize": 4, "DesiredCapacity": 4,
        "VPCZoneIdentifier": a, "TargetGroupARNs": [blue_tg]}),
    );
    Balanced { e: Estate { account, old, new, template }, blue_tg, listener }
}

fn forwards(b: &Balanced) -> Vec<(String, i64)> {
    let l = aws(&b.e.account, "elbv2", "describe_listeners", json!({"ListenerArns": [b.listener]}));
    let action = &l["Listeners"][0]["DefaultActions"][0];
    match action["ForwardConfig"]["TargetGroups"].as_array() {
        Some(groups) => groups
            .iter()
            .map(|g| (g["TargetGroupArn"].as_str().unwrap().to_string(), g["Weight"].as_i64().unwrap_or(1)))
            .collect(),
        None => vec![(action["TargetGroupArn"].as_str().unwrap().to_string(), 1)],
    }
}

fn group_images(account: &str, name: &str) -> std::collections::BTreeMap<String, usize> {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": [name]}));
    let Some(group) = g["AutoScalingGroups"].as_array().unwrap().first() else { return Default::default() };
    let ids: Vec<Value> = group["Instances"].as_array().unwrap().iter().map(|i| i["InstanceId"].clone()).collect();
    if ids.is_empty() {
        return Default::default();
    }
    let d = aws(account, "ec2", "describe_instances", json!({"InstanceIds": ids}));
    let mut out = std::collections::BTreeMap::new();
    for r in d["Reservations"].as_array().unwrap() {
        for i in r["Instances"].as_array().unwrap() {
            if i["State"]["Name"] == "running" {
                *out.entry(i["ImageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

#[test]
fn blue_green_and_canary_move_the_traffic_to_a_healthy_green_group_and_scale_blue_in() {
    for (strategy, steps) in [("blue-green", vec!["shift-100"]), ("canary", vec!["shift-5", "shift-25", "shift-100"])] {
        let b = balanced();
        let (_dir, j) = journal();
        let out = amictl_in(&b.e.account)
            .args(["deploy", "--asg", "web", "--image", &b.e.new, "--strategy", strategy, "--yes", "--journal", &j])
            .args(["-o", "json", "--poll-interval", "200ms"])
            .output()
            .unwrap();
        assert_code(&out, 0);
        let d = json(&out);
        assert_eq!(d["green_group"], "web-v2", "{strategy}: {d}");
        assert_eq!(group_images(&b.e.account, "web-v2"), [(b.e.new.clone(), 4)].into(), "{strategy}");
        let now = forwards(&b);
        assert_eq!(now.len(), 1, "{strategy}: {now:?}");
        assert_ne!(now[0].0, b.blue_tg, "{strategy}: the listener forwards to green only");
        let blue =
            aws(&b.e.account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web"]}));
        assert_eq!(blue["AutoScalingGroups"][0]["DesiredCapacity"], 0, "{strategy}: blue scaled in");
        let run = d["run_id"].as_i64().unwrap().to_string();
        let h = amictl().args(["history", "--run", &run, "--journal", &j, "-o", "json"]).output().unwrap();
        let done: Vec<String> = json(&h)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["action_id"].as_str().unwrap().to_string())
            .collect();
        for s in &steps {
            assert!(done.contains(&s.to_string()), "{strategy}: {s} missing from {done:?}");
        }
        // Rolling back the green group puts the traffic back on blue, at full size.
        let back = amictl_in(&b.e.account)
            .args(["rollback", "--asg", "web-v2", "--yes", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
            .output()
            .unwrap();
        assert_code(&back, 0);
        assert_eq!(forwards(&b), vec![(b.blue_tg.clone(), 1)], "{strategy}");
        assert_eq!(group_images(&b.e.account, "web"), [(b.e.old.clone(), 4)].into(), "{strategy}");
    }
}

#[test]
fn green_that_never_becomes_healthy_is_torn_down_and_blue_keeps_the_traffic() {
    let b = balanced();
    emulator()
        .control
        .post("/_amictl/unhealthy", &json!({"account": b.e.account, "region": R, "image_ids": [b.e.new]}))
        .unwrap();
    let (_dir, j) = journal();
    let out = amictl_in(&b.e.account)
        .args(["deploy", "--asg", "web", "--image", &b.e.new, "--strategy", "blue-green", "--yes", "--journal", &j])
        .args(["-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert_eq!(json(&out)["outcome"], "rolled-back");
    let green =
        aws(&b.e.account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web-v2"]}));
    assert!(green["AutoScalingGroups"].as_array().unwrap().is_empty(), "green deleted: {green}");
    assert_eq!(forwards(&b), vec![(b.blue_tg.clone(), 1)], "the listener never left blue");
    assert_eq!(group_images(&b.e.account, "web"), [(b.e.old.clone(), 4)].into(), "blue untouched");
}

#[test]
fn a_firing_alarm_stops_a_canary_at_its_first_step_and_an_unknown_alarm_is_refused() {
    let b = balanced();
    let alarm = json!({"AlarmName": "web-5xx", "MetricName": "HTTPCode_Target_5XX_Count", "Namespace": "AWS/ApplicationELB",
        "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 5.0, "ComparisonOperator": "GreaterThanThreshold"});
    aws(&b.e.account, "cloudwatch", "put_metric_alarm", alarm);
    aws(
        &b.e.account,
        "cloudwatch",
        "set_alarm_state",
        json!({"AlarmName": "web-5xx", "StateValue": "ALARM", "StateReason": "test"}),
    );
    let (_dir, j) = journal();
    let deploy = |alarm: &str| {
        amictl_in(&b.e.account)
            .args(["deploy", "--asg", "web", "--image", &b.e.new, "--strategy", "canary", "--alarm", alarm, "--yes"])
            .args(["--journal", &j, "-o", "json", "--poll-interval", "200ms"])
            .output()
            .unwrap()
    };
    let unknown = deploy("nosuch");
    assert_code(&unknown, 2);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("CloudWatch alarm nosuch"));
    let out = deploy("web-5xx");
    assert_code(&out, 1);
    let d = json(&out);
    assert!(d["reason"].as_str().unwrap().contains("alarm web-5xx"), "{d}");
    assert_eq!(forwards(&b), vec![(b.blue_tg.clone(), 1)], "the traffic went back to blue");
    assert_eq!(group_images(&b.e.account, "web"), [(b.e.old.clone(), 4)].into());
    let green =
        aws(&b.e.account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web-v2"]}));
    assert!(green["AutoScalingGroups"].as_array().unwrap().is_empty(), "green torn down");
}

#[test]
fn batched_waits_for_health_in_the_groups_target_groups() {
    let b = balanced();
    emulator()
        .control
        .post("/_amictl/unhealthy", &json!({"account": b.e.account, "region": R, "image_ids": [b.e.new]}))
        .unwrap();
    let (_dir, j) = journal();
    let out = amictl_in(&b.e.account)
        .args(["deploy", "--asg", "web", "--image", &b.e.new, "--strategy", "batched", "--min-healthy", "75", "--yes"])
        .args(["--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert_eq!(group_images(&b.e.account, "web"), [(b.e.old.clone(), 4)].into(), "rolled back");
    let health = aws(&b.e.account, "elbv2", "describe_target_health", json!({"TargetGroupArn": b.blue_tg}));
    let states: Vec<&str> = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["TargetHealth"]["State"].as_str().unwrap())
        .collect();
    assert!(states.iter().filter(|s| **s == "healthy").count() >= 4, "{states:?}");
}
