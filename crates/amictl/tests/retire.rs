//! `amictl retire` / `apply` against the emulator.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use serde_json::Value;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn images(inv: &Value) -> HashMap<String, Value> {
    inv["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["images"].as_array().unwrap().iter().map(|i| (i["image_id"].as_str().unwrap().to_string(), i.clone()))
        })
        .collect()
}

fn snapshots(inv: &Value) -> HashMap<String, Value> {
    inv["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["snapshot_id"].as_str().unwrap().to_string(), i.clone()))
        })
        .collect()
}

/// `amictl apply FILE --yes --output json` with the journal in `dir`.
fn apply_file(account: &str, dir: &std::path::Path, plan: &std::path::Path) -> std::process::Output {
    let mut cmd = amictl_in(account);
    cmd.args(["apply", "--yes", "--output", "json", "--journal"]).arg(dir.join("j.db")).arg(plan);
    cmd.output().unwrap()
}

/// The outcomes of an apply's JSON document: (target, status, detail).
fn outcomes(out: &std::process::Output) -> Vec<(String, String, String)> {
    json(out)["result"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (s("target"), s("status"), s("detail"))
        })
        .collect()
}

fn age_days(image: &Value) -> i64 {
    let created = chrono::DateTime::parse_from_rfc3339(image["creation_date"].as_str().unwrap()).unwrap();
    (chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_days()
}

#[test]
fn the_cli_shape_retires_exactly_what_is_old_unused_and_untagged() {
    let (account, ids) = demo_account_with(&REGIONS, 110);
    let before = inventory(&account, &REGIONS);
    let used = in_use(&account, &REGIONS);
    let imgs = images(&before);
    let expected: BTreeSet<String> = imgs
        .values()
        .filter(|i| {
            age_days(i) > 90 && !used[i["image_id"].as_str().unwrap()] && i["tags"].get("DoNotDelete").is_none()
        })
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    assert!(expected.len() >= 4, "the estate should have something to retire: {expected:?}");

    let journal = tempfile::tempdir().unwrap();
    let out = amictl_in(&account)
        .args(["retire", "--region", "us-east-1", "--region", "eu-west-1", "--keep", "0", "--min-age", "90d"])
        .args(["--keep-tag", "DoNotDelete", "--orphans", "--now", "--apply", "--yes", "--journal"])
        .arg(journal.path().join("j.db"))
        .output()
        .unwrap();
    assert_code(&out, 0);

    let after = inventory(&account, &REGIONS);
    let remaining: BTreeSet<String> = images(&after).into_keys().collect();
    let gone: BTreeSet<String> = imgs.keys().filter(|id| !remaining.contains(*id)).cloned().collect();
    assert_eq!(gone, expected, "deregistered exactly the old, unused, untagged AMIs");

    // Every in-use AMI survived, whatever uses it.
    for region in REGIONS {
        for name in [
            "web-1.6.0",
            "api-1.2.0",
            "web-1.5.0",
            "web-1.3.0",
            "api-1.4.0",
            "worker-1.4.0",
            "api-1.6.0",
            "golden-1.0.0",
            "golden-1.0.20",
            "worker-1.5.0",
            "worker-1.2.0",
            "api-1.1.0",
            "web-1.1.0",
            "worker-1.1.0",
            "base-al2023-2025.10.0",
        ] {
            let id = ids[region][name].as_str().unwrap();
            assert!(remaining.contains(id), "{name} ({id}) in {region} must be kept");
        }
    }

    // Snapshots: those of the retired AMIs and the orphans are gone; everything else stays.
    let snaps_before = snapshots(&before);
    let snaps_after: BTreeSet<String> = snapshots(&after).into_keys().collect();
    let retired_snaps: BTreeSet<String> = expected
        .iter()
        .flat_map(|id| imgs[id]["snapshot_ids"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()))
        .collect();
    let orphan = |s: &Value| {
        let d = s["description"].as_str().unwrap();
        (d.starts_with("Created by CreateImage(") || d.starts_with("Copied for DestinationAmi"))
            && !imgs.values().any(|i| i["snapshot_ids"].as_array().unwrap().iter().any(|x| x == &s["snapshot_id"]))
    };
    for (id, s) in &snaps_before {
        let should_go = retired_snaps.contains(id) || orphan(s);
        assert_eq!(!snaps_after.contains(id), should_go, "snapshot {id} ({})", s["description"]);
    }
    for region in REGIONS {
        assert!(
            snaps_after.contains(ids[region]["manual-snapshot"].as_str().unwrap()),
            "manual snapshots are never touched"
        );
    }

    // The journal recorded the run.
    let hist =
        amictl().args(["history", "--output", "json", "--journal"]).arg(journal.path().join("j.db")).output().unwrap();
    let runs = &json(&hist)["runs"];
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["failed"], 0);
}

