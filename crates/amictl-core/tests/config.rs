use amictl_core::config::Config;
use amictl_core::report::Severity;

#[test]
fn full_config_parses() {
    let c = Config::parse(
        r#"
regions = ["us-east-1", "eu-west-1"]
profile = "prod"

[[accounts]]
name = "prod"
role_arn = "arn:aws:iam::111111111111:role/amictl"

[families]
tag_keys = ["Application", "Family"]
name_pattern = '^(?P<family>[a-z]+)-'

[[families.family]]
name = "base"
name_pattern = "^base-al2023-"

[compliance]
max_age = "180d"
scan_tag = "SecurityScan"
allowed_accounts = ["210987654321"]
fail_on = "medium"
check_sharing = "all"
"#,
        "amictl.toml",
    )
    .unwrap();
    assert_eq!(c.regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(c.compliance.max_age.as_secs(), 180 * 86_400);
    assert_eq!(c.compliance.fail_on, Severity::Medium);
    assert_eq!(c.accounts[0].role_arn, "arn:aws:iam::111111111111:role/amictl");
    assert_eq!(c.families.explicit[0].name, "base");
    c.family_rules().unwrap();
}

#[test]
fn errors_name_file_line_and_key() {
    let text = "regions = [\"us-east-1\"]\n\n[compliance]\nmax_age = 90\n";
    let e = Config::parse(text, "conf/amictl.toml").unwrap_err().to_string();
    assert!(e.contains("conf/amictl.toml:4"), "{e}");
    assert!(e.contains("compliance.max_age"), "{e}");

    let e = Config::parse("[compliance]\nfail_on = \"loud\"\n", "amictl.toml").unwrap_err().to_string();
    assert!(e.contains("amictl.toml:2") && e.contains("compliance.fail_on"), "{e}");

    let e = Config::parse("regoins = [\"us-east-1\"]\n", "amictl.toml").unwrap_err().to_string();
    assert!(e.contains("amictl.toml:1") && e.contains("regoins"), "{e}");

    let e = Config::parse("regions = [\"us-east-1\"\n", "amictl.toml").unwrap_err().to_string();
    assert!(e.contains("amictl.toml:"), "{e}");
}

#[test]
fn bad_family_pattern_is_reported_with_its_setting() {
    let c = Config::parse("[families]\nname_pattern = '([a-z'\n", "amictl.toml").unwrap();
    let e = c.family_rules().unwrap_err().to_string();
    assert!(e.contains("families.name_pattern"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

/// The example in the README is a config a user can copy: it loads, and says what it shows.
#[test]
fn the_readme_example_config_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## amictl.toml").nth(1).expect("an amictl.toml section");
    let example = section.split("```toml").nth(1).and_then(|s| s.split("```").next()).expect("a toml block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("amictl.toml");
    std::fs::write(&path, example).unwrap();
    let c = amictl_core::config::Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.instances.instance_type, "t3.micro");
    assert_eq!(c.validate.commands, vec!["systemctl is-active nginx".to_string()]);
    assert!(c.validate.status_checks);
    assert_eq!(c.bake.command_timeout, std::time::Duration::from_secs(3600));
    assert_eq!(c.scan.fail_on, amictl_core::report::Severity::High);
}
