//! Bake, validate and scan against the emulator: lineage and versions, SSM outcomes set per
//! instance, HTTP checks against a server on 127.0.0.1, failures and `kill -9` at every step
//! leaving no amictl instance running after the next run, and the promotion gate.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";
const PROFILE: &str = "amictl-ssm";

/// A fresh account with an SSM instance profile; returns it.
fn account() -> String {
    let account = fresh_account();
    emulator()
        .control
        .aws(&account, R, "iam", "create_instance_profile", json!({"InstanceProfileName": PROFILE}))
        .unwrap();
    account
}

/// An image of `family` at `version` (optionally validated); its id.
fn image(account: &str, family: &str, version: &str, validated: bool) -> String {
    let mut tags = vec![("Application", family), ("Version", version)];
    if validated {
        tags.push(("amictl:validation", "passed"));
    }
    image_from_instance(account, &format!("{family}-{version}"), &tags)
}

fn images(account: &str) -> Vec<Value> {
    let out = emulator().control.aws(account, R, "ec2", "describe_images", json!({"Owners": ["self"]})).unwrap();
    out["Images"].as_array().unwrap().clone()
}

fn tags_of(v: &Value) -> std::collections::BTreeMap<String, String> {
    v["Tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn image_tags(account: &str, id: &str) -> std::collections::BTreeMap<String, String> {
    tags_of(images(account).iter().find(|i| i["ImageId"] == id).unwrap_or_else(|| panic!("no image {id}")))
}

/// Instances amictl launched that are not terminated (or terminating).
fn live_pipeline_instances(account: &str) -> Vec<String> {
    let out = emulator()
        .control
        .aws(
            account,
            R,
            "ec2",
            "describe_instances",
            json!({"Filters": [{"Name": "tag-key", "Values": ["amictl:run-id"]},
                               {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]}),
        )
        .unwrap();
    out["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().iter())
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

/// Every pipeline instance the account ever had.
fn all_pipeline_instances(account: &str) -> usize {
    let out = emulator()
        .control
        .aws(
            account,
            R,
            "ec2",
            "describe_instances",
            json!({"Filters": [{"Name": "tag-key", "Values": ["amictl:run-id"]}]}),
        )
        .unwrap();
    out["Reservations"].as_array().unwrap().iter().map(|r| r["Instances"].as_array().unwrap().len()).sum()
}

fn outcome(account: &str, rule: Value) {
    let mut rule = rule;
    rule["account"] = json!(account);
    emulator().control.ssm_outcome(rule).unwrap();
}

fn journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db").display().to_string();
    (dir, path)
}

fn bake_args<'a>(journal: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["bake", "--family", "web", "--base-family", "web", "--instance-profile", PROFILE, "--journal", journal];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bake_from_the_newest_validated_image_bumps_the_version_and_records_lineage() {
    let account = account();
    let old = image(&account, "web", "1.4.0", true);
    let _unvalidated = image(&account, "web", "1.5.0", false);
    let (_dir, j) = journal();
    let out = amictl_in(&account)
        .args(bake_args(&j, &["--cve", "CVE-2024-3094", "--cve", "CVE-2024-6387", "--output", "json"]))
        .output()
        .unwrap();
    assert_code(&out, 0);
    let baked = json(&out);
    assert_eq!(baked["schema"], "amictl.bake/v1");
    assert_eq!(baked["source_ami"], old.as_str(), "the newest *validated* image is the base");
    assert_eq!(baked["version"], "1.5.1", "bumped from the family's newest version");
    assert_eq!(baked["name"], "web-1.5.1");
    let id = baked["image_id"].as_str().unwrap();
    let tags = image_tags(&account, id);
    assert_eq!(tags["Application"], "web");
    assert_eq!(tags["Version"], "1.5.1");
    assert_eq!(tags["SourceAMI"], old);
    assert_eq!(tags["CVE"], "CVE-2024-3094,CVE-2024-6387");
    assert_eq!(tags["BuiltBy"], "amictl");
    assert_eq!(tags["amictl:run-id"], baked["run_id"].to_string());
    assert_eq!(tags["PatchDate"].len(), 10, "{tags:?}");

    // The snapshots carry the lineage too.
    let snaps = emulator()
        .control
        .aws(
            &account,
            R,
            "ec2",
            "describe_snapshots",
            json!({"Filters": [{"Name": "tag:SourceImage", "Values": [id]}]}),
        )
        .unwrap();
    assert_eq!(snaps["Snapshots"].as_array().unwrap().len(), 1, "{snaps}");

    // The default preset went to SSM as a shell script for every package manager.
    let commands = emulator().control.aws(&account, R, "ssm", "list_commands", json!({})).unwrap();
    let sent = commands["Commands"].to_string();
    assert!(sent.contains("dnf -y upgrade --security") && sent.contains("zypper"), "{sent}");
    assert!(live_pipeline_instances(&account).is_empty(), "the builder is terminated");
    assert_eq!(all_pipeline_instances(&account), 1);

    // The builder ran IMDSv2-only from the base.
    let builder = baked["builder"].as_str().unwrap();
    let d =
        emulator().control.aws(&account, R, "ec2", "describe_instances", json!({"InstanceIds": [builder]})).unwrap();
    let i = &d["Reservations"][0]["Instances"][0];
    assert_eq!(i["ImageId"], old.as_str());
    assert_eq!(i["MetadataOptions"]["HttpTokens"], "required");
    assert_eq!(tags_of(i)["amictl:role"], "builder");
}

#[test]
fn bake_copies_and_shares_and_a_second_bake_bumps_again() {
    let account = account();
    let base = image(&account, "web", "2.0.0", true);
    let (_dir, j) = journal();
    let out = amictl_in(&account)
        .args(bake_args(
            &j,
            &[
                "--base",
                &base,
                "--copy-to",
                "eu-west-1",
                "--share-with",
                "210987654321",
                "--bump",
                "minor",
                "-o",
                "json",
            ],
        ))
        .output();
    // --base and --base-family together are refused by the argument parser.
    let out = out.unwrap();
    assert_code(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = amictl_in(&account)
        .args([
            "bake",
            "--family",
            "web",
            "--base",
            &base,
            "--instance-profile",
            PROFILE,
            "--journal",
            &j,
            "--copy-to",
            "eu-west-1",
            "--share-with",
            "210987654321",
            "--bump",
            "minor",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let baked = json(&out);
    assert_eq!(baked["version"], "2.1.0");
    let regions = baked["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1]["region"], "eu-west-1");
    let copy = regions[1]["image_id"].as_str().unwrap();
    let there =
        emulator().control.aws(&account, "eu-west-1", "ec2", "describe_images", json!({"ImageIds": [copy]})).unwrap();
    assert_eq!(tags_of(&there["Images"][0])["SourceAMI"], base, "the copy carries the lineage");
    for (region, id) in [(R, baked["image_id"].as_str().unwrap()), ("eu-west-1", copy)] {
        let perms = emulator()
            .control
            .aws(
                &account,
                region,
                "ec2",
                "describe_image_attribute",
                json!({"ImageId": id, "Attribute": "launchPermission"}),
            )
            .unwrap();
        assert_eq!(perms["LaunchPermissions"][0]["UserId"], "210987654321", "{region}: {perms}");
    }
    let again = amictl_in(&account)
        .args([
            "bake",
            "--family",
            "web",
            "--base",
            &base,
            "--instance-profile",
            PROFILE,
            "--journal",
            &j,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_code(&again, 0);
    assert_eq!(json(&again)["version"], "2.1.1");
}

#[test]
fn a_failed_patch_fails_the_bake_and_terminates_the_builder() {
    let account = account();
    image(&account, "web", "1.0.0", true);
    outcome(
        &account,
        json!({"command_contains": "dnf", "status": "Failed", "exit_code": 100,
                              "stdout": "Last metadata expiration check\nError: Failed to download metadata for repo", "polls": 2}),
    );
    let (_dir, j) = journal();
    let out = amictl_in(&account).args(bake_args(&j, &[])).output().unwrap();
    let e = the_error(&out);
    assert!(e.contains("patching the builder failed") && e.contains("exit 100"), "{e}");
    assert!(e.contains("Failed to download metadata"), "the output's last line is shown: {e}");
    assert!(live_pipeline_instances(&account).is_empty());
    assert_eq!(images(&account).len(), 1, "no image was made");
    let h = amictl().args(["history", "--journal", &j, "-o", "json"]).output().unwrap();
    assert_eq!(json(&h)["runs"][0]["status"], "failed");
}

#[test]
fn a_failed_create_image_terminates_the_builder() {
    let account = account();
    image(&account, "web", "1.0.0", true);
    emulator().control.throttle_in(&account, &["CreateImage"], 1.0).unwrap();
    let (_dir, j) = journal();
    let out = amictl_in(&account).env("AWS_MAX_ATTEMPTS", "2").args(bake_args(&j, &[])).output().unwrap();
    emulator().control.throttle_in(&account, &[], 0.0).unwrap();
    let e = the_error(&out);
    assert!(e.contains("CreateImage"), "{e}");
    assert!(live_pipeline_instances(&account).is_empty());
    assert_eq!(all_pipeline_instances(&account), 1);
}

/// `amictl bake` in `account`, started while the answers of `action` are held back; returns
/// once one is held (the run is waiting for it).
fn bake_held_at(account: &str, action: &str, dir: &std::path::Path, journal: &str) -> std::process::Child {
    spawn_held(account, action, dir, &bake_args(journal, &[]))
}

/// `amictl bake` killed with SIGKILL while the answer of `action` is held back; then a second
/// bake. Returns the account, the second bake's output and the image count before.
fn killed_at(action: &str) -> (String, std::process::Output, usize, tempfile::TempDir, String) {
    let account = account();
    image(&account, "web", "1.0.0", true);
    let before = images(&account).len();
    let (dir, j) = journal();
    let mut child = bake_held_at(&account, action, dir.path(), &j);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    let out = amictl_in(&account).args(bake_args(&j, &["-o", "json"])).output().unwrap();
    assert!(
        live_pipeline_instances(&account).is_empty(),
        "{action}: {:?} still running",
        live_pipeline_instances(&account)
    );
    (account, out, before, dir, j)
}

#[test]
fn a_bake_killed_at_any_step_leaves_nothing_running_after_the_next_run_and_no_second_image() {
    // One action per step: launch, wait for SSM, send the patch, follow it, create the image,
    // tag its snapshots, terminate the builder.
    for action in [
        "RunInstances",
        "DescribeInstanceInformation",
        "SendCommand",
        "ListCommandInvocations",
        "CreateImage",
        "CreateTags",
        "TerminateInstances",
    ] {
        let (account, out, before, _dir, j) = killed_at(action);
        assert_code(&out, 0);
        let baked = json(&out);
        let new: Vec<Value> = images(&account).into_iter().filter(|i| tags_of(i).contains_key("BuiltBy")).collect();
        assert_eq!(new.len(), 1, "{action}: exactly one baked image, not {new:?}");
        assert_eq!(images(&account).len(), before + 1, "{action}");
        let _ = &out;
        assert_eq!(new[0]["ImageId"], baked["image_id"], "{action}");
        let adopted = !baked["adopted_from_run"].is_null();
        let image_made_before_kill = matches!(action, "CreateImage" | "CreateTags" | "TerminateInstances");
        assert_eq!(adopted, image_made_before_kill, "{action}: the second bake adopts the first one's image: {baked}");
        // The adopted image is finished: the next bake makes a new one.
        let next = amictl_in(&account).args(bake_args(&j, &["-o", "json"])).output().unwrap();
        assert_code(&next, 0);
        let next = json(&next);
        assert!(next["adopted_from_run"].is_null(), "{action}: adopted again: {next}");
        assert_ne!(next["version"], baked["version"], "{action}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if action != "TerminateInstances" {
            // The killed run's builder was still running: the second run says it terminates it.
            assert!(stderr.contains("left behind") && stderr.contains("is gone"), "{action}: {stderr}");
        }
    }
}

#[test]
fn ctrl_c_terminates_the_builder_and_records_the_run_interrupted() {
    let account = account();
    image(&account, "web", "1.0.0", true);
    let (dir, j) = journal();
    let mut child = bake_held_at(&account, "ListCommandInvocations", dir.path(), &j);
    // SAFETY: kill(2) sends SIGINT to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(live_pipeline_instances(&account).is_empty(), "the builder is terminated on Ctrl-C");
    let h = amictl().args(["history", "--journal", &j, "-o", "json"]).output().unwrap();
    assert_eq!(json(&h)["runs"][0]["status"], "interrupted");
}

/// A tiny HTTP server on 127.0.0.1: `/health` answers 200 "ok", anything else 503.
fn health_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /health ") {
                ("200 OK", "ok")
            } else {
                ("503 Service Unavailable", "starting")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `amictl COMMAND IMAGE` (validate or scan) with the SSM instance profile, as JSON.
fn launching(command: &str, account: &str, journal: &str, image: &str, extra: &[&str]) -> std::process::Output {
    amictl_in(account)
        .args([command, image, "--instance-profile", PROFILE, "--journal", journal, "-o", "json"])
        .args(extra)
        .output()
        .unwrap()
}

fn validate(account: &str, journal: &str, image: &str, extra: &[&str]) -> std::process::Output {
    launching("validate", account, journal, image, extra)
}

#[test]
fn validate_passes_and_fails_on_loopback_http_and_ssm_exit_codes() {
    let account = account();
    let ami = image(&account, "web", "1.0.0", false);
    let port = health_server();
    let (_dir, j) = journal();
    let good = format!("http://127.0.0.1:{port}/health");
    let out = validate(
        &account,
        &j,
        &ami,
        &["--check-command", "systemctl is-active nginx", "--http-url", &good, "--http-body", "ok"],
    );
    assert_code(&out, 0);
    let v = json(&out);
    let kinds: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["status-checks", "command", "http"]);
    assert_eq!(image_tags(&account, &ami)["amictl:validation"], "passed");
    assert!(image_tags(&account, &ami).contains_key("amictl:validated-at"));

    // The same command now exits 3 on the validator.
    outcome(
        &account,
        json!({"command_contains": "nginx", "image_id": ami, "status": "Failed", "exit_code": 3,
                              "stdout": "inactive"}),
    );
    let out = validate(&account, &j, &ami, &["--check-command", "systemctl is-active nginx"]);
    assert_code(&out, 1);
    let v = json(&out);
    assert_eq!(v["passed"], false);
    let failed = v["checks"].as_array().unwrap().iter().find(|c| c["passed"] == false).unwrap();
    assert!(failed["detail"].as_str().unwrap().contains("exit 3"), "{failed}");
    assert_eq!(image_tags(&account, &ami)["amictl:validation"], "failed");

    // A wrong answer is a failed check, not an error.
    let bad = format!("http://127.0.0.1:{port}/ready");
    let out = validate(&account, &j, &ami, &["--http-url", &bad, "--http-retries", "1"]);
    assert_code(&out, 1);
    assert!(json(&out).to_string().contains("status 503, expected 200"));
    assert!(live_pipeline_instances(&account).is_empty());
}

#[test]
fn bad_input_is_one_line_exit_2_and_leaves_nothing_running() {
    let account = account();
    let ami = image(&account, "web", "1.0.0", true);
    let (_dir, j) = journal();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            ["bake", "--family", "web", "--base", "ami-0000000000000dead", "--journal", &j].map(String::from).to_vec(),
            "base AMI ami-0000000000000dead not found",
        ),
        (
            ["bake", "--family", "web", "--base-family", "nosuch", "--journal", &j].map(String::from).to_vec(),
            "family nosuch",
        ),
        (
            ["bake", "--family", "web", "--base-filter", "name=nothing-like-this-*,owner=self", "--journal", &j]
                .map(String::from)
                .to_vec(),
            "an available AMI named \"nothing-like-this-*\" owned by self not found",
        ),
        (
            ["bake", "--family", "web", "--base-family", "web", "--instance-type", "x9.huge", "--journal", &j]
                .map(String::from)
                .to_vec(),
            "instance type x9.huge is not offered in us-east-1",
        ),
        (
            vec![
                "validate".into(),
                ami.clone(),
                "--http-url".into(),
                format!("http://127.0.0.1:{closed}/health"),
                "--http-retries".into(),
                "1".into(),
                "--journal".into(),
                j.clone(),
            ],
            "cannot reach the check URL",
        ),
        (
            vec!["validate".into(), ami.clone(), "--no-status-checks".into(), "--journal".into(), j.clone()],
            "nothing to validate",
        ),
        (
            vec!["scan".into(), "ami-0000000000000dead".into(), "--journal".into(), j.clone()],
            "AMI ami-0000000000000dead not found",
        ),
        (
            vec![
                "bake".into(),
                "--family".into(),
                "web".into(),
                "--base".into(),
                ami.clone(),
                "--cve".into(),
                "heartbleed".into(),
            ],
            "not a CVE id",
        ),
    ];
    for (args, needle) in cases {
        let out = amictl_in(&account).args(&args).output().unwrap();
        // Only the unreachable URL is found out after a validator ran (its progress is shown).
        let e = if needle == "cannot reach the check URL" { the_error(&out) } else { one_line_error(&out) };
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert!(live_pipeline_instances(&account).is_empty());
    assert_eq!(all_pipeline_instances(&account), 1, "only the unreachable-URL validation launched");
}

#[test]
fn a_builder_that_never_registers_with_ssm_is_an_error_not_a_wait_forever() {
    let account = account();
    image(&account, "web", "1.0.0", true);
    let (_dir, j) = journal();
    // No instance profile: the agent cannot register.
    let out = amictl_in(&account)
        .args(["bake", "--family", "web", "--base-family", "web", "--ssm-timeout", "2s", "--journal", &j])
        .output()
        .unwrap();
    let e = the_error(&out);
    assert!(e.contains("never registered with Systems Manager within 2s"), "{e}");
    assert!(live_pipeline_instances(&account).is_empty());
}

const TRIVY: &str = r#"{"SchemaVersion": 2, "ArtifactName": "/", "Results": [{"Target": "amazon 2023",
  "Vulnerabilities": [{"VulnerabilityID": "CVE-2024-0001", "PkgName": "openssl", "InstalledVersion": "3.0.8",
  "FixedVersion": "3.0.13", "Severity": "HIGH"}, {"VulnerabilityID": "CVE-2024-0002", "PkgName": "curl",
  "InstalledVersion": "8.1", "Severity": "LOW"}]}]}"#;

const GRYPE: &str = r#"{"matches": [{"vulnerability": {"id": "CVE-2023-4863", "severity": "Critical",
  "fix": {"versions": ["1.3.2"]}}, "artifact": {"name": "libwebp", "version": "1.2.4"}}], "descriptor": {"name": "grype"}}"#;

