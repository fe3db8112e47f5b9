//! End to end through the emulator: a retiring image that is used again is restored, and
//! snapshots wait out their grace period after their image is deregistered.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn aws(account: &str, op: &str, params: Value) -> Value {
    emulator().control.aws(account, R, "ec2", op, params).unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// `retire … --apply --yes` with `extra` flags; the kinds of action taken on `target`.
fn retire(account: &str, db: &std::path::Path, extra: &[&str], target: &str) -> Vec<String> {
    let out = amictl_in(account)
        .args(["retire", "--keep", "1", "--min-age", "90d"])
        .args(extra)
        .args(["--apply", "--yes", "--output", "json", "--journal"])
        .arg(db)
        .output()
        .unwrap();
    assert_code(&out, 0);
    json(&out)["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["image_id"] == target || a["snapshot_id"] == target)
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

fn image(account: &str, id: &str) -> Option<Value> {
    let out = aws(account, "describe_images", json!({"Owners": ["self"], "IncludeDisabled": true}));
    out["Images"].as_array().unwrap().iter().find(|i| i["ImageId"] == id).cloned()
}

fn tags(v: &Value) -> std::collections::BTreeMap<String, String> {
    v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].as_str().unwrap().to_string()))
        .collect()
}

fn pass_grace(account: &str, resource: &str) {
    aws(
        account,
        "create_tags",
        json!({"Resources": [resource], "Tags": [{"Key": "amictl:retire-after", "Value": "2000-01-01T00:00:00Z"}]}),
    );
}

#[test]
fn a_retiring_image_used_again_is_restored() {
    let (account, ids) = demo_account_with(&[R], 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let target = ids[R]["worker-1.1.0"].as_str().unwrap().to_string();
    assert_eq!(retire(&account, &db, &[], &target), ["deprecate"]);
    pass_grace(&account, &target);
    assert_eq!(retire(&account, &db, &[], &target), ["disable"]);
    let i = image(&account, &target).unwrap();
    assert_eq!(i["State"], "disabled");
    assert!(i.get("DeprecationTime").is_some(), "natively deprecated: {i}");

    // Someone needs it again: a launch template names it.
    aws(
        &account,
        "create_launch_template",
        json!({"LaunchTemplateName": "needs-it", "LaunchTemplateData": {"ImageId": target}}),
    );
    assert_eq!(retire(&account, &db, &[], &target), ["restore"]);
    let i = image(&account, &target).unwrap();
    assert_eq!(i["State"], "available", "{i}");
    assert!(i.get("DeprecationTime").is_none_or(|t| t.is_null()), "deprecation undone: {i}");
    let t = tags(&i);
    assert!(!t.contains_key("amictl:retire-stage") && !t.contains_key("amictl:retire-after"), "{t:?}");
    assert_eq!(retire(&account, &db, &[], &target), Vec::<String>::new(), "kept, nothing more to do");
}

#[test]
fn snapshots_wait_out_their_grace_period_and_a_forged_tag_deletes_nothing() {
    let (account, ids) = demo_account_with(&[R], 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let target = ids[R]["worker-1.1.0"].as_str().unwrap().to_string();
    let snap =
        image(&account, &target).unwrap()["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap().to_string();
    // A snapshot of a volume, tagged by hand as if amictl had retired it.
    let vol = aws(&account, "create_volume", json!({"AvailabilityZone": "us-east-1a", "Size": 8}));
    let backup =
        aws(&account, "create_snapshot", json!({"VolumeId": vol["VolumeId"], "Description": "database backup"}));
    let backup = backup["SnapshotId"].as_str().unwrap().to_string();
    aws(
        &account,
        "create_tags",
        json!({"Resources": [&backup], "Tags": [
        {"Key": "amictl:retire-stage", "Value": "deregistered"},
        {"Key": "amictl:retire-after", "Value": "2000-01-01T00:00:00Z"},
        {"Key": "amictl:retired-image", "Value": &target}]}),
    );

    let grace = ["--grace-deregistered", "7d"];
    assert_eq!(retire(&account, &db, &grace, &target), ["deprecate"]);
    pass_grace(&account, &target);
    assert_eq!(retire(&account, &db, &grace, &target), ["disable"]);
    pass_grace(&account, &target);
    assert_eq!(retire(&account, &db, &grace, &target), ["deregister"]);
    assert!(image(&account, &target).is_none());
    let snaps = || {
        aws(&account, "describe_snapshots", json!({"OwnerIds": ["self"]}))["Snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(snaps().contains(&snap), "its snapshot waits");
    assert!(snaps().contains(&backup));
    assert_eq!(retire(&account, &db, &grace, &snap), Vec::<String>::new(), "still in its grace period");
    pass_grace(&account, &snap);
    assert_eq!(retire(&account, &db, &grace, &snap), ["delete-snapshot"]);
    assert!(!snaps().contains(&snap));
    assert!(snaps().contains(&backup), "a tag alone never makes a snapshot deletable");
}

#[test]
fn a_snapshot_shared_with_another_account_is_kept_and_reported() {
    let (account, ids) = demo_account_with(&[R], 0);
    let dir = tempfile::tempdir().unwrap();
    let target = ids[R]["worker-1.1.0"].as_str().unwrap().to_string();
    let snap =
        image(&account, &target).unwrap()["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap().to_string();
    aws(
        &account,
        "modify_snapshot_attribute",
        json!({"SnapshotId": &snap, "Attribute": "createVolumePermission",
        "OperationType": "add", "UserIds": ["210987654321"]}),
    );
    let out = amictl_in(&account)
        .args([
            "retire",
            "--keep",
            "1",
            "--min-age",
            "90d",
            "--now",
            "--apply",
            "--yes",
            "--output",
            "json",
            "--journal",
        ])
        .arg(dir.path().join("j.db"))
        .output()
        .unwrap();
    assert_code(&out, 1);
    let doc = json(&out);
    let o =
        doc["result"]["outcomes"].as_array().unwrap().iter().find(|o| o["target"] == snap.as_str()).unwrap().clone();
    assert_eq!(o["status"], "aborted", "{o}");
    assert!(o["detail"].as_str().unwrap().contains("210987654321"), "{o}");
    let left = aws(&account, "describe_snapshots", json!({"SnapshotIds": [&snap]}));
    assert_eq!(left["Snapshots"].as_array().unwrap().len(), 1);
}
