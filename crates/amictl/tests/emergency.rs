//! `amictl emergency` end to end on the emulator: 200 instances in three groups and a few
//! standalone instances on an image whose stored scan names the CVE reach a patched,
//! validated and scanned image; the health floor holds at every replacement (the emulator's
//! record); the vulnerable image is deprecated; an SNS message arrives through SQS; a report
//! is written. Killed at three different steps and resumed, the run finishes without a
//! second image, template version or leaked instance.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";
const PROFILE: &str = "amictl-ssm";
const CVE: &str = "CVE-2026-1234";

fn trivy(findings: &[(&str, &str, &str, &str)]) -> String {
    let v: Vec<Value> = findings
        .iter()
        .map(|(id, pkg, installed, sev)| {
            json!({"VulnerabilityID": id, "PkgName": pkg, "InstalledVersion": installed, "FixedVersion": "3.0.13", "Severity": sev})
        })
        .collect();
    json!({"SchemaVersion": 2, "Results": [{"Target": "debian 12", "Vulnerabilities": v}]}).to_string()
}

/// A validated image of family `web`; its id.
fn image(account: &str, version: &str) -> String {
    let tags =
        [("Application", "web"), ("Version", version), ("amictl:validation", "passed"), ("amictl:scan", "passed")];
    image_from_instance(account, &format!("web-{version}"), &tags)
}

struct Estate {
    account: String,
    vulnerable: String,
    groups: Vec<String>,
    standalone: Vec<String>,
    topic: String,
    queue: String,
    _dir: tempfile::TempDir,
    journal: String,
}

/// Groups of the given sizes and `standalone` instances on a vulnerable image whose stored
/// scan names the CVE; the channel web/prod points at it; an SNS topic with an SQS queue.
fn estate(sizes: &[i64], standalone: i64) -> Estate {
    let account = fresh_account();
    aws(&account, "iam", "create_instance_profile", json!({"InstanceProfileName": PROFILE}));
    let vulnerable = image(&account, "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db").display().to_string();
    let promoted = amictl_in(&account)
        .args([
            "channel",
            "promote",
            "--family",
            "web",
            "--channel",
            "prod",
            "--image",
            &vulnerable,
            "--journal",
            &journal,
        ])
        .output()
        .unwrap();
    assert_code(&promoted, 0);
    // Its scan names the CVE; every later scan (of a patched image) does not.
    let control = &emulator().control;
    let bad = trivy(&[(CVE, "openssl", "3.0.2", "CRITICAL"), ("CVE-2020-0001", "zlib", "1.2", "LOW")]);
    control
        .ssm_outcome(
            json!({"account": account, "command_contains": "trivy", "image_id": vulnerable, "stdout": bad, "times": 0}),
        )
        .unwrap();
    let clean = trivy(&[("CVE-2020-0001", "zlib", "1.2", "LOW")]);
    control.ssm_outcome(json!({"account": account, "command_contains": "trivy", "stdout": clean, "times": 0})).unwrap();
    let scanned = amictl_in(&account)
        .args(["scan", &vulnerable, "--instance-profile", PROFILE, "--journal", &journal])
        .output()
        .unwrap();
    assert_code(&scanned, 1);

    let t = aws(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "web", "LaunchTemplateData": {"ImageId": vulnerable, "InstanceType": "t3.small"}}),
    );
    let template = t["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap().to_string();
    let mut groups = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("web-{}", (b'a' + i as u8) as char);
        aws(
            &account,
            "autoscaling",
            "create_auto_scaling_group",
            json!({"AutoScalingGroupName": name, "LaunchTemplate": {"LaunchTemplateId": template, "Version": "$Default"},
                   "MinSize": size, "MaxSize": size + 2, "DesiredCapacity": size, "AvailabilityZones": ["us-east-1a"]}),
        );
        groups.push(name);
    }
    // One at a time: moto associates the instance profile with the first instance of a
    // multi-instance RunInstances only.
    let standalone: Vec<String> = (0..standalone)
        .map(|_| {
            let run = aws(
                &account,
                "ec2",
                "run_instances",
                json!({"ImageId": vulnerable, "MinCount": 1, "MaxCount": 1, "IamInstanceProfile": {"Name": PROFILE}}),
            );
            run["Instances"][0]["InstanceId"].as_str().unwrap().to_string()
        })
        .collect();
    let (topic, queue) = topic_with_queue(&account, "amictl-alerts");
    Estate { account, vulnerable, groups, standalone, topic, queue, _dir: dir, journal }
}