fn scan(account: &str, journal: &str, image: &str, extra: &[&str]) -> std::process::Output {
    launching("scan", account, journal, image, extra)
}

#[test]
fn scan_gates_on_severity_from_trivy_and_grype_reports() {
    let account = account();
    let ami = image(&account, "web", "1.0.0", true);
    let (_dir, j) = journal();
    outcome(&account, json!({"command_contains": "trivy", "image_id": ami, "stdout": TRIVY, "times": 2, "polls": 1}));
    let out = scan(&account, &j, &ami, &["--fail-on", "critical"]);
    assert_code(&out, 0);
    let s = json(&out);
    assert_eq!(s["report"]["format"], "trivy");
    assert_eq!(s["report"]["findings"].as_array().unwrap().len(), 2);
    assert_eq!(image_tags(&account, &ami)["amictl:scan"], "passed");
    let out = scan(&account, &j, &ami, &["--fail-on", "high"]);
    assert_code(&out, 1);
    assert_eq!(json(&out)["blocking"][0]["id"], "CVE-2024-0001");
    assert_eq!(image_tags(&account, &ami)["amictl:scan"], "failed");
    assert!(image_tags(&account, &ami).contains_key("amictl:scanned-at"));

    // A failed scan blocks promotion, whatever validation said.
    let promote = amictl_in(&account)
        .args(["channel", "promote", "--family", "web", "--channel", "prod", "--image", &ami, "--journal", &j])
        .output()
        .unwrap();
    assert!(one_line_error(&promote).contains("failed its security scan"));

    outcome(&account, json!({"command_contains": "grype", "image_id": ami, "stdout": GRYPE}));
    let out = scan(&account, &j, &ami, &["--scanner", "grype", "--fail-on", "critical"]);
    assert_code(&out, 1);
    assert_eq!(json(&out)["blocking"][0]["package"], "libwebp");

    // The journal keeps the last report.
    let shown = amictl().args(["scan", "--show", &ami, "--journal", &j, "-o", "json"]).output().unwrap();
    assert_code(&shown, 0);
    let shown = json(&shown);
    assert_eq!(shown["verdict"], "failed");
    assert_eq!(shown["report"]["format"], "grype");
    assert!(live_pipeline_instances(&account).is_empty());
}

