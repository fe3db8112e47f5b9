//! Throttling and pagination are weather: with 30 % of requests throttled, and with every list
//! cut into pages of 3, amictl reaches exactly the answers it gives on a calm day.
//!
//! One test function: the emulator of this binary is throttled and paginated as a whole, and
//! the calm answers are taken first.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn audit_findings(account: &str) -> (Option<i32>, BTreeSet<String>) {
    let out = amictl_in(account)
        .args(["audit", "--output", "json", "--region", REGIONS[0], "--region", REGIONS[1]])
        .output()
        .unwrap();
    let doc = json(&out);
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {} {}", f["rule"], f["region"], f["resource"]))
        .collect();
    (out.status.code(), f)
}

fn retire_now(account: &str, dir: &std::path::Path) -> Value {
    let out = amictl_in(account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--keep-tag", "DoNotDelete", "--orphans", "--now"])
        .args(["--apply", "--yes", "--output", "json", "--region", REGIONS[0], "--region", REGIONS[1], "--journal"])
        .arg(dir.join("j.db"))
        .output()
        .unwrap();
    assert_code(&out, 0);
    json(&out)
}

/// Names of the images left, by region.
fn names_left(account: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in REGIONS {
        let imgs = emulator()
            .control
            .aws(account, r, "ec2", "describe_images", json!({"Owners": ["self"], "IncludeDisabled": true}))
            .unwrap();
        out.extend(imgs["Images"].as_array().unwrap().iter().map(|i| format!("{r} {}", i["Name"].as_str().unwrap())));
    }
    out
}

fn done_count(doc: &Value) -> usize {
    doc["result"]["outcomes"].as_array().unwrap().iter().filter(|o| o["status"] == "done").count()
}

#[test]
fn throttled_and_paginated_runs_reach_the_calm_answers() {
    let e = emulator();
    let (calm, _) = demo_account_with(&REGIONS, 120);
    let (stormy, _) = demo_account_with(&REGIONS, 120);
    let (calm_audit_code, calm_findings) = audit_findings(&calm);
    let dir = tempfile::tempdir().unwrap();
    let calm_doc = retire_now(&calm, dir.path());
    assert!(done_count(&calm_doc) > 10, "the estate has work: {}", done_count(&calm_doc));

    e.control.page_size(3).unwrap();
    e.control.throttle(0.3, 7).unwrap();
    let before = e.control.stats().unwrap();
    let (stormy_code, stormy_findings) = audit_findings(&stormy);
    // The same findings but for the resource ids, which differ between the two accounts.
    let strip = |s: &BTreeSet<String>| s.iter().map(|f| f.rsplit_once(' ').unwrap().0.to_string()).collect::<Vec<_>>();
    assert_eq!(stormy_code, calm_audit_code);
    assert_eq!(strip(&stormy_findings), strip(&calm_findings));
    let stormy_dir = tempfile::tempdir().unwrap();
    let stormy_doc = retire_now(&stormy, stormy_dir.path());
    let after = e.control.stats().unwrap();
    e.control.throttle(0.0, 0).unwrap();
    e.control.page_size(0).unwrap();

    let throttled = after["throttled"].as_u64().unwrap() - before["throttled"].as_u64().unwrap();
    assert!(throttled > 50, "the emulator throttled only {throttled} requests");
    assert_eq!(done_count(&stormy_doc), done_count(&calm_doc));
    assert_eq!(names_left(&stormy), names_left(&calm), "the same images are left");
}
