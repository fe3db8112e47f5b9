//! Everyday use: pipes that close early, endpoints that never answer, messages a person can
//! act on, and one JSON style for every document.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const R: &str = "us-east-1";

/// The real binary with the test environment, as a std Command (for custom pipes).
fn raw(account: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("amictl"));
    cmd.current_dir(std::env::temp_dir()).env_clear().envs(test_env()).args(["--role-arn", &role_arn(account)]);
    cmd
}

/// Runs `args` with stdout's reader gone before the first byte is written; returns the exit
/// code and stderr.
fn with_closed_stdout(account: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = raw(account).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away (as `| head -0` would)
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_reader_that_goes_away_stops_output_quietly_with_the_commands_exit_code() {
    let (account, _) = demo_account_with(&[R], 0);
    let cases: [&[&str]; 7] = [
        &["audit", "--output", "json"],
        &["audit"],
        &["inventory", "--output", "json"],
        &["usage"],
        &["retire", "--keep", "1"],
        &["image", "list", "--output", "json"],
        &["image", "lineage"],
    ];
    for args in cases {
        let normal = amictl_in(&account).args(args).output().unwrap();
        assert!(!normal.stdout.is_empty(), "{args:?} prints something");
        let (code, stderr) = with_closed_stdout(&account, args);
        assert_eq!(code, normal.status.code(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
}

/// A loopback port that accepts and holds every connection, never answering; returns the port.
fn silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

#[test]
fn an_endpoint_that_never_answers_fails_in_one_line_naming_it() {
    let port = silent_listener();
    let out = amictl()
        .timeout(Duration::from_secs(120))
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["audit", "--call-timeout", "2s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GetCallerIdentity") && stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn a_call_and_its_retries_share_one_budget() {
    let port = silent_listener();
    // The default 10 attempts of 1 s each (plus backoff) would take over 10 s; the call's budget
    // of three attempt timeouts ends it after about 3 s.
    let out = amictl()
        .timeout(Duration::from_secs(9))
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AMICTL_CALL_TIMEOUT", "1s")
        .args(["audit"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GetCallerIdentity") && stderr.contains("timeout"), "{stderr}");
}

#[test]
fn a_call_timeout_comes_from_the_config_too_and_is_checked() {
    let out = amictl().args(["audit", "--call-timeout", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--call-timeout"));
}

#[test]
fn no_region_is_one_plain_line() {
    // The instance metadata service is looked for on a closed loopback port, never on the
    // link-local address.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = amictl()
        .env_remove("AWS_REGION")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://127.0.0.1:{closed}"))
        .args(["audit"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["error: no region: pass --region, set AWS_REGION, or set `region` in the profile or `regions` in amictl.toml"],
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes on a non-terminal: {stderr:?}");
}

fn one_line_error(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_numbers_name_the_flag_and_what_it_accepts() {
    for args in [["retire", "--keep", "-1"], ["retire", "--keep=-1", "--now"], ["retire", "--rate", "0.001"]] {
        let e = one_line_error(&amictl().args(args).output().unwrap());
        let flag = args[1].split('=').next().unwrap();
        assert!(e.contains(flag) && (e.contains("whole number") || e.contains("calls per second")), "{e}");
        assert!(!e.contains("unexpected argument") && !e.contains("invalid digit"), "{e}");
    }
}

#[test]
fn config_problems_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = one_line_error(&amictl().args(["audit", "--config"]).arg(&missing).output().unwrap());
    assert!(e.contains("cannot read the config file") && e.contains("No such file"), "{e}");
    assert!(!e.contains("toml:No"), "{e}");

    let file = dir.path().join("amictl.toml");
    std::fs::write(&file, "regions = [\"us-east-1\"]\n\n[families]\nname_pattern = \"(unclosed\"\n").unwrap();
    let e = one_line_error(&amictl().args(["audit", "--config"]).arg(&file).output().unwrap());
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("amictl.toml:4") && e.contains("families.name_pattern") && e.contains("unclosed"), "{e}");

    std::fs::write(&file, b"regions = [\"us-east-1\"]\n# caf\xe9\n").unwrap();
    let e = one_line_error(&amictl().args(["audit", "--config"]).arg(&file).output().unwrap());
    assert!(e.contains("amictl.toml:2") && e.contains("UTF-8"), "{e}");

    let e = one_line_error(&amictl().args(["audit", "--family-pattern", "(x"]).output().unwrap());
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("--family-pattern"), "{e}");

    let e = one_line_error(&amictl().args(["retire", "--grace-disabled", "1000y"]).output().unwrap());
    assert!(e.contains("--grace-disabled") && e.contains("10 years"), "{e}");
}

#[test]
fn lineage_and_list_agree_on_families() {
    let (account, ids) = demo_account_with(&[R], 0);
    // A family known only by the name pattern (base-al2023-2026.09.0 carries no Application tag).
    let out =
        amictl_in(&account).args(["image", "list", "--family", "base-al2023", "--output", "json"]).output().unwrap();
    assert_code(&out, 0);
    let rows = json(&out);
    assert!(
        rows["images"].as_array().unwrap().iter().any(|r| r["image_id"] == ids[R]["base-al2023-2026.09.0"]),
        "{rows}"
    );

    for cmd in [["image", "list"], ["image", "lineage"]] {
        let out = amictl_in(&account).args(cmd).args(["--family", "nosuch"]).output().unwrap();
        let e = one_line_error(&out);
        assert!(e.contains("family nosuch") && e.contains("not found"), "{cmd:?}: {e}");
    }

    // No image is outdated because of itself.
    let text = String::from_utf8(amictl_in(&account).args(["image", "lineage"]).output().unwrap().stdout).unwrap();
    for line in text.lines().filter(|l| l.contains("OUTDATED")) {
        let own = line.split_whitespace().find(|w| w.starts_with("ami-")).unwrap();
        let outdated = &line[line.find("[OUTDATED").unwrap()..];
        assert!(!outdated.starts_with(&format!("[OUTDATED: {own}")), "{line}");
    }
    let base = ids[R]["base-al2023-2026.09.0"].as_str().unwrap();
    let own_line = text.lines().find(|l| l.split_whitespace().find(|w| w.starts_with("ami-")) == Some(base)).unwrap();
    assert!(!own_line.contains("OUTDATED"), "a newer base-al2023 is not outdated by its own family: {own_line}");
}

/// Every object in `v`, depth first.
fn objects(v: &Value) -> Vec<&serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            out.push(m);
            m.values().for_each(|x| out.extend(objects(x)));
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(objects(x))),
        _ => {}
    }
    out
}

#[test]
fn every_json_document_has_a_schema_and_one_name_per_thing() {
    let (account, _) = demo_account_with(&[R], 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let journal = db.to_str().unwrap();
    let commands: [&[&str]; 8] = [
        &["audit"],
        &["usage"],
        &["inventory"],
        &["retire", "--keep", "1"],
        &["image", "list"],
        &["image", "lineage"],
        &["history", "--journal", journal],
        &["bench", "plan", "--synthetic", "100", "--iterations", "1"],
    ];
    let stamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").unwrap();
    for args in commands {
        let out = amictl_in(&account).args(args).args(["--output", "json"]).output().unwrap();
        assert!(out.status.code().is_some_and(|c| c <= 1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let doc = json(&out);
        let schema = doc["schema"].as_str().unwrap_or_else(|| panic!("{args:?}: no schema in {doc}"));
        assert!(regex::Regex::new(r"^amictl\.[a-z-]+/v\d+$").unwrap().is_match(schema), "{schema}");
        for o in objects(&doc) {
            if let Some(Value::String(id)) = o.get("id") {
                assert!(
                    !["ami-", "i-", "snap-", "lt-"].iter().any(|p| id.starts_with(p)),
                    "{args:?}: a bare `id` for {id}; amictl names it image_id, instance_id, …"
                );
            }
            for key in ["created_at", "as_of", "generated_at", "creation_date", "launch_time", "start_time"] {
                if let Some(Value::String(t)) = o.get(key) {
                    assert!(stamp.is_match(t), "{args:?}: {key} {t} is not to the second");
                }
            }
        }
    }
}
