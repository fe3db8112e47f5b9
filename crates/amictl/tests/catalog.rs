//! The image catalog against the emulator: capture, list, channels (real SSM parameter calls),
//! lineage, revocation, and bad input.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn ok(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

fn err(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

fn tag(account: &str, ids: &[&str], key: &str, value: &str) {
    emulator()
        .control
        .aws(account, R, "ec2", "create_tags", json!({"Resources": ids, "Tags": [{"Key": key, "Value": value}]}))
        .unwrap();
}

#[test]
fn capture_bumps_the_version_and_tags_image_and_snapshots() {
    let (account, ids) = demo_account_with(&[R], 0);
    let instance = ids[R]["web-running"].as_str().unwrap();
    let journal = tempfile::tempdir().unwrap();
    let db = journal.path().join("j.db");
    // `amictl image create` of `instance` into family web, with `extra` flags.
    let create = |extra: &[&str]| {
        amictl_in(&account)
            .args(["image", "create", "--instance", instance, "--family", "web", "--journal"])
            .arg(&db)
            .args(extra)
            .output()
            .unwrap()
    };
    let captured = ok(&create(&["--output", "json"]));
    assert_eq!(captured["version"], "1.6.1", "web's newest is 1.6.0");
    assert_eq!(captured["name"], "web-1.6.1", "no clock in the name: a retry finds it");
    let image_id = captured["image_id"].as_str().unwrap();

    let inv = inventory(&account, &[R]);
    let image = inv["scopes"][0]["images"].as_array().unwrap().iter().find(|i| i["image_id"] == image_id).unwrap();
    assert_eq!(image["state"], "available");
    assert_eq!(image["tags"]["Application"], "web");
    assert_eq!(image["tags"]["Version"], "1.6.1");
    assert_eq!(image["tags"]["SourceInstance"], instance);
    assert_eq!(image["tags"]["SourceAMI"], ids[R]["web-1.6.0"]);
    assert_eq!(image["tags"]["BuiltBy"], "amictl");
    assert!(image["tags"]["CreatedDate"].is_string());
    let snap_id = image["snapshot_ids"][0].as_str().unwrap();
    let snap = inv["scopes"][0]["snapshots"].as_array().unwrap().iter().find(|s| s["snapshot_id"] == snap_id).unwrap();
    assert_eq!(snap["tags"]["Version"], "1.6.1");
    assert_eq!(snap["tags"]["SourceImage"], image_id);

    // Explicit version, minor bump, and the errors.
    let two = ok(&create(&["--version", "2.0.0", "--output", "json"]));
    assert_eq!((two["version"].as_str(), two["reused"].as_bool()), (Some("2.0.0"), Some(false)));
    assert_eq!(ok(&create(&["--bump", "minor", "--output", "json"]))["version"], "2.1.0");
    // The same version again from the same instance is a retry: it finds its image.
    let again = ok(&create(&["--version", "2.0.0", "--output", "json"]));
    assert_eq!((again["image_id"].clone(), again["reused"].as_bool()), (two["image_id"].clone(), Some(true)));
    // A version some other image has is refused.
    let e = err(&create(&["--version", "1.6.0"]));
    assert!(e.contains("1.6.0") && e.contains("exist"), "{e}");
    let e = err(&create(&["--version", "two"]));
    assert!(e.contains("not a semantic version"), "{e}");

    // --no-reboot warns.
    let out = amictl_in(&account)
        .args(["image", "create", "--instance", instance, "--family", "api", "--no-reboot", "--journal"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("may be inconsistent"));

    // Journaled.
    let runs = ok(&amictl().args(["history", "--output", "json", "--journal"]).arg(&db).output().unwrap());
    assert_eq!(runs["schema"], "amictl.history/v1");
    let runs = runs["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["command"] == "image create"));
    assert_eq!(runs.iter().filter(|r| r["status"] == "completed").count(), 5, "four captures and one retry");
    assert!(runs.iter().all(|r| r["actions"] == 3 && r["done"] == 3), "a capture is three steps: {runs:?}");
}

#[test]
fn capture_refuses_missing_and_terminated_instances() {
    let (account, ids) = demo_account_with(&[R], 0);
    let e = err(&amictl_in(&account)
        .args(["image", "create", "--instance", "i-0123456789abcdef0", "--family", "web"])
        .output()
        .unwrap());
    assert!(e.contains("instance i-0123456789abcdef0 not found") && e.contains(&format!("{account}/{R}")), "{e}");
    let dead = ids[R]["worker-terminated"].as_str().unwrap();
    let e =
        err(&amictl_in(&account).args(["image", "create", "--instance", dead, "--family", "worker"]).output().unwrap());
    assert!(e.contains("terminated"), "{e}");
}

#[test]
fn list_is_newest_first_with_use_and_status() {
    let (account, ids) = demo_account_with(&[R], 0);
    tag(&account, &[ids[R]["web-1.6.0"].as_str().unwrap()], "amictl:validation", "passed");
    let rows =
        ok(&amictl_in(&account).args(["image", "list", "--family", "web", "--output", "json"]).output().unwrap());
    assert_eq!(rows["schema"], "amictl.image-list/v1");
    let rows = &rows["images"];
    let versions: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1.6.0", "1.5.0", "1.4.0", "1.3.0", "1.2.0", "1.1.0"]);
    let newest = &rows[0];
    assert_eq!(newest["validation"], "passed");
    assert_eq!(newest["scan"], "passed");
    assert!(newest["in_use_summary"].as_str().unwrap().contains("1 instance(s)"), "{newest}");
    assert_eq!(rows[5]["scan"], "none");
    let e = err(&amictl_in(&account).args(["image", "list", "--family", "nope"]).output().unwrap());
    assert!(e.contains("family nope"), "{e}");
}

#[test]
fn promote_history_and_rollback_through_ssm() {
    let (account, ids) = demo_account_with(&[R], 0);
    let id = |n: &str| ids[R][n].as_str().unwrap().to_string();
    tag(&account, &[&id("worker-1.1.0"), &id("worker-1.6.0")], "amictl:validation", "passed");
    tag(&account, &[&id("worker-1.1.0"), &id("worker-1.6.0")], "amictl:scan", "passed");
    tag(&account, &[&id("worker-1.1.0")], "amictl:scan", "passed");
    let promote_prod = |image: &str| {
        let args =
            ["channel", "promote", "--family", "worker", "--channel", "prod", "--image", image, "--output", "json"];
        ok(&amictl_in(&account).args(args).output().unwrap())
    };

    let first = promote_prod(&id("worker-1.1.0"));
    assert_eq!(first["parameter"], "/amictl/worker/prod");
    assert!(first["previous"].is_null());
    let second = promote_prod(&id("worker-1.6.0"));
    assert_eq!(second["previous"], id("worker-1.1.0"));

    // The parameter is real: SSM answers with the image id, typed aws:ec2:image.
    let p =
        emulator().control.aws(&account, R, "ssm", "get_parameter", json!({"Name": "/amictl/worker/prod"})).unwrap();
    assert_eq!(p["Parameter"]["Value"], id("worker-1.6.0"));
    assert_eq!(p["Parameter"]["DataType"], "aws:ec2:image");

    let hist = ok(&amictl_in(&account)
        .args(["channel", "history", "--family", "worker", "--channel", "prod", "--output", "json"])
        .output()
        .unwrap());
    let h = hist["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["note"]["action"], "promote");
    assert_eq!(h[1]["note"]["previous"], id("worker-1.1.0"));
    assert!(h[1]["note"]["by"].as_str().unwrap().contains(&account), "{}", h[1]["note"]["by"]);

    // The image the channel pointed at is protected from retirement, even though nothing runs it.
    let plan = ok(&amictl_in(&account)
        .args(["retire", "--keep", "0", "--min-age", "0d", "--now", "--output", "json"])
        .output()
        .unwrap());
    let v = plan["images"].as_array().unwrap().iter().find(|i| i["image_id"] == id("worker-1.1.0")).unwrap();
    assert_eq!(v["verdict"], "keep");
    assert!(v["reasons"].as_array().unwrap().iter().any(|r| r["code"] == "channel"), "{v}");

    let back = ok(&amictl_in(&account)
        .args(["channel", "rollback", "--family", "worker", "--channel", "prod", "--output", "json"])
        .output()
        .unwrap());
    assert_eq!(back["image_id"], id("worker-1.1.0"));
    assert_eq!(back["previous"], id("worker-1.6.0"));
    let p =
        emulator().control.aws(&account, R, "ssm", "get_parameter", json!({"Name": "/amictl/worker/prod"})).unwrap();
    assert_eq!(p["Parameter"]["Value"], id("worker-1.1.0"));
    let hist = ok(&amictl_in(&account)
        .args(["channel", "history", "--family", "worker", "--channel", "prod", "--output", "json"])
        .output()
        .unwrap());
    assert_eq!(hist["history"].as_array().unwrap().last().unwrap()["note"]["action"], "rollback");

    // Refusals: unvalidated, wrong family, unknown channel.
    let e = err(&amictl_in(&account)
        .args(["channel", "promote", "--family", "worker", "--channel", "prod", "--image", &id("worker-1.3.0")])
        .output()
        .unwrap());
    assert!(e.contains("has not been validated") && e.contains("--force"), "{e}");
    let forced = amictl_in(&account)
        .args([
            "channel",
            "promote",
            "--family",
            "worker",
            "--channel",
            "canary",
            "--image",
            &id("worker-1.3.0"),
            "--force",
        ])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let e = err(&amictl_in(&account)
        .args(["channel", "promote", "--family", "web", "--channel", "prod", "--image", &id("worker-1.6.0")])
        .output()
        .unwrap());
    assert!(e.contains("belongs to family worker"), "{e}");
    let e = err(&amictl_in(&account)
        .args(["channel", "history", "--family", "worker", "--channel", "nope"])
        .output()
        .unwrap());
    assert!(e.contains("channel nope of family worker (SSM parameter /amictl/worker/nope) not found"), "{e}");
    let e = err(&amictl_in(&account)
        .args(["channel", "rollback", "--family", "worker", "--channel", "nope"])
        .output()
        .unwrap());
    assert!(e.contains("/amictl/worker/nope"), "{e}");
}

#[test]
fn lineage_across_three_generations_flags_outdated_images() {
    let (account, ids) = demo_account_with(&[R], 0);
    let id = |n: &str| ids[R][n].as_str().unwrap().to_string();
    let forest = ok(&amictl_in(&account).args(["image", "lineage", "--output", "json"]).output().unwrap());
    assert_eq!(forest["schema"], "amictl.lineage/v1");
    let root = forest["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["image_id"] == id("base-al2023-2025.10.0"))
        .expect("the old base is a root");
    let kids: Vec<&Value> = root["children"].as_array().unwrap().iter().collect();
    let base_new = kids.iter().find(|k| k["image_id"] == id("base-al2023-2026.09.0")).expect("generation 2");
    let gen3: Vec<&str> =
        base_new["children"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert!(gen3.contains(&"web-1.4.0") && gen3.contains(&"api-1.6.0"), "{gen3:?}");
    // web-1.1.0 was built from the old base; a newer base exists: outdated. web-1.4.0 is not.
    let old = kids.iter().find(|k| k["name"] == "web-1.1.0").unwrap();
    assert!(old["outdated_by"].as_str().unwrap().contains(&id("base-al2023-2026.09.0")), "{old}");
    let fresh = base_new["children"].as_array().unwrap().iter().find(|k| k["name"] == "web-1.4.0").unwrap();
    assert!(fresh["outdated_by"].is_null());

    let out = amictl_in(&account).args(["image", "lineage", "--family", "web"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("└── ") && text.contains("[OUTDATED"), "{text}");
    // The family's images and their bases; no other family's image beside them.
    assert!(text.contains("web-1.4.0") && text.contains("base-al2023-2026.09.0"), "{text}");
    assert!(!text.contains("api-1.6.0"), "another family listed: {text}");
}

#[test]
fn revoke_with_descendants_blocks_promotion_and_shows_in_audit() {
    let (account, ids) = demo_account_with(&[R], 0);
    let id = |n: &str| ids[R][n].as_str().unwrap().to_string();
    tag(&account, &[&id("web-1.6.0")], "amictl:validation", "passed");
    let revoked = ok(&amictl_in(&account)
        .args([
            "image",
            "revoke",
            &id("base-al2023-2026.09.0"),
            "--descendants",
            "--reason",
            "CVE-2026-0001 in openssl",
            "--output",
            "json",
        ])
        .output()
        .unwrap());
    let list: Vec<&str> = revoked["image_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for n in ["base-al2023-2026.09.0", "web-1.4.0", "web-1.6.0", "api-1.4.0", "worker-1.6.0"] {
        assert!(list.contains(&id(n).as_str()), "{n} should be revoked: {list:?}");
    }
    assert!(!list.contains(&id("web-1.3.0").as_str()), "built from the old base: not a descendant");

    let e = err(&amictl_in(&account)
        .args(["channel", "promote", "--family", "web", "--channel", "prod", "--image", &id("web-1.6.0")])
        .output()
        .unwrap());
    assert!(e.contains("is revoked (CVE-2026-0001 in openssl)"), "{e}");

    let out = amictl_in(&account).args(["audit", "--output", "json"]).output().unwrap();
    let doc = json(&out);
    let has = |rule: &str, resource: &str| {
        doc["findings"].as_array().unwrap().iter().any(|f| f["rule"] == rule && f["resource"] == resource)
    };
    assert!(has("instance-ami-revoked", &id("web-running")));
    assert!(has("asg-ami-revoked", "api-prod"), "api-prod launches api-1.4.0 ($Default)");
    assert!(has("ami-revoked", &id("web-1.6.0")));
}

#[test]
fn revoking_an_image_of_another_account_is_refused() {
    let (account, _) = demo_account_with(&[R], 0);
    // The public vendor image every emulated account sees, owned by 137112412989.
    let e =
        err(&amictl_in(&account).args(["image", "revoke", "ami-0a1b2c3d4e5f60718", "--reason", "x"]).output().unwrap());
    assert!(e.contains("owned by account 137112412989") && e.contains("only its owner can revoke it"), "{e}");
    let e =
        err(&amictl_in(&account).args(["image", "revoke", "ami-0000000000000dead", "--reason", "x"]).output().unwrap());
    assert!(e.contains("AMI ami-0000000000000dead not found"), "{e}");
}
