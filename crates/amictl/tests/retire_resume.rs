//! Resume after `kill -9` in the middle of an apply: nothing repeated, nothing skipped.
//! Its own test binary, so the emulator's request counts are this test's alone.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[test]
fn resume_after_kill_finishes_without_repeating_work() {
    let (account, _) = demo_account_with(&["us-east-1"], 120);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let plan_out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "1d", "--now", "--output", "json"])
        .output()
        .unwrap();
    let plan = json(&plan_out);
    let planned: BTreeSet<String> = deregister_targets(&plan).into_iter().collect();
    let planned_snaps = plan["actions"].as_array().unwrap().iter().filter(|a| a["kind"] == "delete-snapshot").count();
    assert!(planned.len() >= 40, "{}", planned.len());

    emulator().control.reset_stats().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("amictl");
    let mut child = std::process::Command::new(bin)
        .args([
            "--role-arn",
            &role_arn(&account),
            "retire",
            "--keep",
            "0",
            "--min-age",
            "1d",
            "--now",
            "--apply",
            "--yes",
        ])
        .args(["--concurrency", "1", "--rate", "10", "--journal"])
        .arg(&db)
        .env_clear()
        .envs(test_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it get some way in, then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let done = emulator().control.stats().unwrap()["by_action"]["DeregisterImage"].as_u64().unwrap_or(0);
        if done >= 5 || std::time::Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mid = emulator().control.stats().unwrap();
    let deregistered_before_kill = mid["by_action"]["DeregisterImage"].as_u64().unwrap_or(0);
    assert!(
        deregistered_before_kill >= 5 && (deregistered_before_kill as usize) < planned.len(),
        "killed mid-way: {deregistered_before_kill}"
    );

    let hist = json(&amictl().args(["history", "--output", "json", "--journal"]).arg(&db).output().unwrap());
    assert_eq!(hist["runs"][0]["status"], "interrupted", "the killed run's process is gone");

    let out = amictl_in(&account)
        .args(["apply", "--resume", "--yes", "--concurrency", "4", "--journal"])
        .arg(&db)
        .output()
        .unwrap();
    assert_code(&out, 0);

    // Everything planned is done, once.
    let now = inventory(&account, &["us-east-1"]);
    let remaining: BTreeSet<String> = now["scopes"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    assert!(planned.iter().all(|id| !remaining.contains(id)), "every planned image is gone");
    let stats = emulator().control.stats().unwrap();
    let deregisters = stats["by_action"]["DeregisterImage"].as_u64().unwrap() as usize;
    // Snapshots go with their image (DeleteAssociatedSnapshots) or in a call of their own.
    let deletes = stats["by_action"]["DeleteSnapshot"].as_u64().unwrap_or(0) as usize;
    // At most the one call in flight at the kill is sent twice (and then finds its work done).
    assert!(
        deregisters >= planned.len() && deregisters <= planned.len() + 1,
        "{deregisters} DeregisterImage calls for {} images",
        planned.len()
    );
    assert!(deletes <= planned_snaps + 1, "{deletes} DeleteSnapshot calls for {planned_snaps}");
    let snapshots_left: BTreeSet<&str> =
        now["scopes"][0]["snapshots"].as_array().unwrap().iter().map(|s| s["snapshot_id"].as_str().unwrap()).collect();
    let planned_snapshot_ids: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "delete-snapshot")
        .map(|a| a["snapshot_id"].as_str().unwrap())
        .collect();
    assert!(planned_snapshot_ids.iter().all(|s| !snapshots_left.contains(s)), "every planned snapshot is gone");
    let hist = json(&amictl().args(["history", "--output", "json", "--journal"]).arg(&db).output().unwrap());
    let hist = &hist["runs"];
    assert_eq!(hist[0]["status"], "completed");
    let steps = json(
        &amictl()
            .args(["history", "--output", "json", "--run", &hist[0]["id"].to_string(), "--journal"])
            .arg(&db)
            .output()
            .unwrap(),
    );
    let steps = steps["steps"].as_array().unwrap();
    assert_eq!(steps.len(), planned.len() + planned_snaps);
    assert!(steps.iter().all(|s| s["status"] == "done"));
}