fn emergency_args<'a>(e: &'a Estate, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "emergency",
        "--yes",
        "--journal",
        &e.journal,
        "--instance-profile",
        PROFILE,
        "--topic-arn",
        &e.topic,
        "--poll-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    args
}

/// Image id → count of the group's instances.
fn images_of(account: &str, group: &str) -> std::collections::BTreeMap<String, usize> {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": [group]}));
    let ids: Vec<Value> =
        g["AutoScalingGroups"][0]["Instances"].as_array().unwrap().iter().map(|i| i["InstanceId"].clone()).collect();
    let mut out = std::collections::BTreeMap::new();
    for chunk in ids.chunks(100) {
        let d = aws(account, "ec2", "describe_instances", json!({"InstanceIds": chunk}));
        for r in d["Reservations"].as_array().unwrap() {
            for i in r["Instances"].as_array().unwrap() {
                *out.entry(i["ImageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

fn lowest_healthy(account: &str, group: &str) -> (u64, u64) {
    let record = emulator()
        .control
        .post("/_amictl/refresh/record", &json!({"account": account, "region": R, "group": group}))
        .unwrap();
    let steps = record["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "the emulator recorded no replacement in {group}");
    let low = steps.iter().map(|s| s["healthy"].as_u64().unwrap()).min().unwrap();
    (low, steps[0]["desired"].as_u64().unwrap())
}

fn web_images(account: &str) -> Vec<Value> {
    let out = aws(account, "ec2", "describe_images", json!({"Owners": ["self"], "IncludeDeprecated": true}));
    out["Images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["Tags"].as_array().is_some_and(|t| t.iter().any(|t| t["Key"] == "Application" && t["Value"] == "web"))
        })
        .cloned()
        .collect()
}

fn tag(i: &Value, key: &str) -> Option<String> {
    i["Tags"].as_array()?.iter().find(|t| t["Key"] == key).map(|t| t["Value"].as_str().unwrap().to_string())
}

fn live_pipeline_instances(account: &str) -> usize {
    let out = aws(
        account,
        "ec2",
        "describe_instances",
        json!({"Filters": [{"Name": "tag-key", "Values": ["amictl:run-id"]},
                           {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]}),
    );
    out["Reservations"].as_array().unwrap().iter().map(|r| r["Instances"].as_array().unwrap().len()).sum()
}

/// What every finished emergency leaves: one patched image, proven, on every group and
/// standalone instance; the vulnerable image deprecated; the channel moved; nothing leaked.
fn assert_patched(e: &Estate) -> String {
    let images = web_images(&e.account);
    assert_eq!(images.len(), 2, "exactly one patched image: {images:#?}");
    let patched = images.iter().find(|i| i["ImageId"] != e.vulnerable.as_str()).unwrap();
    let id = patched["ImageId"].as_str().unwrap().to_string();
    assert_eq!(tag(patched, "amictl:validation").as_deref(), Some("passed"));
    assert_eq!(tag(patched, "amictl:scan").as_deref(), Some("passed"));
    assert!(tag(patched, "CVE").unwrap_or_default().contains(CVE));
    assert_eq!(tag(patched, "SourceAMI").as_deref(), Some(e.vulnerable.as_str()));
    let old = images.iter().find(|i| i["ImageId"] == e.vulnerable.as_str()).unwrap();
    assert!(old["DeprecationTime"].is_string(), "the vulnerable image is deprecated: {old:#}");
    for g in &e.groups {
        let on = images_of(&e.account, g);
        assert_eq!(on.keys().collect::<Vec<_>>(), vec![&id], "group {g} runs only the patched image: {on:?}");
    }
    let d = aws(&e.account, "ec2", "describe_instances", json!({"InstanceIds": e.standalone}));
    for r in d["Reservations"].as_array().unwrap() {
        for i in r["Instances"].as_array().unwrap() {
            assert_eq!(tag(i, "amictl:patch-status").as_deref(), Some("Success"), "{i:#}");
        }
    }
    let channel = aws(&e.account, "ssm", "get_parameter", json!({"Name": "/amictl/web/prod"}));
    assert_eq!(channel["Parameter"]["Value"], id.as_str());
    assert_eq!(live_pipeline_instances(&e.account), 0, "no builder, validator or scanner left running");
    id
}

#[test]
fn a_cve_on_200_instances_in_three_groups_and_standalone_ones_is_patched_in_one_run() {
    let e = estate(&[70, 70, 60], 3);
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("cve.html");
    let plan =
        amictl_in(&e.account).args(emergency_args(&e, &["--cve", CVE, "--dry-run", "-o", "json"])).output().unwrap();
    assert_code(&plan, 0);
    let plan = json(&plan);
    assert_eq!(plan["images"][0]["image_id"], e.vulnerable.as_str());
    assert_eq!(plan["families"][0]["groups"].as_array().unwrap().len(), 3);
    assert_eq!(plan["families"][0]["standalone"].as_array().unwrap().len(), 3);
    assert_eq!(plan["families"][0]["instances"].as_array().unwrap().len(), 203);
    assert_eq!(web_images(&e.account).len(), 1, "--dry-run changes nothing");

    let out = amictl_in(&e.account)
        .args(emergency_args(&e, &["--cve", CVE, "-o", "json", "--report-html", html.to_str().unwrap()]))
        .output()
        .unwrap();
    assert_code(&out, 0);
    let report = json(&out);
    assert_eq!(report["all_patched"], true);
    let id = assert_patched(&e);
    assert_eq!(report["families"][0]["image_id"], id.as_str());
    for g in &e.groups {
        let (low, desired) = lowest_healthy(&e.account, g);
        assert!(low * 100 >= desired * 90, "{g}: {low} of {desired} healthy, below 90 %");
    }
    let got = received(&e.account, &e.queue);
    assert!(got.iter().any(|m| m.contains("emergency") && m.contains("started")), "{got:?}");
    assert!(got.iter().any(|m| m.contains("finished") && m.contains("everything patched")), "{got:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Emergency run") && page.contains(CVE), "the page shows the run's timeline");
}

#[test]
fn an_emergency_killed_at_three_steps_resumes_to_the_same_end() {
    let e = estate(&[4, 4], 1);
    let dir = tempfile::tempdir().unwrap();
    // Killed after CreateImage (the bake), at the group's instance refresh, at the deprecation.
    let mut child = spawn_held(&e.account, "CreateImage", dir.path(), &emergency_args(&e, &["--cve", CVE]));
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&e.account, &[], 0.0).unwrap();
    for action in ["StartInstanceRefresh", "EnableImageDeprecation"] {
        let mut child = spawn_held(&e.account, action, dir.path(), &emergency_args(&e, &["--resume"]));
        child.kill().unwrap();
        child.wait().unwrap();
        emulator().control.hold(&e.account, &[], 0.0).unwrap();
    }
    let out = amictl_in(&e.account).args(emergency_args(&e, &["--resume", "-o", "json"])).output().unwrap();
    assert_code(&out, 0);
    assert_eq!(json(&out)["all_patched"], true);
    assert_patched(&e);
    // One new template version per group's template, not one per attempt.
    let versions = aws(&e.account, "ec2", "describe_launch_template_versions", json!({"LaunchTemplateName": "web"}));
    assert_eq!(versions["LaunchTemplateVersions"].as_array().unwrap().len(), 2 + e.groups.len() - 1, "{versions:#}");
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let e = estate(&[2], 0);
    let run = |args: &[&str]| amictl_in(&e.account).args(emergency_args(&e, args)).output().unwrap();
    let unknown = one_line_error(&run(&["--cve", "CVE-2026-9999"]));
    assert!(unknown.contains("no stored scan report names CVE-2026-9999") && unknown.contains("--family"), "{unknown}");
    let package = one_line_error(&run(&["--cve", "CVE-2026-9999", "--package", "nosuchpkg", "--fixed-version", "1.0"]));
    assert!(package.contains("no stored scan report lists package nosuchpkg"), "{package}");
    let family = one_line_error(&run(&["--cve", "CVE-2026-9999", "--family", "nosuch"]));
    assert!(family.contains("family nosuch"), "{family}");
    // A family whose images nothing runs: nothing to roll out.
    let lonely = image(&e.account, "9.0.0");
    aws(
        &e.account,
        "ec2",
        "create_tags",
        json!({"Resources": [lonely], "Tags": [{"Key": "Application", "Value": "batch"}]}),
    );
    let idle = one_line_error(&run(&["--cve", "CVE-2026-9999", "--family", "batch"]));
    assert!(idle.contains("family batch: no Auto Scaling group or instance runs its images"), "{idle}");
    let malformed = one_line_error(&run(&["--cve", "openssl"]));
    assert!(malformed.contains("not a CVE id"), "{malformed}");
    let nothing = one_line_error(&run(&["--resume"]));
    assert!(nothing.contains("interrupted emergency run"), "{nothing}");
    assert_eq!(web_images(&e.account).len(), 1);
    assert_eq!(live_pipeline_instances(&e.account), 0);
}
