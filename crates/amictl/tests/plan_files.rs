//! A plan file is a request, not an authority: what is done comes from a fresh plan made
//! after the confirmation.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn make_plan(account: &str, path: &std::path::Path) -> Value {
    amictl_in(account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--plan-out"])
        .arg(path)
        .assert()
        .success();
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn apply(
    account: &str,
    dir: &std::path::Path,
    plan: &std::path::Path,
    config: Option<&std::path::Path>,
) -> std::process::Output {
    let mut cmd = amictl_in(account);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["apply", "--yes", "--output", "json", "--journal"]).arg(dir.join("j.db")).arg(plan).output().unwrap()
}

fn image_ids(account: &str) -> std::collections::BTreeSet<String> {
    aws(account, "ec2", "describe_images", json!({"Owners": ["self"], "IncludeDisabled": true}))["Images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ImageId"].as_str().unwrap().to_string())
        .collect()
}

fn snapshot_ids(account: &str) -> std::collections::BTreeSet<String> {
    aws(account, "ec2", "describe_snapshots", json!({"OwnerIds": ["self"]}))["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
        .collect()
}

/// (target, status) of every outcome.
fn outcomes(out: &std::process::Output) -> Vec<(String, String)> {
    json(out)["result"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["target"].as_str().unwrap().to_string(), o["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_hand_edited_plan_deletes_nothing_a_fresh_plan_would_not() {
    let (account, ids) = demo_account_with(&[R], 80);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let mut plan = make_plan(&account, &path);
    let honest: Vec<Value> = plan["actions"].as_array().unwrap().clone();
    let in_use = ids[R]["web-1.6.0"].as_str().unwrap().to_string(); // a running instance uses it
    let in_use_snapshot = aws(&account, "ec2", "describe_images", json!({"ImageIds": [&in_use]}))["Images"][0]
        ["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();

    // Swap one deregistration's image for an image in use, id and all.
    let actions = plan["actions"].as_array_mut().unwrap();
    let first = actions.iter_mut().find(|a| a["kind"] == "deregister").unwrap();
    let swapped_from = first["image_id"].as_str().unwrap().to_string();
    first["image_id"] = json!(in_use);
    first["id"] = json!(first["id"].as_str().unwrap().replace(&swapped_from, &in_use));
    // An extra snapshot: one an image in use maps.
    actions.push(json!({
        "id": format!("{account}/{R}/delete-snapshot/{in_use_snapshot}"), "account": account, "region": R,
        "kind": "delete-snapshot", "image_id": swapped_from, "snapshot_id": in_use_snapshot,
        "depends_on": null, "next_stage_after_secs": null, "detail": "edited in"}));
    // Looser policy in the file, stricter in amictl.toml.
    plan["policy"]["keep_tags"] = json!([]);
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let config = dir.path().join("amictl.toml");
    std::fs::write(&config, "[retire]\nkeep = 0\nmin_age = \"90d\"\nimmediate = true\nkeep_tags = [\"Precious\"]\n")
        .unwrap();
    // The config's keep tag protects one image the file would retire.
    let honest_targets: Vec<String> = honest
        .iter()
        .filter(|a| a["kind"] == "deregister" && a["image_id"] != swapped_from.as_str())
        .map(|a| a["image_id"].as_str().unwrap().to_string())
        .collect();
    let precious = honest_targets[0].clone();
    aws(
        &account,
        "ec2",
        "create_tags",
        json!({"Resources": [&precious], "Tags": [{"Key": "Precious", "Value": "yes"}]}),
    );

    let images_before = image_ids(&account);
    let out = apply(&account, dir.path(), &path, Some(&config));
    assert_code(&out, 1);
    let got = outcomes(&out);
    let status = |target: &str| got.iter().find(|(t, _)| t == target).map(|(_, s)| s.clone());
    assert_eq!(status(&in_use).as_deref(), Some("skipped"), "{got:?}");
    assert_eq!(status(&in_use_snapshot).as_deref(), Some("skipped"), "{got:?}");
    assert_eq!(status(&precious).as_deref(), Some("skipped"), "the stricter config keeps it: {got:?}");
    let after = image_ids(&account);
    assert!(
        after.contains(&in_use) && after.contains(&precious) && after.contains(&swapped_from),
        "not in the file as such"
    );
    assert!(snapshot_ids(&account).contains(&in_use_snapshot));
    // What a fresh plan also takes was done.
    let done: Vec<&String> = got.iter().filter(|(_, s)| s == "done").map(|(t, _)| t).collect();
    assert!(!done.is_empty(), "{got:?}");
    for t in &done {
        assert!(!t.starts_with("ami-") || !after.contains(*t), "{t} done but still there");
    }
    assert_eq!(images_before.len() - after.len(), done.iter().filter(|t| t.starts_with("ami-")).count());
}

#[test]
fn a_template_version_made_after_the_plan_aborts_exactly_its_image() {
    let (account, _) = demo_account_with(&[R], 80);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let plan = make_plan(&account, &path);
    let targets = deregister_targets(&plan);
    assert!(targets.len() >= 3);
    let lt = aws(&account, "ec2", "describe_launch_templates", json!({}))["LaunchTemplates"][0]["LaunchTemplateId"]
        .as_str()
        .unwrap()
        .to_string();
    aws(
        &account,
        "ec2",
        "create_launch_template_version",
        json!({"LaunchTemplateId": lt, "LaunchTemplateData": {"ImageId": targets[1]}}),
    );

    let out = apply(&account, dir.path(), &path, None);
    assert_code(&out, 1);
    let got = outcomes(&out);
    for t in &targets {
        let s = got.iter().find(|(x, _)| x == t).map(|(_, s)| s.as_str());
        let want = if *t == targets[1] { "skipped" } else { "done" };
        assert_eq!(s, Some(want), "{t}: {got:?}");
    }
    assert!(image_ids(&account).contains(&targets[1]));
}

#[test]
fn resume_with_nothing_to_resume_and_a_plan_of_another_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = amictl().args(["apply", "--resume", "--yes", "--journal"]).arg(dir.path().join("j.db")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("an interrupted apply not found"), "{stderr}");

    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"schema": "amictl.audit/v1", "findings": []}"#).unwrap();
    let out = amictl().args(["apply", "--yes"]).arg(&other).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not an amictl plan") || stderr.contains("schema"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
