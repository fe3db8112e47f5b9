//! Many accounts: an AMI shared with an account amictl reads is judged by what that account
//! does with it. Used there: kept, with that account's evidence. Unused there: taken back with
//! `retire --unshare-unused`, then retired. Shared with an account amictl cannot reach: kept,
//! with that reason. One configured account that cannot be reached is reported and makes
//! an apply refuse.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn image(account: &str, name: &str) -> String {
    let id = image_from_instance(account, name, &[("Application", "golden")]);
    emulator().control.backdate(account, R, &id, 200.0).unwrap();
    id
}

fn share(account: &str, image: &str, with: &str) {
    aws(
        account,
        "ec2",
        "modify_image_attribute",
        json!({"ImageId": image, "LaunchPermission": {"Add": [{"UserId": with}]}}),
    );
}

fn shared_with(account: &str, image: &str) -> Vec<String> {
    let a = aws(account, "ec2", "describe_image_attribute", json!({"ImageId": image, "Attribute": "launchPermission"}));
    a["LaunchPermissions"].as_array().unwrap().iter().filter_map(|p| p["UserId"].as_str().map(str::to_string)).collect()
}

fn state(account: &str, image: &str) -> String {
    let d = aws(
        account,
        "ec2",
        "describe_images",
        json!({"Owners": ["self"], "IncludeDeprecated": true, "IncludeDisabled": true}),
    );
    d["Images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ImageId"] == image)
        .map(|i| i["State"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "gone".into())
}

struct Org {
    golden: String,
    used: String,
    unused: String,
    far: String,
    plain: String,
    consumer: String,
    idle: String,
}

/// A golden-image account sharing `used` with `consumer` (which runs it), `unused` with `idle`
/// (which does not), `far` with an account amictl does not read; `plain` is shared with nobody.
fn org() -> Org {
    let (golden, consumer, idle) = (fresh_account(), fresh_account(), fresh_account());
    let (used, unused, far, plain) = (
        image(&golden, "golden-1"),
        image(&golden, "golden-2"),
        image(&golden, "golden-3"),
        image(&golden, "golden-4"),
    );
    share(&golden, &used, &consumer);
    share(&golden, &unused, &idle);
    share(&golden, &far, "999999999999");
    aws(
        &consumer,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "app", "LaunchTemplateData": {"ImageId": used, "InstanceType": "t3.micro"}}),
    );
    Org { golden, used, unused, far, plain, consumer, idle }
}

