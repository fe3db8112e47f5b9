//! `amictl patch` against the emulator: a 200-instance fleet across tags and two Auto Scaling
//! groups with failures, timeouts and unmanaged instances; SSM's MaxErrors; the minimum healthy
//! share of each group; a killed run resumed without resending; bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};

const MANAGED: (&str, &str) = ("amictl-emulator:ssm", "managed");

/// `n` standalone instances with `tags`; their ids.
fn instances(account: &str, n: usize, tags: &[(&str, &str)]) -> Vec<String> {
    let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
    let out = aws(
        account,
        "ec2",
        "run_instances",
        json!({"ImageId": "ami-00000001", "MinCount": n, "MaxCount": n,
               "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}),
    );
    out["Instances"].as_array().unwrap().iter().map(|i| i["InstanceId"].as_str().unwrap().to_string()).collect()
}

/// An Auto Scaling group of `n` managed instances tagged Environment=production; their ids.
fn group(account: &str, name: &str, n: usize) -> Vec<String> {
    aws(
        account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": name, "LaunchTemplateData": {"ImageId": "ami-00000001", "InstanceType": "t3.micro"}}),
    );
    let tag = |k: &str, v: &str| json!({"Key": k, "Value": v, "PropagateAtLaunch": true});
    aws(
        account,
        "autoscaling",
        "create_auto_scaling_group",
        json!({"AutoScalingGroupName": name, "LaunchTemplate": {"LaunchTemplateName": name},
               "MinSize": n, "MaxSize": n, "DesiredCapacity": n, "AvailabilityZones": ["us-east-1a"],
               "Tags": [tag("Environment", "production"), tag("Role", name), tag(MANAGED.0, MANAGED.1)]}),
    );
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": [name]}));
    g["AutoScalingGroups"][0]["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

fn outcome(account: &str, ids: &[String], status: &str, exit_code: i64, stdout: &str) {
    emulator()
        .control
        .ssm_outcome(json!({"account": account, "instance_ids": ids, "status": status, "exit_code": exit_code,
                            "stdout": stdout, "times": 0}))
        .unwrap();
}

/// Every command sent in the account: (comment, instance ids).
fn commands(account: &str) -> Vec<(String, Vec<String>)> {
    let out = aws(account, "ssm", "list_commands", json!({}));
    out["Commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["InstanceIds"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
            (c["Comment"].as_str().unwrap_or_default().to_string(), ids)
        })
        .collect()
}

fn journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db").display().to_string();
    (dir, path)
}

fn result_of<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["instance_id"] == id)
        .unwrap_or_else(|| panic!("no result for {id}"))
}

struct Fleet {
    account: String,
    standalone: Vec<String>,
    unmanaged: Vec<String>,
    web: Vec<String>,
    api: Vec<String>,
}

/// 200 instances tagged Environment=production: 115 standalone (Role=web or api), 5 of them
/// with no SSM agent, and two groups of 40.
fn fleet() -> Fleet {
    let account = fresh_account();
    let mut standalone = instances(&account, 60, &[("Environment", "production"), ("Role", "web"), MANAGED]);
    standalone.extend(instances(&account, 55, &[("Environment", "production"), ("Role", "api"), MANAGED]));
    // Four with no agent, one whose agent stopped answering (listed by SSM as ConnectionLost).
    let mut unmanaged = instances(&account, 4, &[("Environment", "production"), ("Role", "web")]);
    unmanaged.extend(instances(
        &account,
        1,
        &[("Environment", "production"), ("Role", "web"), ("amictl-emulator:ssm", "connection-lost")],
    ));
    let web = group(&account, "web-asg", 40);
    let api = group(&account, "api-asg", 40);
    Fleet { account, standalone, unmanaged, web, api }
}