#[test]
fn dry_run_changes_nothing_and_json_plan_explains_every_verdict() {
    let (account, ids) = demo_account_with(&["us-east-1"], 0);
    let before = inventory(&account, &["us-east-1"]);
    let out =
        amictl_in(&account).args(["retire", "--keep", "1", "--min-age", "30d", "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = json(&out);
    assert_eq!(plan["schema"], "amictl.plan/v1");
    let verdict = |name: &str| {
        plan["images"].as_array().unwrap().iter().find(|i| i["image_id"] == ids["us-east-1"][name]).unwrap().clone()
    };
    let w = verdict("web-1.5.0");
    assert_eq!(w["verdict"], "keep");
    assert!(
        w["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "in-use" && r["detail"].as_str().unwrap().contains("asg web-prod")),
        "{w}"
    );
    assert_eq!(verdict("worker-1.1.0")["verdict"], "retire", "unused, old, not newest: deprecated first");
    assert_eq!(verdict("web-1.6.0")["reasons"][0]["code"], "in-use");
    let base = verdict("base-al2023-2026.09.0");
    assert!(base["reasons"].as_array().unwrap().iter().any(|r| r["code"] == "lineage"), "{base}");
    assert!(
        plan["actions"].as_array().unwrap().iter().all(|a| a["kind"] == "deprecate"),
        "staged: the first run only deprecates"
    );
    let after = inventory(&account, &["us-east-1"]);
    assert_eq!(images(&before).len(), images(&after).len());
    assert!(images(&after).values().all(|i| i["tags"].get("amictl:retire-stage").is_none()));
}

#[test]
fn staged_retirement_across_grace_periods() {
    let (account, ids) = demo_account_with(&["us-east-1"], 0);
    let journal = tempfile::tempdir().unwrap();
    let db = journal.path().join("j.db");
    let target = ids["us-east-1"]["worker-1.1.0"].as_str().unwrap().to_string();
    let snap = images(&inventory(&account, &["us-east-1"]))[&target]["snapshot_ids"][0].as_str().unwrap().to_string();
    let run = || {
        let out = amictl_in(&account)
            .args(["retire", "--keep", "1", "--min-age", "90d", "--grace-deprecated", "7d", "--grace-disabled", "7d"])
            .args(["--apply", "--yes", "--output", "json", "--journal"])
            .arg(&db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let doc = json(&out);
        doc["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["image_id"] == target.as_str())
            .map(|a| a["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Changes are made as of now (no --as-of with --apply): a grace period passes by moving
    // the image's next-stage time into the past, as the week would.
    let pass_grace_period = || {
        let tag = serde_json::json!([{"Key": "amictl:retire-after", "Value": "2000-01-01T00:00:00Z"}]);
        emulator()
            .control
            .aws(&account, "us-east-1", "ec2", "create_tags", serde_json::json!({"Resources": [&target], "Tags": tag}))
            .unwrap();
    };
    let image = || images(&inventory(&account, &["us-east-1"])).get(&target).cloned();

    assert_eq!(run(), ["deprecate"]);
    assert_eq!(image().unwrap()["tags"]["amictl:retire-stage"], "deprecated");
    assert_eq!(run(), Vec::<String>::new(), "still in its grace period");
    pass_grace_period();
    assert_eq!(run(), ["disable"]);
    let i = image().unwrap();
    assert_eq!(i["state"], "disabled");
    assert_eq!(i["tags"]["amictl:retire-stage"], "disabled");
    assert_eq!(run(), Vec::<String>::new());
    pass_grace_period();
    assert_eq!(run(), ["deregister", "delete-snapshot"]);
    assert!(image().is_none());
    assert!(!snapshots(&inventory(&account, &["us-east-1"])).contains_key(&snap));
}

#[test]
fn as_of_is_for_plans_only() {
    let (account, _) = demo_account_with(&["us-east-1"], 0);
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let before = images(&inventory(&account, &["us-east-1"])).len();
    let out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--now", "--apply", "--yes", "--as-of", &later])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--as-of") && stderr.contains("plans only"), "{stderr}");
    let out = amictl_in(&account)
        .env("AMICTL_AS_OF", &later)
        .args(["retire", "--keep", "0", "--apply", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AMICTL_AS_OF"));
    assert_eq!(images(&inventory(&account, &["us-east-1"])).len(), before, "nothing changed");
    // A plan may still be judged at another time.
    amictl_in(&account).args(["retire", "--keep", "0", "--as-of", &later]).assert().success();
}

#[test]
fn a_saved_plan_is_refused_when_the_estate_changed() {
    let (account, ids) = demo_account_with(&["us-east-1"], 0);
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    let out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--plan-out"])
        .arg(&plan_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let target = ids["us-east-1"]["worker-1.1.0"].as_str().unwrap();
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert!(plan["actions"].as_array().unwrap().iter().any(|a| a["image_id"] == target && a["kind"] == "deregister"));

    // Someone launches an instance from it after the plan was made.
    let launched = emulator()
        .control
        .aws(
            &account,
            "us-east-1",
            "ec2",
            "run_instances",
            serde_json::json!({"ImageId": target, "MinCount": 1, "MaxCount": 1}),
        )
        .unwrap();
    let instance = launched["Instances"][0]["InstanceId"].as_str().unwrap().to_string();

    let out = apply_file(&account, dir.path(), &plan_file);
    assert_code(&out, 1);
    let got = outcomes(&out);
    let mine = got.iter().find(|(t, _, _)| t == target).expect("the target is reported");
    assert_eq!(mine.1, "skipped", "{got:?}");
    assert!(mine.2.contains("estate changed") && mine.2.contains(&instance), "{got:?}");
    assert!(got.iter().all(|(_, status, _)| status == "skipped"), "nothing else was planned: {got:?}");
    assert!(images(&inventory(&account, &["us-east-1"])).contains_key(target));

    // Unchanged estate: the same kind of plan applies.
    let plan2 = dir.path().join("plan2.json");
    amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--plan-out"])
        .arg(&plan2)
        .assert()
        .success();
    let out = apply_file(&account, dir.path(), &plan2);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(images(&inventory(&account, &["us-east-1"])).contains_key(target), "in use now: kept");
}

#[test]
fn a_plan_applied_once_says_so_when_applied_again() {
    let (account, _) = demo_account_with(&["us-east-1"], 0);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--plan-out"])
        .arg(&plan)
        .assert()
        .success();
    let out = apply_file(&account, dir.path(), &plan);
    assert_code(&out, 0);
    let got = outcomes(&out);
    assert!(got.len() == 2 && got.iter().all(|(_, s, _)| s == "done"), "{got:?}");

    let out = apply_file(&account, dir.path(), &plan);
    assert_code(&out, 1);
    let got = outcomes(&out);
    assert_eq!(got.len(), 2);
    for (_, status, detail) in &got {
        assert_eq!(status, "skipped");
        assert!(detail.contains("already applied (run 1)") && !detail.contains("estate changed"), "{detail}");
    }
}

#[test]
fn a_what_if_plan_is_refused_for_the_clock_not_for_the_estate() {
    let (account, ids) = demo_account_with(&["us-east-1"], 0);
    // A new image nothing uses: too young today, old enough a year from now.
    let made = emulator()
        .control
        .aws(
            &account,
            "us-east-1",
            "ec2",
            "create_image",
            serde_json::json!({"InstanceId": ids["us-east-1"]["web-running"], "Name": "scratch-1.0.0"}),
        )
        .unwrap();
    let young = made["ImageId"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    let later = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "90d", "--now", "--as-of", &later, "--plan-out"])
        .arg(&plan_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert_eq!(plan["policy"]["min_age"], "90d", "durations are written as the user wrote them");
    assert!(plan["as_of"].as_str().unwrap().ends_with('Z') && !plan["as_of"].as_str().unwrap().contains('.'));

    let out = apply_file(&account, dir.path(), &plan_file);
    assert_code(&out, 1);
    let got = outcomes(&out);
    let (_, status, detail) = got.iter().find(|(t, _, _)| *t == young).expect("the young image is reported");
    assert_eq!(status, "skipped");
    assert!(detail.contains("only the clock differs") && detail.contains("younger than"), "{detail}");
    assert!(images(&inventory(&account, &["us-east-1"])).contains_key(&young), "kept");
}

#[test]
fn guards_refuse_more_than_the_cap_and_apply_needs_yes_without_a_terminal() {
    let (account, _) = demo_account_with(&["us-east-1"], 0);
    let dir = tempfile::tempdir().unwrap();
    let out = amictl_in(&account)
        .args([
            "retire",
            "--keep",
            "0",
            "--min-age",
            "1d",
            "--now",
            "--max-deletions",
            "0",
            "--apply",
            "--yes",
            "--journal",
        ])
        .arg(dir.path().join("j.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_deletions = 0") && stderr.contains("--force"), "{stderr}");

    let out = amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "1d", "--apply", "--journal"])
        .arg(dir.path().join("j.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
}

#[test]
fn one_apply_at_a_time_per_scope() {
    // Enough old, unused images that a slow apply is still working when the second starts.
    let (account, _) = demo_account_with(&["us-east-1"], 80);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let retire = ["retire", "--keep", "1", "--min-age", "90d", "--now", "--apply", "--yes", "--concurrency", "1"];
    // One call every 2 s: the first apply holds the scope's lock for a while.
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("amictl"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(test_env())
        .args(["--role-arn", &role_arn(&account)])
        .args(retire)
        .args(["--rate", "0.5", "--journal"])
        .arg(&db)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let history = || json(&amictl().args(["history", "--output", "json", "--journal"]).arg(&db).output().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(db.exists() && history()["runs"][0]["status"] == "running") {
        assert!(std::time::Instant::now() < deadline, "the first apply never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let second = amictl_in(&account).args(retire).arg("--journal").arg(&db).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{account}/us-east-1 is held by run 1")) && stderr.contains("process"),
        "{stderr}"
    );

    // The holder dies without releasing the lock; the next run takes it over and says so.
    first.kill().unwrap();
    first.wait().unwrap();
    let third = amictl_in(&account).args(retire).arg("--journal").arg(&db).output().unwrap();
    assert_code(&third, 0);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(stderr.contains("taking over the lock") && stderr.contains("from run 1"), "{stderr}");
    let runs = history();
    let statuses: Vec<&str> = runs["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "refused", "interrupted"], "newest first: {runs}");
}
