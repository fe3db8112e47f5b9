//! Bad input: each gives a one-line actionable error on stderr and exit code 2, never a panic.

mod common;

use common::*;

fn assert_one_line_error(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {stderr}");
    }
}

#[test]
fn unknown_region() {
    let out = amictl().args(["audit", "--region", "us-nowhere-1"]).output().unwrap();
    assert_one_line_error(&out, &["unknown region \"us-nowhere-1\"", "eu-west-1"]);
}

#[test]
fn malformed_region_name() {
    let out = amictl().args(["audit", "--region", "US East"]).output().unwrap();
    assert_one_line_error(&out, &["unknown region", "not a region name"]);
}

#[test]
fn unreachable_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = amictl()
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["audit"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["GetCallerIdentity", "--endpoint-url"]);
}

#[test]
fn missing_credentials() {
    let out =
        amictl().env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").args(["audit"]).output().unwrap();
    assert_one_line_error(&out, &["credentials", "--profile"]);
}

#[test]
fn expired_credentials() {
    let out =
        amictl().env("AWS_ACCESS_KEY_ID", "EXPIREDKEY").env("AWS_MAX_ATTEMPTS", "1").args(["audit"]).output().unwrap();
    assert_one_line_error(&out, &["ExpiredToken", "expired", "aws sso login"]);
}

#[test]
fn unknown_profile() {
    // An explicit profile wins over the environment's keys, as with the AWS CLI.
    let out = amictl().args(["audit", "--profile", "nope"]).output().unwrap();
    assert_one_line_error(&out, &["profile \"nope\"", "AWS_CONFIG_FILE"]);
}

#[test]
fn malformed_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("amictl.toml");
    std::fs::write(&file, "regions = [\"us-east-1\"]\n\n[compliance]\nmax_age = 90\n").unwrap();
    let out = amictl().args(["audit", "--config"]).arg(&file).output().unwrap();
    assert_one_line_error(&out, &["amictl.toml:4", "compliance.max_age"]);

    std::fs::write(&file, "[compliance]\nmax_agee = \"90d\"\n").unwrap();
    let out = amictl().current_dir(dir.path()).args(["audit"]).output().unwrap();
    assert_one_line_error(&out, &["amictl.toml:2", "max_agee"]);
}

#[test]
fn missing_config_file() {
    let out = amictl().args(["audit", "--config", "/nonexistent/amictl.toml"]).output().unwrap();
    assert_one_line_error(&out, &["/nonexistent/amictl.toml"]);
}

#[test]
fn ami_that_does_not_exist() {
    let account = fresh_account();
    let out = amictl_in(&account).args(["usage", "ami-0123456789abcdef0"]).output().unwrap();
    assert_one_line_error(&out, &["ami-0123456789abcdef0", "not found", &format!("{account}/us-east-1")]);
}

#[test]
fn not_an_ami_id() {
    let out = amictl().args(["usage", "i-0123"]).output().unwrap();
    assert_one_line_error(&out, &["not an AMI id"]);
}

#[test]
fn bad_duration_flag() {
    let out = amictl().args(["audit", "--max-age", "ninety"]).output().unwrap();
    assert_one_line_error(&out, &["--max-age", "ninety"]);
}

#[test]
fn help_has_examples() {
    for args in [vec!["--help"], vec!["audit", "--help"], vec!["usage", "--help"], vec!["inventory", "--help"]] {
        let out = amictl().args(&args).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"), "{args:?}");
    }
}

#[test]
fn bench_retire_refuses_anything_but_the_local_emulator() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for endpoint in [format!("http://127.0.0.1:{closed}"), "https://ec2.us-east-1.amazonaws.com".to_string()] {
        let out = amictl().env("AWS_ENDPOINT_URL", &endpoint).args(["bench", "retire"]).output().unwrap();
        assert_one_line_error(&out, &["only against amictl's local emulator", &endpoint]);
    }
}
