//! `amictl deploy`, `rollback` and `status` against the emulator's instance refresh: the new
//! numbered template version keeps every other field, the group ends pinned, a failing health
//! gate brings the old version back, the healthy count (from the emulator's record) never
//! drops below --min-healthy, the previous image is protected as last-known-good.

mod common;

use common::sites::*;
use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

/// A group `web` of 10 (max 12) on `$Default` of a template with user data and an instance
/// type.
fn fleet() -> Site {
    site(10, 12, Front::default())
}

/// Image id → instance count of the group's instances.
fn images_of_group(account: &str) -> std::collections::BTreeMap<String, usize> {
    images_of(account, "web")
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

fn deploy(e: &Site, j: &str, extra: &[&str]) -> std::process::Output {
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
    let e = fleet();
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
        let e = fleet();
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

/// The fewest of the group's instances that served (in service, healthy, and healthy in every
/// target group) at any change the emulator recorded, and the desired capacity then.
fn lowest_serving(account: &str, group: &str) -> u64 {
    let record = emulator()
        .control
        .post("/_amictl/refresh/record", &json!({"account": account, "region": R, "group": group}))
        .unwrap();
    let steps = record["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "the emulator recorded no change of {group}");
    steps.iter().map(|s| s["serving"].as_u64().unwrap()).min().unwrap()
}

#[test]
fn batched_deploy_grows_by_a_batch_and_never_goes_below_desired() {
    let e = fleet();
    let (_dir, j) = journal();
    let out = deploy(&e, &j, &["--strategy", "batched", "--batch-size", "50%", "--min-healthy", "70"]);
    assert_code(&out, 0);
    assert_eq!(images_of_group(&e.account), [(e.new.clone(), 10)].into());
    assert_eq!(group_version(&e.account), "2");
    // Max size 12: batches of two (the room above desired), each serving before two old ones go.
    assert_eq!(lowest_serving(&e.account, "web"), 10, "never below the desired capacity");
    let g = aws(&e.account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": ["web"]}));
    assert_eq!(g["AutoScalingGroups"][0]["DesiredCapacity"], 10, "back at its size");
}

#[test]
fn bad_input_is_one_line_exit_2_and_changes_nothing() {
    let e = fleet();
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

/// `amictl deploy` (rolling) killed while the answer of its StartInstanceRefresh is held back:
/// the refresh has started, the journal does not know it yet.
fn killed_mid_refresh(e: &Site, j: &str, dir: &std::path::Path) {
    let args = ["deploy", "--asg", "web", "--image", &e.new, "--yes", "--journal", j, "--poll-interval", "200ms"];
    let mut child = spawn_held(&e.account, "StartInstanceRefresh", dir, &args);
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
    let e = fleet();
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
    let e = fleet();
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

/// `amictl deploy` of `site`'s new image in `account` with `args`.
fn deploy_site(site: &Site, j: &str, args: &[&str]) -> std::process::Output {
    amictl_in(&site.account)
        .args(["deploy", "--asg", "web", "--image", &site.new, "--yes", "--journal", j, "-o", "json"])
        .args(["--poll-interval", "200ms"])
        .args(args)
        .output()
        .unwrap()
}

fn balanced(size: i32, max: i32) -> Site {
    site(size, max, Front { balanced: true, ..Front::default() })
}

#[test]
fn batched_waits_for_health_in_the_groups_target_groups() {
    let s = balanced(4, 6);
    // Only the load balancer's checks fail: Auto Scaling (EC2 health checks) calls them healthy.
    let mark = json!({"account": s.account, "region": R, "image_ids": [s.new], "kind": "application"});
    emulator().control.post("/_amictl/unhealthy", &mark).unwrap();
    let (_dir, j) = journal();
    let out = deploy_site(&s, &j, &["--strategy", "batched"]);
    assert_code(&out, 1);
    let d = json(&out);
    assert!(d["reason"].as_str().unwrap().contains("unhealthy in web"), "{d}");
    assert_eq!(images_of(&s.account, "web"), [(s.old.clone(), 4)].into(), "rolled back");
    assert_eq!(healthy_targets(&s.account, &s.target_groups[0]).len(), 4);
    assert_eq!(lowest_serving(&s.account, "web"), 4, "the old instances served throughout");
}

#[test]
fn batched_deploys_of_small_groups_keep_every_instance_serving_with_default_flags() {
    for size in [1, 3, 6] {
        let s = balanced(size, size + 2);
        let (_dir, j) = journal();
        let out = deploy_site(&s, &j, &["--strategy", "batched"]);
        assert_code(&out, 0);
        assert_eq!(images_of(&s.account, "web"), [(s.new.clone(), size as usize)].into(), "group of {size}");
        assert_eq!(lowest_serving(&s.account, "web"), size as u64, "group of {size}: never below desired");
        assert_eq!(group(&s.account, "web")["DesiredCapacity"], size, "group of {size}: back at its size");
        assert_eq!(healthy_targets(&s.account, &s.target_groups[0]).len(), size as usize, "group of {size}");
    }
}

#[test]
fn targets_still_initial_never_pass_a_gate() {
    let s = balanced(2, 4);
    // Ten checks a minute apart to pass: far more than the gate waits for.
    aws(
        &s.account,
        "elbv2",
        "modify_target_group",
        json!({"TargetGroupArn": s.target_groups[0], "HealthyThresholdCount": 10, "HealthCheckIntervalSeconds": 60}),
    );
    let (_dir, j) = journal();
    let out = deploy_site(&s, &j, &["--strategy", "batched", "--health-timeout", "1s"]);
    assert_code(&out, 1);
    let reason = json(&out)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("initial in web"), "{reason}");
    assert_eq!(images_of(&s.account, "web"), [(s.old.clone(), 2)].into());
    assert_eq!(group(&s.account, "web")["DesiredCapacity"], 2);
}

/// What `amictl status` says the group's last-known-good is (null: none).
fn last_known_good(account: &str, j: &str) -> Value {
    let out = amictl_in(account).args(["status", "--asg", "web", "--journal", j, "-o", "json"]).output().unwrap();
    json(&out)["groups"][0]["last_known_good"].clone()
}

#[test]
fn every_refusal_leaves_the_group_its_versions_and_the_last_known_good_as_they_were() {
    let s = site(3, 3, Front { balanced: true, api: true, ..Front::default() });
    let (_dir, j) = journal();
    // A first deploy makes a last-known-good (and a version 2) to keep.
    let first = deploy_site(&s, &j, &["--strategy", "rolling", "--warmup", "1s"]);
    assert_code(&first, 0);
    let newer = image_from_instance(&s.account, "web-1.2.0", GOOD);
    let api = image_from_instance(&s.account, "api-2.0.0", GOOD);
    let (_, _, other_lb) = load_balancer(&s.account);
    let other_listener = aws(
        &s.account,
        "elbv2",
        "create_listener",
        json!({"LoadBalancerArn": other_lb, "Protocol": "HTTP", "Port": 81,
            "DefaultActions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]}),
    )["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let before = (estate(&s), last_known_good(&s.account, &j));
    assert!(before.1.is_object(), "the first deploy left a last-known-good: {}", before.1);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Max size 3 = desired: in place only, and 90 % of 3 leaves no room.
        (vec!["--image", &newer, "--strategy", "batched"], "cannot grow"),
        // Behind a load balancer with EC2 health checks only: a refresh would not wait for it.
        (vec!["--image", &newer, "--strategy", "rolling"], "checks only EC2 health"),
        (vec!["--image", &api], "family api"),
        (vec!["--image", &s.new], "already launches"),
        (vec!["--image", &newer, "--strategy", "blue-green", "--listener", &other_listener], "does not forward"),
        (vec!["--image", &newer, "--strategy", "blue-green", "--listener", &s.listeners[0]], "also forwards"),
        (vec!["--image", &newer, "--strategy", "canary", "--shift", "0"], "--shift"),
        (vec!["--image", &newer, "--strategy", "batched", "--batch-size", "0"], "--batch-size"),
        (vec!["--image", &newer, "--min-healthy", "101"], "--min-healthy"),
        (vec!["--image", &newer, "--strategy", "blue-green", "--health-timeout", "0s"], "--health-timeout"),
    ];
    for (args, needle) in cases {
        let out = amictl_in(&s.account)
            .args(["deploy", "--asg", "web", "--yes", "--journal", &j, "--poll-interval", "200ms"])
            .args(&args)
            .output()
            .unwrap();
        let err = one_line_error(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!((estate(&s), last_known_good(&s.account, &j)), before, "{args:?} changed something");
    }
}

#[test]
fn a_group_with_a_classic_load_balancer_is_refused_blue_green_and_changes_nothing() {
    let s = site(2, 4, Front::default());
    aws(
        &s.account,
        "elb",
        "create_load_balancer",
        json!({"LoadBalancerName": "legacy", "AvailabilityZones": ["us-east-1a"],
            "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}]}),
    );
    aws(
        &s.account,
        "autoscaling",
        "attach_load_balancers",
        json!({"AutoScalingGroupName": "web", "LoadBalancerNames": ["legacy"]}),
    );
    let before = estate(&s);
    let (_dir, j) = journal();
    for strategy in ["blue-green", "canary"] {
        let err = one_line_error(&deploy_site(&s, &j, &["--strategy", strategy]));
        assert!(err.contains("classic load balancer legacy"), "{strategy}: {err}");
        assert_eq!(estate(&s), before, "{strategy}");
    }
}

#[test]
fn a_resumed_deploy_checks_the_release_gate_again() {
    let s = site(4, 6, Front::default());
    let (dir, j) = journal();
    let args = ["deploy", "--asg", "web", "--image", &s.new, "--strategy", "batched", "--yes", "--journal", &j];
    let mut child = spawn_held(&s.account, "SetDesiredCapacity", dir.path(), &args);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&s.account, &[], 0.0).unwrap();
    // The image is revoked while the deployment is interrupted.
    aws(
        &s.account,
        "ec2",
        "create_tags",
        json!({"Resources": [s.new], "Tags": [{"Key": "amictl:revoked", "Value": "2026-12-08T00:00:00Z"}]}),
    );
    let before = estate(&s);
    let out = amictl_in(&s.account).args(["deploy", "--resume", "--journal", &j]).output().unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("is revoked"), "{err}");
    assert_eq!(estate(&s), before, "the refused resume changed nothing");
}

#[test]
fn a_mixed_instances_group_deploys_and_rolls_back_with_its_overrides() {
    let s = site(4, 6, Front::default());
    aws(
        &s.account,
        "autoscaling",
        "update_auto_scaling_group",
        json!({"AutoScalingGroupName": "web", "MixedInstancesPolicy": {
            "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": s.template, "Version": "1"},
                "Overrides": [{"InstanceType": "t3.small"}, {"InstanceType": "t3.medium"}]},
            "InstancesDistribution": {"OnDemandPercentageAboveBaseCapacity": 100}}}),
    );
    let policy = |account: &str| group(account, "web")["MixedInstancesPolicy"]["LaunchTemplate"].clone();
    let (_dir, j) = journal();
    for (strategy, version) in [("batched", "2"), ("rolling", "3")] {
        let out = deploy_site(&s, &j, &["--strategy", strategy]);
        assert_code(&out, 0);
        let lt = policy(&s.account);
        assert_eq!(lt["LaunchTemplateSpecification"]["Version"], version, "{strategy}: {lt}");
        assert_eq!(lt["Overrides"].as_array().unwrap().len(), 2, "{strategy}: overrides kept: {lt}");
        assert_eq!(images_of(&s.account, "web"), [(s.new.clone(), 4)].into(), "{strategy}");
        let back = amictl_in(&s.account)
            .args(["rollback", "--asg", "web", "--yes", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
            .args(["--strategy", strategy])
            .output()
            .unwrap();
        assert_code(&back, 0);
        let b = json(&back);
        assert_eq!((b["version"].as_i64(), b["image_id"].as_str()), (Some(1), Some(s.old.as_str())), "{b}");
        assert_eq!(policy(&s.account)["LaunchTemplateSpecification"]["Version"], "1", "{strategy}");
        assert_eq!(images_of(&s.account, "web"), [(s.old.clone(), 4)].into(), "{strategy}");
    }
}

#[test]
fn an_interrupted_batch_resumes_without_a_second_surge_and_never_below_desired() {
    let s = balanced(4, 6);
    let (dir, j) = journal();
    let args = ["deploy", "--asg", "web", "--image", &s.new, "--strategy", "batched", "--yes", "--journal", &j];
    // Killed once its first surge took effect, before the journal heard of it.
    let mut child = spawn_held(&s.account, "SetDesiredCapacity", dir.path(), &args);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&s.account, &[], 0.0).unwrap();
    assert_eq!(group(&s.account, "web")["DesiredCapacity"], 5, "the surge took effect");
    let out = amictl_in(&s.account)
        .args(["deploy", "--resume", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(images_of(&s.account, "web"), [(s.new.clone(), 4)].into());
    assert_eq!(group(&s.account, "web")["DesiredCapacity"], 4, "back at its size: the surge was not made twice");
    assert_eq!(lowest_serving(&s.account, "web"), 4);
}

#[test]
fn a_group_mid_refresh_or_with_launches_suspended_is_refused_and_changes_nothing() {
    let s = site(2, 4, Front::default());
    let (_dir, j) = journal();
    aws(
        &s.account,
        "autoscaling",
        "suspend_processes",
        json!({"AutoScalingGroupName": "web", "ScalingProcesses": ["Launch"]}),
    );
    let before = estate(&s);
    let err = one_line_error(&deploy_site(&s, &j, &["--strategy", "batched"]));
    assert!(err.contains("Launch suspended"), "{err}");
    assert_eq!(estate(&s), before);
    aws(&s.account, "autoscaling", "resume_processes", json!({"AutoScalingGroupName": "web"}));
    aws(
        &s.account,
        "autoscaling",
        "start_instance_refresh",
        json!({"AutoScalingGroupName": "web", "Preferences": {"MinHealthyPercentage": 50}}),
    );
    for strategy in ["rolling", "batched"] {
        let err = one_line_error(&deploy_site(&s, &j, &["--strategy", strategy]));
        assert!(err.contains("has instance refresh"), "{strategy}: {err}");
    }
}

#[test]
fn a_blue_green_rollback_is_refused_when_a_newer_deployment_moved_the_routes() {
    let s = site(2, 4, Front { balanced: true, ..Front::default() });
    let (_dir, j) = journal();
    // web -> web-v2, then web-v2 -> web-v3: the routes forward to web-v3's twin now.
    assert_code(&deploy_site(&s, &j, &["--strategy", "blue-green"]), 0);
    let newer = image_from_instance(&s.account, "web-1.2.0", GOOD);
    let out = amictl_in(&s.account)
        .args(["deploy", "--asg", "web-v2", "--image", &newer, "--strategy", "blue-green", "--yes", "--journal", &j])
        .args(["--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let before = estate(&s);
    let err = one_line_error(
        &amictl_in(&s.account).args(["rollback", "--asg", "web", "--yes", "--journal", &j]).output().unwrap(),
    );
    assert!(err.contains("did not put there"), "{err}");
    assert_eq!(estate(&s), before, "nothing changed");
}
