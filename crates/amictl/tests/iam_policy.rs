//! `amictl iam-policy` kept honest: every command runs against the emulator, which records
//! each IAM action amictl's requests ask for, per account. A command asking for an action its
//! printed policy lacks fails the test; so does a policy granting an action no command asked
//! for (except permissions AWS checks without a call of their own, listed below with why).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";
const PROFILE: &str = "amictl-ssm";

/// Granted but never a request: AWS checks them inside another call.
const IMPLIED: &[(&str, &str)] = &[("iam:PassRole", "RunInstances with an instance profile passes its role")];

fn image(account: &str, name: &str, tags: &[(&str, &str)], days: f64) -> String {
    let id = image_from_instance(account, name, &[tags, &[("Application", "web")]].concat());
    if days > 0.0 {
        emulator().control.backdate(account, R, &id, days).unwrap();
    }
    id
}

const GOOD: &[(&str, &str)] = &[("amictl:validation", "passed"), ("amictl:scan", "passed")];

fn run(account: &str, extra_accounts: &[&str], args: &[&str]) -> std::process::Output {
    let mut cmd = amictl_in(account);
    for a in extra_accounts {
        cmd.args(["--role-arn", &role_arn(a)]);
    }
    cmd.args(args).output().unwrap()
}

fn ok(out: std::process::Output) {
    let code = out.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "{code:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db").display().to_string();
    (dir, path)
}

fn managed_account() -> String {
    let account = fresh_account();
    aws(&account, "iam", "create_instance_profile", json!({"InstanceProfileName": PROFILE}));
    account
}

/// Reads: audit, usage, inventory, report, status, image list and lineage on the demo estate.
fn audit() -> Vec<String> {
    let (account, _) = demo_account();
    let golden = image(&account, "golden-1", &[], 0.0);
    aws(
        &account,
        "ssm",
        "put_parameter",
        json!({"Name": "/golden/web", "Value": golden, "Type": "String", "DataType": "aws:ec2:image"}),
    );
    aws(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "by-parameter",
        "LaunchTemplateData": {"ImageId": "resolve:ssm:/golden/web"}}),
    );
    let (dir, _) = journal();
    let html = dir.path().join("r.html").display().to_string();
    for args in [
        vec!["audit"],
        // A second reading of the sharing asks CloudTrail what changed since the first (here at
        // once: no delivery delay to wait out).
        vec!["audit", "--sharing-delivery-delay", "0s"],
        vec!["usage"],
        vec!["inventory"],
        vec!["report", "--html", &html],
        vec!["status"],
        vec!["image", "list"],
        vec!["image", "lineage"],
    ] {
        ok(run(&account, &[], &args));
    }
    vec![account]
}

/// Every retirement stage: unshare, deprecate, disable, deregister, snapshot deletion, and the
/// restores of a deprecated and of a disabled image that became used again.
fn retire() -> Vec<String> {
    let (owner, idle) = (fresh_account(), fresh_account());
    let (plain, shared, restored) =
        (image(&owner, "web-1", &[], 200.0), image(&owner, "web-2", &[], 200.0), image(&owner, "web-3", &[], 200.0));
    let _ = plain;
    aws(
        &owner,
        "ec2",
        "modify_image_attribute",
        json!({"ImageId": shared, "LaunchPermission": {"Add": [{"UserId": idle}]}}),
    );
    let (_dir, j) = journal();
    let args = [
        "retire",
        "--keep",
        "0",
        "--min-age",
        "30d",
        "--grace-deprecated",
        "0s",
        "--grace-disabled",
        "0s",
        "--unshare-unused",
        "--apply",
        "--yes",
        "--journal",
        &j,
    ];
    ok(run(&owner, &[&idle], &args)); // deprecate; unshare
    ok(run(&owner, &[&idle], &args)); // disable; deprecate
    aws(&owner, "ec2", "run_instances", json!({"ImageId": restored, "MinCount": 1, "MaxCount": 1}));
    ok(run(&owner, &[&idle], &args)); // deregister, delete snapshots; restore a disabled image
    let deprecated_then_used = image(&owner, "web-4", &[], 200.0);
    ok(run(&owner, &[&idle], &args)); // deprecate it
    aws(&owner, "ec2", "run_instances", json!({"ImageId": deprecated_then_used, "MinCount": 1, "MaxCount": 1}));
    ok(run(&owner, &[&idle], &args)); // restore a deprecated one
    ok(run(&owner, &[&idle], &["retire", "--orphans", "--now", "--journal", &j])); // a plan
    vec![owner, idle]
}

