//! Team mode: the journal in DynamoDB (`--journal dynamodb://TABLE`). Two applies started at
//! the same moment against the same account and region: exactly one takes the lease (a
//! conditional write) and proceeds; the other refuses, naming the holder and since when. The
//! runs and steps are in the table for anyone's `amictl history`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const R: &str = "us-east-1";

/// The emulator's holds are one setting for every account: these tests take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn old_image(account: &str, name: &str) -> String {
    let id = image_from_instance(account, name, &[]);
    emulator().control.backdate(account, R, &id, 200.0).unwrap();
    id
}

fn table() -> String {
    format!("dynamodb://amictl-team-{}", fresh_account())
}

fn apply(account: &str, journal: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("amictl"));
    c.current_dir(std::env::temp_dir())
        .env_clear()
        .envs(test_env())
        .args(["--role-arn", &role_arn(account)])
        .args(["retire", "--keep", "0", "--min-age", "30d", "--now", "--apply", "--yes", "--journal", journal])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn two_applies_at_once_contend_for_the_dynamodb_lease_and_exactly_one_proceeds() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let account = fresh_account();
    for n in 0..3 {
        old_image(&account, &format!("web-{n}"));
    }
    let journal = table();
    // Whoever gets through is held at its first deregistration, still holding the lease.
    let control = &emulator().control;
    control.hold(&account, &["DeregisterImage"], 60.0).unwrap();
    let mut a = apply(&account, &journal).spawn().unwrap();
    let mut b = apply(&account, &journal).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut refused, mut proceeding) = (None, None);
    while refused.is_none() || proceeding.is_none() {
        assert!(Instant::now() < deadline, "neither refused nor held in time");
        for (name, child) in [("a", &mut a), ("b", &mut b)] {
            if refused.is_none() && child.try_wait().unwrap().is_some() {
                refused = Some(name);
            }
        }
        if control.holds().unwrap()["held"].as_u64().unwrap() > 0 {
            proceeding = Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (loser, winner) = if refused == Some("a") { (a, b) } else { (b, a) };
    let lost = loser.wait_with_output().unwrap();
    assert_eq!(lost.status.code(), Some(2));
    let why = String::from_utf8_lossy(&lost.stderr).to_string();
    assert!(why.contains(&format!("{account}/{R} is held by run")) && why.contains(" since "), "{why}");
    control.hold(&account, &[], 0.0).unwrap();
    let won = winner.wait_with_output().unwrap();
    assert_eq!(won.status.code(), Some(0), "{}", String::from_utf8_lossy(&won.stderr));

    // The table holds both runs, for anyone: one completed, one refused; the lock is free.
    let h = amictl().args(["history", "--journal", &journal, "-o", "json"]).output().unwrap();
    assert_code(&h, 0);
    let runs = json(&h)["runs"].as_array().unwrap().clone();
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"completed") && statuses.contains(&"refused"), "{statuses:?}");
    let again = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "30d", "--now", "--apply", "--yes", "--journal", &journal])
        .output()
        .unwrap();
    assert_code(&again, 0);
}

#[test]
fn a_team_journal_resumes_an_interrupted_apply_and_migrates_from_sqlite() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let account = fresh_account();
    for n in 0..3 {
        old_image(&account, &format!("web-{n}"));
    }
    let images = aws(&account, "ec2", "describe_images", json!({"Owners": ["self"]}));
    let snapshots: Vec<String> = images["Images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["BlockDeviceMappings"].as_array().unwrap().iter())
        .filter_map(|m| m["Ebs"]["SnapshotId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(snapshots.len(), 3);
    let journal = table();
    let dir = tempfile::tempdir().unwrap();
    let args = ["retire", "--keep", "0", "--min-age", "30d", "--now", "--apply", "--yes", "--journal", &journal];
    let mut child = spawn_held(&account, "DeregisterImage", dir.path(), &args);
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control.hold(&account, &[], 0.0).unwrap();
    // The interrupted run is found in the table (its process is gone) and continued; an image
    // whose deregistration took effect as the process died is reported, not redone.
    let out =
        amictl_in(&account).args(["apply", "--resume", "--yes", "--journal", &journal, "-o", "json"]).output().unwrap();
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{}", String::from_utf8_lossy(&out.stderr));
    let left = aws(&account, "ec2", "describe_images", json!({"Owners": ["self"]}));
    assert!(left["Images"].as_array().unwrap().is_empty(), "{left}");
    // The mappings recorded in the table before each deregistration make the snapshots left
    // behind deletable.
    let orphans = amictl_in(&account)
        .args(["retire", "--orphans", "--now", "--apply", "--yes", "--journal", &journal])
        .output()
        .unwrap();
    assert_code(&orphans, 0);
    let snaps = aws(&account, "ec2", "describe_snapshots", json!({"OwnerIds": ["self"]}));
    let left: Vec<&str> =
        snaps["Snapshots"].as_array().unwrap().iter().filter_map(|s| s["SnapshotId"].as_str()).collect();
    assert!(snapshots.iter().all(|s| !left.contains(&s.as_str())), "left: {left:?}");

    // A SQLite journal copied into a fresh table: same runs, same steps.
    let local = dir.path().join("journal.db");
    let other = fresh_account();
    old_image(&other, "db-1");
    let l = amictl_in(&other)
        .args([
            "retire",
            "--keep",
            "0",
            "--min-age",
            "30d",
            "--now",
            "--apply",
            "--yes",
            "--journal",
            local.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&l, 0);
    let target = table();
    let m = amictl().args(["journal", "migrate", local.to_str().unwrap(), &target]).output().unwrap();
    assert_code(&m, 0);
    let history = |j: &str| {
        let h = amictl().args(["history", "--journal", j, "-o", "json"]).output().unwrap();
        let runs = json(&h)["runs"].clone();
        let steps = amictl().args(["history", "--journal", j, "--run", "1", "-o", "json"]).output().unwrap();
        (runs, json(&steps)["steps"].as_array().map(|s| s.len()))
    };
    assert_eq!(history(local.to_str().unwrap()), history(&target));
    let again = amictl().args(["journal", "migrate", local.to_str().unwrap(), &target]).output().unwrap();
    assert_code(&again, 2);
}