fn retire(o: &Org, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    amictl_in(&o.golden)
        .args(["--role-arn", &role_arn(&o.consumer), "--role-arn", &role_arn(&o.idle)])
        .args([
            "retire",
            "--keep",
            "0",
            "--min-age",
            "30d",
            "--now",
            "--journal",
            journal.to_str().unwrap(),
            "-o",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn verdict<'a>(plan: &'a Value, image: &str) -> &'a Value {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == image)
        .unwrap_or_else(|| panic!("{image} not planned"))
}

fn reasons(plan: &Value, image: &str) -> String {
    verdict(plan, image)["reasons"].to_string()
}

#[test]
fn shared_images_are_judged_by_what_the_accounts_they_are_shared_with_do() {
    let o = org();
    let plan = retire(&o, &[]);
    assert_code(&plan, 0);
    let plan = json(&plan);
    // Used in the consumer account: kept, with that account's evidence.
    assert_eq!(verdict(&plan, &o.used)["verdict"], "keep");
    let why = reasons(&plan, &o.used);
    assert!(why.contains(&format!("used in {} by launch template", o.consumer)), "{why}");
    // Unreachable account: kept, with that reason.
    assert_eq!(verdict(&plan, &o.far)["verdict"], "keep");
    assert!(reasons(&plan, &o.far).contains("999999999999, which amictl cannot reach"), "{}", reasons(&plan, &o.far));
    // Shared with an account that does not use it: kept without --unshare-unused.
    assert_eq!(verdict(&plan, &o.unused)["verdict"], "keep");
    assert!(reasons(&plan, &o.unused).contains(&format!("shared with {}, unused there", o.idle)));
    assert_eq!(verdict(&plan, &o.plain)["verdict"], "retire");

    // --unshare-unused: taken back first …
    let first = retire(&o, &["--unshare-unused", "--apply", "--yes"]);
    assert_code(&first, 0);
    assert!(shared_with(&o.golden, &o.unused).is_empty(), "{} still shared", o.unused);
    assert_eq!(state(&o.golden, &o.unused), "available", "retired only after the unsharing's grace");
    assert_eq!(shared_with(&o.golden, &o.used), vec![o.consumer.clone()]);
    assert_eq!(shared_with(&o.golden, &o.far), vec!["999999999999".to_string()]);
    assert_eq!(state(&o.golden, &o.plain), "gone");
    // … then retired by the next run (--now: no grace), while the others stay.
    let second = retire(&o, &["--unshare-unused", "--apply", "--yes"]);
    assert_code(&second, 0);
    assert_eq!(state(&o.golden, &o.unused), "gone");
    assert_eq!(state(&o.golden, &o.used), "available");
    assert_eq!(state(&o.golden, &o.far), "available");
}

#[test]
fn an_account_that_starts_using_the_image_before_the_unsharing_keeps_it() {
    let o = org();
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    let saved = retire(&o, &["--unshare-unused", "--plan-out", plan_file.to_str().unwrap()]);
    assert_code(&saved, 0);
    assert!(std::fs::read_to_string(&plan_file).unwrap().contains("\"unshare\""));
    // The idle account launches it between plan and apply.
    aws(
        &o.idle,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "late", "LaunchTemplateData": {"ImageId": o.unused}}),
    );
    let journal = dir.path().join("journal.db");
    let out = amictl_in(&o.golden)
        .args(["--role-arn", &role_arn(&o.consumer), "--role-arn", &role_arn(&o.idle)])
        .args(["apply", plan_file.to_str().unwrap(), "--yes", "--journal", journal.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert_eq!(shared_with(&o.golden, &o.unused), vec![o.idle.clone()], "still shared: it is used now");
}

#[test]
fn an_account_that_cannot_be_reached_is_reported_and_an_apply_refuses() {
    let o = org();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    // The idle account's role refuses amictl: that account cannot be read.
    emulator().control.deny_role(&role_arn(&o.idle), true).unwrap();
    let run = |extra: &[&str]| {
        amictl_in(&o.golden)
            .args(["--role-arn", &role_arn(&o.consumer), "--role-arn", &role_arn(&o.idle)])
            .args(["retire", "--keep", "0", "--min-age", "30d", "--now", "--journal", journal.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let plan = run(&["-o", "json"]);
    let stderr = String::from_utf8_lossy(&plan.stderr).to_string();
    assert!(
        stderr.contains(&format!("{}/us-east-1 could not be listed", o.idle)) && stderr.contains("AccessDenied"),
        "{stderr}"
    );
    assert!(stderr.lines().all(|l| l.len() < 600), "the reason is short enough to read: {stderr}");
    // What is shared with it stays: what it does with the image is unknown.
    let plan = json(&plan);
    assert_eq!(verdict(&plan, &o.unused)["verdict"], "keep");
    let why = reasons(&plan, &o.unused);
    assert!(why.contains(&format!("shared with {}, which amictl cannot reach", o.idle)), "{why}");
    let apply = run(&["--apply", "--yes"]);
    assert_code(&apply, 2);
    assert!(
        String::from_utf8_lossy(&apply.stderr).contains("incomplete"),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert_eq!(state(&o.golden, &o.plain), "available", "nothing retired");
}

#[test]
fn accounts_are_found_in_the_organization_and_each_is_read_through_the_role() {
    // The organization lives in the account of the caller's own credentials (the emulator's
    // default account), which other tests share: creating it twice is fine.
    let mgmt = "123456789012";
    let _ = emulator().control.aws(mgmt, R, "organizations", "create_organization", json!({"FeatureSet": "ALL"}));
    let mut ids = Vec::new();
    for n in 0..2 {
        let name = format!("workload-{}-{n}", fresh_account());
        let made = aws(
            mgmt,
            "organizations",
            "create_account",
            json!({"Email": format!("{name}@example.com"), "AccountName": name}),
        );
        ids.push(made["CreateAccountStatus"]["AccountId"].as_str().unwrap().to_string());
    }
    // A golden image in the first workload account, shared with the second, which runs it.
    let golden = image(&ids[0], "golden-9");
    share(&ids[0], &golden, &ids[1]);
    aws(
        &ids[1],
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "app", "LaunchTemplateData": {"ImageId": golden}}),
    );
    let out = amictl().args(["--org-role", "amictl-read", "usage", &golden, "-o", "json"]).output().unwrap();
    let doc = json(&out);
    let image = doc["images"].as_array().unwrap().iter().find(|i| i["image_id"] == golden.as_str()).unwrap();
    assert_eq!(image["account"], ids[0].as_str(), "found through the organization");
    let evidence = image["in_use_by"].to_string();
    assert!(evidence.contains(&format!("used in {} by launch template", ids[1])), "{evidence}");
}