/// Capture, promote, roll a channel back, revoke.
fn catalog() -> Vec<String> {
    let account = fresh_account();
    let (_dir, j) = journal();
    let old = image(&account, "web-1.0.0", GOOD, 0.0);
    let i = aws(&account, "ec2", "run_instances", json!({"ImageId": old, "MinCount": 1, "MaxCount": 1}));
    let instance = i["Instances"][0]["InstanceId"].as_str().unwrap().to_string();
    ok(run(
        &account,
        &[],
        &["image", "create", "--instance", &instance, "--family", "web", "--version", "2.0.0", "--journal", &j],
    ));
    let new = image(&account, "web-2.1.0", GOOD, 0.0);
    for img in [&old, &new] {
        ok(run(
            &account,
            &[],
            &["channel", "promote", "--family", "web", "--channel", "prod", "--image", img, "--journal", &j],
        ));
    }
    ok(run(&account, &[], &["channel", "rollback", "--family", "web", "--channel", "prod", "--journal", &j]));
    ok(run(&account, &[], &["channel", "history", "--family", "web", "--channel", "prod"]));
    ok(run(&account, &[], &["image", "revoke", &new, "--reason", "CVE-2026-1", "--deprecate"]));
    vec![account]
}

fn scanner_outcomes(account: &str) {
    let clean = json!({"SchemaVersion": 2, "Results": [{"Target": "x", "Vulnerabilities": []}]}).to_string();
    emulator()
        .control
        .ssm_outcome(json!({"account": account, "command_contains": "trivy", "stdout": clean, "times": 0}))
        .unwrap();
}

/// A bake copied to another region and shared; a validation; a scan.
fn pipelines() -> (Vec<String>, Vec<String>, Vec<String>) {
    let (account, other) = (managed_account(), fresh_account());
    let (_dir, j) = journal();
    image(&account, "web-1.0.0", &[("amictl:validation", "passed"), ("Version", "1.0.0")], 0.0);
    ok(run(
        &account,
        &[],
        &[
            "bake",
            "--family",
            "web",
            "--base-family",
            "web",
            "--instance-profile",
            PROFILE,
            "--copy-to",
            "eu-west-1",
            "--share-with",
            &other,
            "--journal",
            &j,
        ],
    ));
    let validate = managed_account();
    let img = image(&validate, "web-1.0.0", &[], 0.0);
    ok(run(
        &validate,
        &[],
        &["validate", &img, "--instance-profile", PROFILE, "--check-command", "true", "--journal", &j],
    ));
    let scan = managed_account();
    scanner_outcomes(&scan);
    let img = image(&scan, "web-1.0.0", &[], 0.0);
    ok(run(&scan, &[], &["scan", &img, "--instance-profile", PROFILE, "--journal", &j]));
    (vec![account], vec![validate], vec![scan])
}

