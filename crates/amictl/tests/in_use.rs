//! In-use evidence for every kind of reference, on the demo estate in two regions.

mod common;

use common::*;
use serde_json::Value;

fn by_id<'a>(rows: &'a Value, region: &str, id: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["image_id"] == id && r["region"] == region)
        .unwrap_or_else(|| panic!("{id} not reported in {region}"))
}

/// The image rows of a `usage --output json` document.
fn usage_rows(out: &std::process::Output) -> Value {
    let doc = json(out);
    assert_eq!(doc["schema"], "amictl.usage/v1");
    doc["images"].clone()
}

fn evidence(row: &Value) -> Vec<String> {
    row["in_use_by"].as_array().unwrap().iter().map(|r| r["evidence"].as_str().unwrap().to_string()).collect()
}

fn assert_evidence(row: &Value, expected: &str) {
    let ev = evidence(row);
    assert!(ev.iter().any(|e| e == expected), "{} ({}): expected {expected:?} in {ev:?}", row["image_id"], row["name"]);
}

#[test]
fn every_kind_of_reference_is_found_in_both_regions() {
    let (account, ids) = demo_account();
    let out = amictl_in(&account)
        .args(["usage", "--region", "us-east-1", "--region", "eu-west-1", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = usage_rows(&out);

    for region in ["us-east-1", "eu-west-1"] {
        let id = |name: &str| ids[region][name].as_str().unwrap_or_else(|| panic!("no {name}")).to_string();
        let row = |name: &str| by_id(&rows, region, &id(name));
        assert!(rows.as_array().unwrap().iter().all(|r| r["account"] == account.as_str()));

        // Instances: running and stopped are use; terminated is history.
        assert_evidence(row("web-1.6.0"), &format!("instance {} (running)", id("web-running")));
        assert_evidence(row("api-1.2.0"), &format!("instance {} (stopped)", id("api-stopped")));
        let w1 = row("worker-1.1.0");
        assert_eq!(w1["in_use"], false, "a terminated instance is not use: {w1}");
        assert!(w1["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["evidence"] == format!("instance {} (terminated)", id("worker-terminated"))));

        // Launch templates: default ≠ latest, and every version counts.
        let web_lt = id("web-lt");
        assert_evidence(row("web-1.5.0"), &format!("launch template {web_lt}:5 ($Latest)"));
        assert_evidence(row("web-1.3.0"), &format!("launch template {web_lt}:3 ($Default)"));
        assert_evidence(row("web-1.2.0"), &format!("launch template {web_lt}:2"));

        // ASGs through $Latest at desired 0, $Default, a numbered version, a mixed instances policy.
        assert_evidence(row("web-1.5.0"), &format!("asg web-prod via {web_lt}:$Latest (desired 0)"));
        assert!(!evidence(row("web-1.3.0")).iter().any(|e| e.starts_with("asg web-prod")));
        assert_evidence(row("api-1.4.0"), &format!("asg api-prod via {}:$Default (desired 1)", id("api-lt")));
        assert_evidence(row("worker-1.4.0"), &format!("asg worker-prod via {}:2 (desired 0)", id("worker-lt")));
        assert_evidence(
            row("api-1.6.0"),
            &format!("asg mixed-prod via mixed instances policy {}:1 (desired 0)", id("mixed-lt")),
        );

        // A standalone template with 21 versions: every one of them found.
        let golden = id("golden-lt");
        for v in 0..21 {
            let g = row(&format!("golden-1.0.{v}"));
            assert_eq!(g["in_use"], true, "golden-1.0.{v}");
        }
        assert_evidence(row("golden-1.0.0"), &format!("launch template {golden}:1 ($Default)"));
        assert_evidence(row("golden-1.0.20"), &format!("launch template {golden}:21 ($Latest)"));
        assert_evidence(row("golden-1.0.16"), &format!("launch template {golden}:17"));

        // Launch configurations: attached (and its ASG) and unattached.
        assert_evidence(row("worker-1.5.0"), "launch configuration worker-lc-v3 (attached to worker-lc-prod)");
        assert_evidence(row("worker-1.5.0"), "asg worker-lc-prod via launch configuration worker-lc-v3 (desired 0)");
        assert_evidence(row("worker-1.2.0"), "launch configuration worker-lc-old (unattached)");

        // Shared and public.
        assert_evidence(row("api-1.1.0"), "shared with 210987654321");
        assert_evidence(row("worker-1.2.0"), "shared with 999988887777");
        assert_evidence(row("web-1.1.0"), "public");

        // Nothing references these (lineage tags and keep tags are not use).
        assert_eq!(row("base-al2023-2026.09.0")["in_use"], false);
    }
}

#[test]
fn one_ami_by_id_in_table_form() {
    let (account, ids) = demo_account();
    let web = ids["us-east-1"]["web-1.5.0"].as_str().unwrap();
    let out = amictl_in(&account).args(["usage", web]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(web) && text.contains("asg web-prod via"), "{text}");
    assert!(text.contains("1 AMI(s), 1 in use, 0 unused."), "{text}");
}

#[test]
fn unused_filter_lists_only_unused() {
    let (account, ids) = demo_account();
    let out = amictl_in(&account).args(["usage", "--unused", "--output", "json"]).output().unwrap();
    assert!(out.status.success());
    let rows = usage_rows(&out);
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"worker-1.1.0") && names.contains(&"base-al2023-2026.09.0"), "{names:?}");
    assert!(rows.as_array().unwrap().iter().all(|r| r["in_use"] == false));
    assert!(!names.contains(&"web-1.5.0"));
    let _ = ids;
}

#[test]
fn several_accounts_through_assume_role() {
    let (a, _) = demo_account();
    let (b, _) = demo_account();
    let out = amictl()
        .args(["inventory", "--output", "json", "--role-arn", &role_arn(&a), "--role-arn", &role_arn(&b)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inv = json(&out);
    let accounts: Vec<&str> =
        inv["scopes"].as_array().unwrap().iter().map(|s| s["account"].as_str().unwrap()).collect();
    assert_eq!(accounts.len(), 2);
    assert!(accounts.contains(&a.as_str()) && accounts.contains(&b.as_str()), "{accounts:?}");
    for s in inv["scopes"].as_array().unwrap() {
        // 1 registered base + base-2026 + 18 family versions + 21 golden (gone-1.0.0 deregistered)
        assert_eq!(s["images"].as_array().unwrap().len(), 41, "{}", s["account"]);
    }
}
