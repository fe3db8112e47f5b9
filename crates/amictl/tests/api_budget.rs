//! Within the account's API budget: requests paced below EC2's token buckets (`--api-share`),
//! launch-permission readings kept in the journal and validated by CloudTrail's event history,
//! and the re-check right before a change that no kept reading stands in for.
//!
//! Its own test binary: the tests change emulator-wide settings (rate limits, CloudTrail's
//! delivery delay) and read emulator-wide request rates, so they run one at a time.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The tests of this binary take turns: they change settings every account shares.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// CloudTrail delivers an event `seconds` after the call (emulator-wide).
fn delivery_delay(seconds: u64) {
    emulator().control.post("/_amictl/cloudtrail/delay", &json!({ "seconds": seconds })).unwrap();
}

/// `amictl usage --output json -v` in `account` (us-east-1) with `journal` and `args`: the
/// document, stderr, and the requests amictl says it sent per action.
fn usage(account: &str, journal: &std::path::Path, args: &[&str]) -> (Value, String, Value) {
    let out = amictl_in(account)
        .args(["usage", "--output", "json", "-v", "--region", "us-east-1"])
        .env("AMICTL_JOURNAL", journal)
        .args(args)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (json(&out), stderr.clone(), sent(&stderr))
}

/// `requests: EC2.DescribeImageAttribute: 12 sent, 0 throttled` lines, as {action: sent}.
fn sent(stderr: &str) -> Value {
    let mut out = serde_json::Map::new();
    for line in stderr.lines().filter_map(|l| l.strip_prefix("requests: ")) {
        if let Some((action, rest)) = line.split_once(": ") {
            let n: u64 = rest.split(' ').next().unwrap().parse().unwrap();
            out.insert(action.to_string(), json!(n));
        }
    }
    Value::Object(out)
}

fn reads(sent: &Value) -> u64 {
    sent["EC2.DescribeImageAttribute"].as_u64().unwrap_or(0)
}