fn group(account: &str, name: &str, image: &str, extra: Value) {
    let t = aws(
        account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": name, "LaunchTemplateData": {"ImageId": image, "InstanceType": "t3.small"}}),
    );
    let template = t["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap();
    let mut body = json!({"AutoScalingGroupName": name, "LaunchTemplate": {"LaunchTemplateId": template, "Version": "1"},
                          "MinSize": 4, "MaxSize": 4, "DesiredCapacity": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    if body.get("VPCZoneIdentifier").is_none() {
        body["AvailabilityZones"] = json!(["us-east-1a"]);
    }
    aws(account, "autoscaling", "create_auto_scaling_group", body);
}

/// Rolling (with an alarm), batched, an interrupted rolling deploy rolled back through AWS's
/// own refresh rollback, and blue-green behind a load balancer; status.
fn deploy() -> Vec<String> {
    let account = fresh_account();
    let (dir, j) = journal();
    let old = image(&account, "web-1.0.0", GOOD, 0.0);
    let new = image(&account, "web-1.1.0", GOOD, 0.0);
    aws(
        &account,
        "cloudwatch",
        "put_metric_alarm",
        json!({"AlarmName": "web-5xx", "MetricName": "5xx", "Namespace": "web",
        "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold"}),
    );
    group(&account, "rolling", &old, json!({}));
    // Room above its size: batches grow the group before old instances go.
    group(&account, "batched", &old, json!({"MaxSize": 6}));
    group(&account, "killed", &old, json!({}));
    let rollout = |g: &str, extra: &[&str]| {
        let mut args =
            vec!["deploy", "--asg", g, "--image", &new, "--yes", "--journal", &j, "--poll-interval", "200ms"];
        args.extend_from_slice(extra);
        ok(run(&account, &[], &args));
    };
    rollout("rolling", &["--alarm", "web-5xx"]);
    rollout("batched", &["--strategy", "batched", "--batch-size", "1", "--min-healthy", "75"]);
    ok(run(&account, &[], &["rollback", "--asg", "rolling", "--yes", "--journal", &j, "--poll-interval", "200ms"]));
    let args = ["deploy", "--asg", "killed", "--image", &new, "--yes", "--journal", &j, "--poll-interval", "200ms"];
    let mut child = spawn_held(&account, "StartInstanceRefresh", dir.path(), &args);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    ok(run(&account, &[], &["rollback", "--asg", "killed", "--yes", "--journal", &j, "--poll-interval", "200ms"]));

    let (vpc, a, lb) = load_balancer(&account);
    let (tg, listener) = forwarded_target_group(&account, &vpc, &lb, "blue", 80, json!({}));
    aws(
        &account,
        "elbv2",
        "create_rule",
        json!({"ListenerArn": listener, "Priority": 5, "Conditions": [{"Field": "path-pattern", "Values": ["/api/*"]}],
            "Actions": [{"Type": "forward", "TargetGroupArn": tg}]}),
    );
    group(
        &account,
        "blue",
        &old,
        json!({"VPCZoneIdentifier": a, "TargetGroupARNs": [tg],
            "Tags": [{"Key": "team", "Value": "web", "PropagateAtLaunch": true}]}),
    );
    // Green copies blue's scaling policies, scheduled actions and lifecycle hooks.
    aws(
        &account,
        "autoscaling",
        "put_scaling_policy",
        json!({"AutoScalingGroupName": "blue", "PolicyName": "cpu", "PolicyType": "TargetTrackingScaling",
            "TargetTrackingConfiguration": {"PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
                "TargetValue": 50.0}}),
    );
    aws(
        &account,
        "autoscaling",
        "put_scheduled_update_group_action",
        json!({"AutoScalingGroupName": "blue", "ScheduledActionName": "night", "Recurrence": "0 2 * * *", "DesiredCapacity": 4}),
    );
    aws(
        &account,
        "autoscaling",
        "put_lifecycle_hook",
        json!({"AutoScalingGroupName": "blue", "LifecycleHookName": "drain",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}),
    );
    rollout("blue", &["--strategy", "blue-green"]);
    // Green that never becomes healthy is torn down: its group and target group deleted.
    let (tg2, _) = forwarded_target_group(&account, &vpc, &lb, "blue2", 81, json!({}));
    group(&account, "blue2", &old, json!({"VPCZoneIdentifier": a, "TargetGroupARNs": [tg2]}));
    let bad = image(&account, "web-1.2.0", GOOD, 0.0);
    emulator()
        .control
        .post("/_amictl/unhealthy", &json!({"account": account, "region": R, "image_ids": [bad]}))
        .unwrap();
    let args = [
        "deploy",
        "--asg",
        "blue2",
        "--image",
        &bad,
        "--strategy",
        "blue-green",
        "--yes",
        "--journal",
        &j,
        "--poll-interval",
        "200ms",
        "--timeout",
        "20s",
    ];
    ok(run(&account, &[], &args));
    ok(run(&account, &[], &["status"]));
    vec![account]
}

fn patch() -> Vec<String> {
    let account = managed_account();
    let (_dir, j) = journal();
    let i = aws(
        &account,
        "ec2",
        "run_instances",
        json!({"ImageId": "ami-00000001", "MinCount": 1, "MaxCount": 1,
        "IamInstanceProfile": {"Name": PROFILE}}),
    );
    let id = i["Instances"][0]["InstanceId"].as_str().unwrap().to_string();
    let (dir, _) = journal();
    let mut child =
        spawn_held(&account, "SendCommand", dir.path(), &["patch", "--instance", &id, "--yes", "--journal", &j]);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    ok(run(&account, &[], &["patch", "--resume", "--journal", &j]));
    ok(run(&account, &[], &["patch", "--instance", &id, "--scan-only", "--journal", &j]));
    vec![account]
}

fn emergency() -> Vec<String> {
    let account = managed_account();
    let (_dir, j) = journal();
    let vulnerable = image(&account, "web-1.0.0", &[("amictl:validation", "passed"), ("Version", "1.0.0")], 0.0);
    group(&account, "web", &vulnerable, json!({}));
    let i = aws(
        &account,
        "ec2",
        "run_instances",
        json!({"ImageId": vulnerable, "MinCount": 1, "MaxCount": 1,
        "IamInstanceProfile": {"Name": PROFILE}}),
    );
    let _ = i;
    scanner_outcomes(&account);
    let topic = aws(&account, "sns", "create_topic", json!({"Name": "t"}))["TopicArn"].as_str().unwrap().to_string();
    ok(run(
        &account,
        &[],
        &[
            "emergency",
            "--cve",
            "CVE-2026-1234",
            "--family",
            "web",
            "--instance-profile",
            PROFILE,
            "--yes",
            "--revoke",
            "--journal",
            &j,
            "--poll-interval",
            "200ms",
            "--topic-arn",
            &topic,
        ],
    ));
    vec![account]
}

fn metrics() -> Vec<String> {
    let (account, _) = demo_account();
    let (_dir, j) = journal();
    ok(run(&account, &[], &["metrics", "publish", "--journal", &j]));
    ok(run(&account, &[], &["dashboard"]));
    vec![account]
}

fn alerts() -> Vec<String> {
    let account = fresh_account();
    image(&account, "web-1", &[], 400.0);
    let topic = aws(&account, "sns", "create_topic", json!({"Name": "t"}))["TopicArn"].as_str().unwrap().to_string();
    ok(run(&account, &[], &["audit", "--notify", "--topic-arn", &topic, "--notify-severity", "low"]));
    vec![account]
}

fn policy_of(commands: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["iam-policy", "-o", "json"];
    for c in commands {
        args.extend(["--for", c]);
    }
    let out = amictl().args(&args).output().unwrap();
    assert_code(&out, 0);
    json(&out)["policy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn every_command_is_granted_exactly_what_it_asks_for() {
    // What each scenario runs, and the `--for` it must be within.
    let scenarios: Vec<(&str, fn() -> Vec<String>)> = vec![
        ("audit", audit),
        ("retire", retire),
        ("catalog", catalog),
        ("deploy", deploy),
        ("emergency alerts", emergency),
        ("metrics", metrics),
        ("audit alerts", alerts),
    ];
    let mut accounts: BTreeMap<&str, Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = scenarios.iter().map(|(name, f)| (*name, s.spawn(f))).collect();
        handles.into_iter().map(|(n, h)| (n, h.join().unwrap_or_else(|_| panic!("scenario {n} failed")))).collect()
    });
    // Holds are one emulator setting: the two scenarios that kill a run at a held call do not
    // run side by side (deploy's ran above, alone among them).
    accounts.insert("patch", patch());
    let (bake, validate, scan) = pipelines();
    accounts.insert("bake", bake);
    accounts.insert("validate", validate);
    accounts.insert("scan", scan);

    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut missing = Vec::new();
    for (command, accts) in &accounts {
        let seen: BTreeSet<String> = accts.iter().flat_map(|a| emulator().control.actions(a).unwrap()).collect();
        // Every scenario works through --role-arn: what reaching an account needs comes too.
        let mut commands: Vec<&str> = command.split(' ').collect();
        commands.push("accounts");
        let granted = policy_of(&commands);
        for a in seen.difference(&granted) {
            missing.push(format!("{command}: asks for {a}, not in `iam-policy --for {command}`"));
        }
        used.extend(seen);
    }
    // Organizations and the team journal are asked from the caller's own account, which the
    // test shares with others: only their services are read from it.
    let _ = amictl().args(["--org-role", "amictl-read", "inventory", "-o", "json"]).output().unwrap();
    let team = fresh_account();
    image(&team, "web-1", &[], 200.0);
    let table = format!("dynamodb://amictl-iam-{team}");
    ok(run(
        &team,
        &[],
        &["retire", "--keep", "0", "--min-age", "30d", "--now", "--apply", "--yes", "--journal", &table],
    ));
    ok(run(&team, &[], &["history", "--journal", &table]));
    let own: BTreeSet<String> = emulator().control.actions("123456789012").unwrap().into_iter().collect();
    let shared: BTreeSet<String> =
        own.into_iter().filter(|a| a.starts_with("organizations:") || a.starts_with("dynamodb:")).collect();
    let granted = policy_of(&["accounts", "team"]);
    for a in shared.difference(&granted) {
        missing.push(format!("accounts/team: asks for {a}, not in `iam-policy --for accounts --for team`"));
    }
    used.extend(shared);
    used.extend(emulator().control.actions(&team).unwrap());
    used.extend(IMPLIED.iter().map(|(a, _)| a.to_string()));
    let all = policy_of(&["all"]);
    let unused: Vec<&String> = all.iter().filter(|a| !used.contains(*a)).collect();
    assert!(missing.is_empty(), "policies lack actions the commands ask for:\n{}", missing.join("\n"));
    assert!(unused.is_empty(), "`iam-policy --for all` grants actions no command asked for: {unused:?}");
}
