//! What a cron-style `retire --apply --yes` costs in requests: launch permissions, which no
//! list call returns, are read once per candidate image — the plan's reading stands as the
//! re-check when the apply follows it at once — and every other per-image call once.
//! Its own test binary, so the emulator's request counts are this test's alone.

mod common;

use common::*;
use serde_json::Value;

/// Images whose launch permissions the planner must read: those every other rule would
/// retire (the retired ones, and the ones only their sharing keeps).
fn permission_candidates(plan: &Value) -> usize {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            let reasons = i["reasons"].as_array().unwrap();
            let shared_only = !reasons.is_empty()
                && reasons.iter().all(|r| {
                    r["code"] == "in-use"
                        && r["detail"].as_str().unwrap().split("; ").all(|d| d.starts_with("shared with"))
                });
            i["verdict"] == "retire" || shared_only
        })
        .count()
}

#[test]
fn an_apply_right_after_its_plan_reads_each_candidates_launch_permissions_once() {
    let (account, _) = demo_account_with(&["us-east-1"], 60);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let args = ["retire", "--keep", "0", "--min-age", "1d", "--now", "--journal", db.to_str().unwrap()];
    let dry = amictl_in(&account).args(args).args(["--output", "json"]).output().unwrap();
    let plan = json(&dry);
    let retired = deregister_targets(&plan).len();
    let candidates = permission_candidates(&plan);
    assert!(retired >= 20 && candidates > retired, "{retired} retired, {candidates} candidates");

    emulator().control.reset_stats().unwrap();
    let out = amictl_in(&account).args(args).args(["--apply", "--yes"]).output().unwrap();
    assert_code(&out, 0);
    let stats = emulator().control.stats().unwrap();
    let count = |op: &str| stats["by_action"][op].as_u64().unwrap_or(0) as usize;
    assert_eq!(count("DeregisterImage"), retired, "{stats}");
    assert_eq!(count("DescribeImageAttribute"), candidates, "read once per candidate: {stats}");
    // A snapshot costs one call: its createVolumePermission read. EC2 deletes it with its image
    // (DeleteAssociatedSnapshots) when nothing else maps it and nobody may use it.
    let snapshots = plan["actions"].as_array().unwrap().iter().filter(|a| a["kind"] == "delete-snapshot").count();
    assert_eq!(count("DescribeSnapshotAttribute"), snapshots, "{stats}");
    assert_eq!(count("DeleteSnapshot"), 0, "{stats}");
    // The re-checks are batched: a handful of DescribeImages / DescribeInstances, not one per image.
    assert!(count("DescribeImages") < 10 && count("DescribeInstances") < 10, "{stats}");
}