#[test]
fn two_hundred_instances_every_one_reported_groups_kept_healthy_and_results_audited() {
    let f = fleet();
    let failing: Vec<String> = f.standalone[..4].iter().chain(&f.web[..3]).cloned().collect();
    let timing_out: Vec<String> = f.api[..3].to_vec();
    outcome(&f.account, &failing, "Failed", 100, "Error: Failed to download metadata for repo 'updates'");
    outcome(&f.account, &timing_out, "TimedOut", -1, "");
    let (_dir, j) = journal();
    let run = |extra: &[&str]| {
        amictl_in(&f.account)
            .args(["patch", "--target", "Environment=production", "--max-concurrency", "25%", "--max-errors", "10"])
            .args(["--min-healthy", "90", "--journal", &j, "-o", "json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run"]);
    assert_code(&dry, 0);
    assert!(commands(&f.account).is_empty(), "--dry-run sends nothing");
    let plan = json(&dry);
    // Four of each forty at a time (ten rounds); the 115 outside groups go first, 50 a command.
    assert_eq!(plan["plan"]["batches"].as_array().unwrap().len(), 12, "{}", plan["plan"]);

    let out = run(&["--yes"]);
    assert_code(&out, 1);
    let report = json(&out);
    let s = &report["summary"];
    assert_eq!(
        (s["targeted"].as_u64(), s["succeeded"].as_u64(), s["failed"].as_u64(), s["timed_out"].as_u64()),
        (Some(200), Some(185), Some(7), Some(3)),
        "{s}"
    );
    assert_eq!((s["not_managed"].as_u64(), s["not_run"].as_u64()), (Some(5), Some(0)), "{s}");
    for id in &failing {
        let r = result_of(&report, id);
        assert_eq!((r["status"].as_str(), r["exit_code"].as_i64()), (Some("Failed"), Some(100)), "{r}");
        assert!(r["output"].as_str().unwrap().contains("Failed to download metadata"), "{r}");
    }
    for id in &timing_out {
        assert_eq!(result_of(&report, id)["status"], "TimedOut");
    }
    for id in &f.unmanaged {
        assert_eq!(result_of(&report, id)["status"], "NotManaged");
    }
    assert_eq!(result_of(&report, &f.web[10])["group"], "web-asg");

    // No command took more than four of a group's forty in-service instances at once, and the
    // unmanaged instances were sent nothing.
    let sent = commands(&f.account);
    let web: BTreeSet<&String> = f.web.iter().collect();
    let api: BTreeSet<&String> = f.api.iter().collect();
    let mut per_batch: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (comment, ids) in &sent {
        let batch = comment.split(" part ").next().unwrap().to_string();
        let e = per_batch.entry(batch).or_default();
        e.0 += ids.iter().filter(|i| web.contains(i)).count();
        e.1 += ids.iter().filter(|i| api.contains(i)).count();
        assert!(ids.len() <= 50, "SendCommand takes at most 50 ids");
        assert!(!ids.iter().any(|i| f.unmanaged.contains(i)));
    }
    assert_eq!(per_batch.len(), 12);
    assert!(per_batch.values().all(|(w, a)| *w <= 4 && *a <= 4), "{per_batch:?}");

    // The results are on the instances, and audit reads them.
    let tags = aws(
        &f.account,
        "ec2",
        "describe_tags",
        json!({"Filters": [{"Name": "key", "Values": ["amictl:patch-status"]}]}),
    );
    let failed_tags = tags["Tags"].as_array().unwrap().iter().filter(|t| t["Value"] == "Failed").count();
    assert_eq!(failed_tags, 7);
    let audit = amictl_in(&f.account).args(["audit", "-o", "json"]).output().unwrap();
    let doc = json(&audit);
    let patch_failed =
        doc["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "instance-patch-failed").count();
    assert_eq!(patch_failed, 10, "7 failed and 3 timed out");

    // Every instance's result is in the journal too.
    let run = report["run_id"].as_i64().unwrap().to_string();
    let h = amictl().args(["history", "--run", &run, "--journal", &j, "-o", "json"]).output().unwrap();
    let kept = json(&h)["instances"].as_array().unwrap().clone();
    assert_eq!(kept.len(), 200);
    assert_eq!(kept.iter().filter(|i| i["status"] == "Failed").count(), 7);
}

#[test]
fn max_errors_stops_sending_where_ssm_would() {
    let account = fresh_account();
    let mut ids = instances(&account, 30, &[("Tier", "batch"), MANAGED]);
    ids.sort();
    // The first window of five holds three failures: more than --max-errors 2.
    outcome(&account, &ids[..3], "Failed", 1, "boom");
    let (_dir, j) = journal();
    let out = amictl_in(&account)
        .args([
            "patch",
            "--target",
            "Tier=batch",
            "--max-concurrency",
            "5",
            "--max-errors",
            "2",
            "--yes",
            "--journal",
            &j,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let report = json(&out);
    let s = &report["summary"];
    assert_eq!(
        (s["failed"].as_u64(), s["succeeded"].as_u64(), s["not_run"].as_u64()),
        (Some(3), Some(2), Some(25)),
        "{s}"
    );
    assert_eq!(result_of(&report, &ids[29])["status"], "Cancelled");
}

#[test]
fn once_the_error_budget_is_spent_later_batches_are_not_sent() {
    let account = fresh_account();
    let web = group(&account, "web-asg", 10);
    outcome(&account, &web, "Failed", 1, "broken");
    let (_dir, j) = journal();
    let out = amictl_in(&account)
        .args([
            "patch",
            "--asg",
            "web-asg",
            "--min-healthy",
            "80",
            "--max-errors",
            "1",
            "--yes",
            "--journal",
            &j,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let report = json(&out);
    assert_eq!(report["summary"]["failed"], 2, "the first batch of two ran");
    assert_eq!(report["summary"]["not_run"], 8);
    assert_eq!(commands(&account).len(), 1, "no batch after the first was sent");
    let unsent = report["results"].as_array().unwrap().iter().filter(|r| r["status"] == "NotSent").count();
    assert_eq!(unsent, 8);
}

/// Kills `amictl patch` while the answer of `action` (in batch 1) is held, then resumes it.
fn killed_and_resumed(action: &str) {
    let account = fresh_account();
    let _web = group(&account, "web-asg", 10);
    let (dir, j) = journal();
    let mut child = spawn_held(
        &account,
        action,
        dir.path(),
        &["patch", "--asg", "web-asg", "--min-healthy", "50", "--yes", "--journal", &j],
    );
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    let before = commands(&account);
    assert_eq!(before.len(), 1, "{action}: batch 1 was sent before the kill");

    let out = amictl_in(&account).args(["patch", "--resume", "--journal", &j, "-o", "json"]).output().unwrap();
    assert_code(&out, 0);
    let report = json(&out);
    assert_eq!(report["summary"]["succeeded"], 10, "{action}");
    let after = commands(&account);
    assert_eq!(after.len(), 2, "{action}: batch 2 sent once, batch 1 never again: {after:?}");
    assert_eq!(after.iter().filter(|(c, _)| c.contains("batch 1 ")).count(), 1, "{action}");
    let h = amictl().args(["history", "--journal", &j, "-o", "json"]).output().unwrap();
    assert_eq!(json(&h)["runs"][0]["status"], "completed", "{action}");
}

#[test]
fn a_killed_run_resumes_by_reading_its_commands_not_by_sending_them_again() {
    // Killed while following batch 1 (its command ids journaled), and while SendCommand's
    // answer was on its way (sent, but not journaled: found again by its comment).
    killed_and_resumed("ListCommandInvocations");
    killed_and_resumed("SendCommand");
}

#[test]
fn scan_only_reports_what_is_missing_and_changes_nothing() {
    let account = fresh_account();
    let ids = instances(&account, 3, &[("Role", "db"), MANAGED]);
    outcome(
        &account,
        &ids[..1],
        "Success",
        0,
        "openssl.x86_64  1:3.0.8-1.amzn2023  amazonlinux\nALAS-2024-123 Important/Sec. curl-8.5",
    );
    let (_dir, j) = journal();
    let out = amictl_in(&account)
        .args(["patch", "--target", "Role=db", "--scan-only", "--journal", &j, "-o", "json"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let report = json(&out);
    assert!(result_of(&report, &ids[0])["output"].as_str().unwrap().contains("ALAS-2024-123"));
    let sent = aws(&account, "ssm", "list_commands", json!({}))["Commands"].to_string();
    assert!(sent.contains("updateinfo list --security") && !sent.contains("upgrade --security"), "{sent}");
    let tags =
        aws(&account, "ec2", "describe_tags", json!({"Filters": [{"Name": "key", "Values": ["amictl:patch-status"]}]}));
    assert!(tags["Tags"].as_array().unwrap().is_empty(), "a scan records nothing on the instances");

    // `--operation scan` is Patch Manager's scan: AWS-RunPatchBaseline, Operation=Scan, no reboot.
    let out = amictl_in(&account)
        .args(["patch", "--target", "Role=db", "--operation", "scan", "--journal", &j, "-o", "json"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let sent = aws(&account, "ssm", "list_commands", json!({}));
    let baseline =
        sent["Commands"].as_array().unwrap().iter().find(|c| c["DocumentName"] == "AWS-RunPatchBaseline").unwrap();
    assert_eq!(baseline["Parameters"]["Operation"], json!(["Scan"]), "{baseline}");
    assert_eq!(baseline["Parameters"]["RebootOption"], json!(["NoReboot"]), "{baseline}");
    assert!(json(&out)["scan_only"].as_bool().unwrap());
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_is_sent() {
    let account = fresh_account();
    instances(&account, 2, &[("Role", "web"), MANAGED]);
    let _solo = group(&account, "solo", 1);
    let (_dir, j) = journal();
    let cases: &[(&[&str], &str)] = &[
        (&["--target", "Role=nowhere"], "a running instance matching tag Role=nowhere not found"),
        (&["--target", "Role"], "is not KEY=VALUE"),
        (&["--target", "Role=web", "--max-errors", "120%"], "a percentage is at most 100%"),
        (&["--target", "Role=web", "--max-concurrency", "0"], "must be at least 1"),
        (&["--target", "Role=web", "--preset", "nosuch"], "invalid value 'nosuch'"),
        (&["--asg", "nosuch"], "Auto Scaling group nosuch not found"),
        (&["--instance", "i-0000000000000dead"], "running instance i-0000000000000dead not found"),
        (&["--asg", "solo"], "group solo has 1 instance(s) in service"),
        (&[], "nothing to patch"),
        (&["--target", "Role=web"], "refusing to patch without --yes"),
    ];
    for (args, needle) in cases {
        let out = amictl_in(&account).args(["patch", "--journal", &j]).args(*args).output().unwrap();
        assert_code(&out, 2);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert!(commands(&account).is_empty(), "nothing was sent");
}