#[test]
fn a_report_that_does_not_parse_is_an_error_never_a_pass() {
    let account = account();
    let ami = image(&account, "web", "1.0.0", true);
    let (_dir, j) = journal();
    outcome(
        &account,
        json!({"command_contains": "trivy", "image_id": ami, "stdout": "FATAL: failed to initialize the DB"}),
    );
    let out = scan(&account, &j, &ami, &[]);
    let e = the_error(&out);
    assert!(e.contains("the trivy report is not valid JSON") && e.contains("FATAL: failed"), "{e}");
    assert!(!image_tags(&account, &ami).contains_key("amictl:scan"), "no verdict recorded");
    // A report as long as what SSM keeps may have lost findings at the cut: an error.
    let long = format!(r#"{{"SchemaVersion": 2, "Results": [], "pad": "{}"}}"#, "x".repeat(30_000));
    outcome(&account, json!({"command_contains": "trivy", "image_id": ami, "stdout": long}));
    let e = the_error(&scan(&account, &j, &ami, &[]));
    assert!(e.contains("limit of 24000 characters"), "{e}");
    // A scanner that is not installed fails its invocation: an error, too.
    outcome(
        &account,
        json!({"command_contains": "trivy", "image_id": ami, "status": "Failed", "exit_code": 127,
                              "stderr": "trivy: command not found"}),
    );
    let e = the_error(&scan(&account, &j, &ami, &[]));
    assert!(e.contains("exit 127"), "{e}");
    assert!(live_pipeline_instances(&account).is_empty());
}

#[test]
fn promotion_needs_both_a_passed_validation_and_a_passed_scan() {
    let account = account();
    let ami = image(&account, "web", "1.0.0", true);
    let (_dir, j) = journal();
    let promote = || {
        amictl_in(&account)
            .args(["channel", "promote", "--family", "web", "--channel", "prod", "--image", &ami, "--journal", &j])
            .output()
            .unwrap()
    };
    assert!(one_line_error(&promote()).contains("has not been scanned"));
    outcome(&account, json!({"command_contains": "trivy", "image_id": ami, "stdout": r#"{"SchemaVersion": 2}"#}));
    assert_code(&scan(&account, &j, &ami, &[]), 0);
    assert_code(&promote(), 0);
}
