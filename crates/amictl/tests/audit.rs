//! `amictl audit` against the demo estate: findings, JSON document, exit codes.

mod common;

use common::*;
use serde_json::Value;

fn findings<'a>(doc: &'a Value, rule: &str) -> Vec<&'a Value> {
    doc["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == rule).collect()
}

#[test]
fn demo_estate_findings_and_json_document() {
    let (account, ids) = demo_account();
    let out = amictl_in(&account)
        .args(["audit", "--region", "us-east-1", "--region", "eu-west-1", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "public AMI is critical: {}", String::from_utf8_lossy(&out.stderr));
    let doc = json(&out);
    assert_eq!(doc["schema"], "amictl.audit/v1");
    assert_eq!(doc["scopes"].as_array().unwrap().len(), 2);

    let us = &ids["us-east-1"];
    let id = |name: &str| us[name].as_str().unwrap().to_string();
    let on = |rule: &str, resource: &str| {
        findings(&doc, rule).iter().any(|f| f["resource"] == resource && f["region"] == "us-east-1")
    };
    assert!(on("ami-public", &id("web-1.1.0")));
    assert!(on("ami-shared-outside-allowlist", &id("api-1.1.0")));
    assert!(on("ami-shared-outside-allowlist", &id("worker-1.2.0")));
    assert!(on("ami-too-old", &id("web-1.1.0")), "400 days old");
    assert!(!on("ami-too-old", &id("web-1.6.0")), "5 days old");
    assert!(on("ami-not-scanned", &id("web-1.1.0")));
    assert!(!on("ami-not-scanned", &id("web-1.2.0")));
    assert!(on("ami-unencrypted-snapshot", &id("web-1.2.0")));
    assert!(on("asg-missing-launch-template", "ghost-prod"));
    assert!(on("asg-ami-deregistered", "gone-prod"));
    assert!(on("instance-ami-too-old", &id("api-stopped")), "api-1.2.0 is 321 days old");
    assert!(on("asg-ami-too-old", "api-prod"));

    // Orphans: the CreateImage snapshot of gone-1.0.0 and the CopyImage snapshot of the copy;
    // never the manual snapshot.
    let orphans: Vec<&Value> =
        doc["orphaned_snapshots"].as_array().unwrap().iter().filter(|o| o["region"] == "us-east-1").collect();
    assert!(orphans.iter().any(|o| o["image_id"] == id("gone-1.0.0") && o["origin"] == "create_image"), "{orphans:?}");
    assert!(orphans.iter().any(|o| o["origin"] == "copy_image"), "{orphans:?}");
    assert!(!orphans.iter().any(|o| o["snapshot_id"] == id("manual-snapshot")));
    assert!(on("orphaned-snapshot", orphans[0]["snapshot_id"].as_str().unwrap()));

    // The per-AMI records.
    let web = doc["images"].as_array().unwrap().iter().find(|i| i["image_id"] == id("web-1.5.0")).unwrap();
    assert_eq!(web["name"], "web-1.5.0");
    assert_eq!(web["family"], "web");
    assert_eq!(web["region"], "us-east-1");
    assert!(web["creation_date"].is_string());
    assert!((80..=86).contains(&web["age_days"].as_i64().unwrap()), "{}", web["age_days"]);
    assert_eq!(web["in_use"], true);
    let kinds: Vec<&str> = web["in_use_by"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"launch_template") && kinds.contains(&"auto_scaling_group"), "{kinds:?}");
    assert!(web["findings"].as_array().unwrap().iter().all(|f| f["image_id"] == id("web-1.5.0")));
    let base = doc["images"].as_array().unwrap().iter().find(|i| i["name"] == "base-al2023-2026.09.0").unwrap();
    assert_eq!(base["family"], "base-al2023");
}

#[test]
fn allow_list_and_fail_on_shape_the_result() {
    let (account, ids) = demo_account();
    let out = amictl_in(&account)
        .args(["audit", "--output", "json", "--allow-account", "210987654321", "--max-age", "1000d"])
        .output()
        .unwrap();
    let doc = json(&out);
    let shared: Vec<&Value> = findings(&doc, "ami-shared-outside-allowlist");
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0]["resource"], ids["us-east-1"]["worker-1.2.0"]);
    assert!(findings(&doc, "ami-too-old").is_empty());
}

#[test]
fn clean_account_exits_zero_and_table_says_so() {
    let account = fresh_account();
    let out = amictl_in(&account).args(["audit"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No findings."));
}

#[test]
fn fail_on_threshold_sets_exit_code() {
    let (account, _) = demo_account();
    // The demo estate's worst is critical (public AMI): exit 1 at any threshold.
    let out = amictl_in(&account).args(["audit", "--fail-on", "critical"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ami-public") && text.contains("critical"), "{text}");
}

#[test]
fn config_file_sets_thresholds() {
    let (account, _) = demo_account();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amictl.toml");
    std::fs::write(
        &config,
        format!(
            "regions = [\"eu-west-1\"]\n[[accounts]]\nrole_arn = \"{}\"\n[compliance]\nmax_age = \"2000d\"\nscan_tag = \"Nope\"\n",
            role_arn(&account)
        ),
    )
    .unwrap();
    let out = amictl().args(["audit", "--output", "json", "--config"]).arg(&config).output().unwrap();
    let doc = json(&out);
    assert_eq!(doc["scopes"], serde_json::json!([format!("{account}/eu-west-1")]));
    assert!(findings(&doc, "ami-too-old").is_empty());
    // With scan tag `Nope`, every image is unscanned.
    assert_eq!(findings(&doc, "ami-not-scanned").len(), doc["images"].as_array().unwrap().len());
}