/// Images of the usage document that nothing uses.
fn unused(doc: &Value) -> Vec<String> {
    let images = doc["images"].as_array().unwrap();
    let mut out: Vec<String> = images
        .iter()
        .filter(|i| !i["in_use"].as_bool().unwrap() && i["state"] == "available")
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn in_use(doc: &Value, image: &str) -> bool {
    doc["images"].as_array().unwrap().iter().find(|i| i["image_id"] == image).unwrap()["in_use"].as_bool().unwrap()
}

fn share(account: &str, image: &str, with: &str) {
    aws(
        account,
        "ec2",
        "modify_image_attribute",
        json!({"ImageId": image, "LaunchPermission": {"Add": [{"UserId": with}]}}),
    );
}

#[test]
fn a_sharing_change_after_the_cached_reading_is_seen_and_only_it_is_read_again() {
    let _turn = turn();
    delivery_delay(0);
    let (account, _) = demo_account_with(&["us-east-1"], 40);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let (first, _, first_sent) = usage(&account, &journal, &["--sharing-delivery-delay", "1s"]);
    let candidates = unused(&first);
    assert!(reads(&first_sent) >= 30, "every image's sharing read: {first_sent}");
    let image = candidates.first().expect("an unused image").clone();

    // Older than the delivery delay amictl is told; then the change, delivered at once.
    std::thread::sleep(Duration::from_secs(2));
    share(&account, &image, "210987654321");
    let (second, stderr, second_sent) = usage(&account, &journal, &["--sharing-delivery-delay", "1s"]);
    assert!(in_use(&second, &image), "the change is seen: {stderr}");
    assert!(second_sent["CloudTrail.LookupEvents"].as_u64().unwrap_or(0) >= 2, "{second_sent}");
    // Read again: the changed image, and the images the demo estate's own sharing calls name.
    assert!(reads(&second_sent) < reads(&first_sent) / 2, "{first_sent} then {second_sent}");
    assert!(stderr.contains("validated by event history to"), "{stderr}");
    // Every other verdict is what a reading from scratch says.
    let (scratch, _, scratch_sent) = usage(&account, &journal, &["--no-sharing-cache"]);
    assert_eq!(reads(&scratch_sent), reads(&first_sent));
    assert_eq!(second["images"], scratch["images"]);
}

#[test]
fn a_change_within_the_delivery_delay_is_seen_because_recent_readings_are_read_again() {
    let _turn = turn();
    // CloudTrail has not delivered the change yet when amictl asks.
    delivery_delay(3600);
    let (account, _) = demo_account_with(&["us-east-1"], 40);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let (first, _, first_sent) = usage(&account, &journal, &[]);
    let image = unused(&first).first().expect("an unused image").clone();
    share(&account, &image, "210987654321");

    // The default delivery delay (15 minutes): the first run's readings are that recent.
    let (second, stderr, second_sent) = usage(&account, &journal, &[]);
    delivery_delay(0);
    assert!(in_use(&second, &image), "{stderr}");
    assert_eq!(reads(&second_sent), reads(&first_sent), "every recent reading is read again");
}

#[test]
fn a_deletion_after_a_cached_reading_reads_the_image_again_right_before_it_acts() {
    let _turn = turn();
    let (account, _) = demo_account_with(&["us-east-1"], 40);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let plan = |extra: &[&str]| {
        amictl_in(&account)
            .args(["retire", "--region", "us-east-1", "--keep", "0", "--min-age", "1d", "--now"])
            .args(["--journal", journal.to_str().unwrap(), "--sharing-delivery-delay", "1s"])
            .args(extra)
            .output()
            .unwrap()
    };
    delivery_delay(0);
    let first = plan(&["--output", "json"]);
    assert_code(&first, 0);
    let image = deregister_targets(&json(&first)).first().expect("an image to retire").clone();

    // Shared after the reading, and the event not delivered: the kept reading still stands for
    // the plan, which retires the image; the re-check before the deregistration must see it.
    std::thread::sleep(Duration::from_secs(2));
    delivery_delay(3600);
    share(&account, &image, "210987654321");
    let out = plan(&["--apply", "--yes", "--output", "json"]);
    delivery_delay(0);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("sharing evidence:"), "the plan used the journal's readings: {stderr}");
    let report = json(&out);
    let steps = report["result"]["outcomes"].as_array().unwrap();
    let step = steps
        .iter()
        .find(|o| o["kind"] == "deregister" && o["target"] == image.as_str())
        .unwrap_or_else(|| panic!("{image} was planned from the kept reading: {report}"));
    assert_eq!(step["status"], "aborted", "{step}");
    assert!(step["detail"].as_str().unwrap().contains("is shared now"), "{step}");
    assert_code(&out, 1);
    let still = aws(&account, "ec2", "describe_images", json!({"ImageIds": [image.clone()]}))["Images"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(still, 1, "{image} is still there");
}

#[test]
fn without_lookup_events_permission_everything_is_read_afresh_and_said_once() {
    let _turn = turn();
    delivery_delay(0);
    let (account, _) = demo_account_with(&["us-east-1"], 40);
    emulator().control.post("/_amictl/cloudtrail/deny", &json!({"account": account, "deny": true})).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let (first, _, first_sent) = usage(&account, &journal, &["--sharing-delivery-delay", "1s"]);
    let image = unused(&first).first().expect("an unused image").clone();
    std::thread::sleep(Duration::from_secs(2));
    share(&account, &image, "210987654321");
    let (second, stderr, second_sent) = usage(&account, &journal, &["--sharing-delivery-delay", "1s"]);
    assert!(in_use(&second, &image));
    assert_eq!(reads(&second_sent), reads(&first_sent), "everything read afresh");
    assert_eq!(stderr.matches("event history could not be read").count(), 1, "said once: {stderr}");
    assert!(stderr.contains("AccessDeniedException"), "{stderr}");
}

#[test]
fn api_share_bounds_the_request_rate_per_action_as_the_emulator_measures_it() {
    let _turn = turn();
    let (account, _) = demo_account_with(&["us-east-1"], 160);
    let limits = |on: bool| emulator().control.post("/_amictl/aws-rate-limits", &json!({ "enabled": on })).unwrap();
    limits(true);
    emulator().control.reset_stats().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = amictl_in(&account)
        .args(["usage", "--output", "json", "--region", "us-east-1", "--api-share", "0.5", "--no-sharing-cache"])
        .env("AMICTL_JOURNAL", dir.path().join("j.db"))
        .output()
        .unwrap();
    let stats = emulator().control.stats().unwrap();
    limits(false);
    assert_code(&out, 0);
    let attribute_reads = stats["by_action"]["DescribeImageAttribute"].as_u64().unwrap();
    assert!(attribute_reads >= 150, "{stats}");
    // Half of DescribeImageAttribute's 20 tokens a second, over any ten seconds.
    let rate = stats["sustained_rate_by_action"]["DescribeImageAttribute"].as_f64().unwrap();
    eprintln!("--api-share 0.5: {attribute_reads} DescribeImageAttribute, busiest 10 s {rate} a second");
    assert!(rate <= 10.0, "{rate} a second: {stats}");
    assert_eq!(stats["throttled"], 0, "{stats}");
}

#[test]
fn a_plan_whose_evidence_is_incomplete_exits_2_in_every_format() {
    let _turn = turn();
    let (account, _) = demo_account_with(&["us-east-1"], 0);
    emulator().control.throttle_in(&account, &["DescribeImageAttribute"], 1.0).unwrap();
    for output in ["json", "table"] {
        let out = amictl_in(&account)
            .args(["retire", "--region", "us-east-1", "--keep", "0", "--min-age", "1d", "--now", "--output", output])
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap();
        assert_code(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("incomplete") && stderr.contains("launch permissions"), "{output}: {stderr}");
        if output == "json" {
            let plan = json(&out);
            assert!(deregister_targets(&plan).is_empty(), "nothing retired on incomplete evidence: {plan}");
        }
    }
    emulator().control.throttle_in(&account, &["DescribeImageAttribute"], 0.0).unwrap();
}
