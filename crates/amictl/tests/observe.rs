//! What people see outside a terminal: `report --html` opened in a real headless browser
//! (Debian's chromium), `metrics publish` and `dashboard` read back from CloudWatch, and
//! `audit --notify` read back from an SQS queue subscribed to the SNS topic.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn image(account: &str, family: &str, version: &str, days_ago: f64) -> String {
    let id =
        image_from_instance(account, &format!("{family}-{version}"), &[("Application", family), ("Version", version)]);
    emulator().control.backdate(account, R, &id, days_ago).unwrap();
    id
}

fn run_on(account: &str, image: &str, n: i64) {
    aws(account, "ec2", "run_instances", json!({"ImageId": image, "MinCount": n, "MaxCount": n}));
}

/// web: 400 and 10 days old, 3 instances on the old one, 1 on the new; db: 100 days, 2 instances.
fn estate() -> (String, String) {
    let account = fresh_account();
    let old = image(&account, "web", "1.0.0", 400.0);
    let new = image(&account, "web", "1.1.0", 10.0);
    let db = image(&account, "db", "2.0.0", 100.0);
    run_on(&account, &old, 3);
    run_on(&account, &new, 1);
    run_on(&account, &db, 2);
    (account, old)
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh").args(["-c", &format!("command -v {c}")]).output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    panic!("no chromium: scripts/test installs Debian's chromium (apt-get install chromium)");
}

fn headless(browser: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_html_report_opens_offline_in_a_browser_with_its_charts_and_filters() {
    let (account, _) = estate();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let journal = dir.path().join("journal.db");
    let out = amictl_in(&account)
        .args(["report", "--html", page.to_str().unwrap(), "--journal", journal.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let url = format!("file://{}", page.display());
    let browser = chromium();

    // The DOM after the page's script ran: the filter reports how many findings it shows.
    let dom = headless(&browser, dir.path(), &["--dump-dom", &url]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    let stderr = String::from_utf8_lossy(&dom.stderr).to_string();
    for bad in ["Uncaught", "ERROR:CONSOLE", "Failed to load resource", "net::ERR"] {
        assert!(!stderr.contains(bad), "the page logged an error ({bad}): {stderr}");
    }
    let histogram = html.matches(r#"class="chart age-histogram""#).count();
    assert_eq!(histogram, 2, "one age histogram per family");
    let bars = |chart: &str| -> usize {
        html.split(&format!(r#"class="chart {chart}""#))
            .skip(1)
            .map(|svg| svg.split("</svg>").next().unwrap().matches(r#"<rect class="bar""#).count())
            .sum()
    };
    assert_eq!(bars("age-histogram"), 2 * 5, "five age buckets per family");
    assert_eq!(bars("fleet-share"), 3, "one bar per image something runs");
    assert!(html.contains(r#"data-value="3""#), "the old web image runs on 3 instances");
    let shown = html.split(r#"id="shown">"#).nth(1).and_then(|s| s.split('<').next()).unwrap_or("");
    assert!(shown.ends_with("shown") && !shown.starts_with("0 of"), "the filter script ran: {shown:?}");

    let shot = dir.path().join("report.png");
    let s =
        headless(&browser, dir.path(), &[&format!("--screenshot={}", shot.display()), "--window-size=1280,2400", &url]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "a real screenshot ({} bytes)", png.len());
    // Kept next to the test's target directory for a person to look at.
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    std::fs::copy(&shot, keep).unwrap();
}

#[test]
fn metrics_and_the_dashboard_land_in_cloudwatch() {
    let (account, _) = estate();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let out = amictl_in(&account)
        .args([
            "metrics",
            "publish",
            "--namespace",
            "amictl/test",
            "--journal",
            journal.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let doc = json(&out);
    let value = |name: &str, family: Option<&str>| -> f64 {
        doc["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name && m["dimensions"].get(0).map(|d| d[1].as_str()) == family.map(Some))
            .unwrap_or_else(|| panic!("no {name} {family:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(value("ImageCount", Some("web")), 2.0);
    assert_eq!(value("OldestImageAgeDays", Some("web")), 400.0);
    assert_eq!(value("InstancesOnOutdatedImages", None), 3.0);
    let listed = aws(&account, "cloudwatch", "list_metrics", json!({"Namespace": "amictl/test"}));
    let names: Vec<&str> =
        listed["Metrics"].as_array().unwrap().iter().map(|m| m["MetricName"].as_str().unwrap()).collect();
    for n in [
        "ImageCount",
        "OldestImageAgeDays",
        "NonCompliantImages",
        "InstancesOnOutdatedImages",
        "InstancesOnRevokedImages",
    ] {
        assert!(names.contains(&n), "{n} not in CloudWatch: {names:?}");
    }

    let out =
        amictl_in(&account).args(["dashboard", "--name", "fleet", "--namespace", "amictl/test"]).output().unwrap();
    assert_code(&out, 0);
    let got = aws(&account, "cloudwatch", "get_dashboard", json!({"DashboardName": "fleet"}));
    let body: Value = serde_json::from_str(got["DashboardBody"].as_str().unwrap()).unwrap();
    let text = body.to_string();
    assert!(text.contains(r#"["amictl/test","ImageCount","Family","db"]"#), "{text}");
    assert!(text.contains(r#"["amictl/test","ImageCount","Family","web"]"#), "{text}");
}

#[test]
fn audit_notify_sends_the_serious_findings_to_the_topic() {
    let (account, old) = estate();
    let (topic, queue) = topic_with_queue(&account, "audit");
    let receive = || received(&account, &queue);

    // Nothing critical: nothing sent.
    let out = amictl_in(&account)
        .args(["audit", "--notify", "--topic-arn", &topic, "--notify-severity", "critical"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing sent"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(receive().is_empty());

    let out = amictl_in(&account)
        .args(["audit", "--notify", "--topic-arn", &topic, "--notify-severity", "medium"])
        .output()
        .unwrap();
    // Medium findings only: notified, and below the default --fail-on (high).
    assert_code(&out, 0);
    let got = receive();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("at or above medium") && got[0].contains(&old) && got[0].contains("ami-too-old"),
        "{}",
        got[0]
    );

    let missing = amictl_in(&account).args(["audit", "--notify"]).output().unwrap();
    assert_code(&missing, 2);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--notify needs an SNS topic"));
}

#[test]
fn a_pipeline_command_tells_the_configured_topic_when_it_starts_and_ends() {
    let account = fresh_account();
    let (topic, queue) = topic_with_queue(&account, "runs");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("amictl.toml");
    std::fs::write(&config, format!("[alerts]\ntopic_arn = \"{topic}\"\n")).unwrap();
    let journal = dir.path().join("journal.db");
    // A patch of an instance that is not there: the run fails, and says so.
    let out = amictl_in(&account)
        .args([
            "--config",
            config.to_str().unwrap(),
            "patch",
            "--instance",
            "i-0123456789abcdef0",
            "--command",
            "true",
            "--yes",
        ])
        .args(["--journal", journal.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    let bodies = received(&account, &queue);
    assert!(bodies.iter().any(|b| b.contains("amictl patch started")), "{bodies:?}");
    assert!(
        bodies.iter().any(|b| b.contains("amictl patch FAILED") && b.contains("i-0123456789abcdef0")),
        "{bodies:?}"
    );
    // A plan changes nothing: nothing is told.
    let before = bodies.len();
    let plan = amictl_in(&account).args(["--config", config.to_str().unwrap(), "retire"]).output().unwrap();
    assert_code(&plan, 0);
    let got = received(&account, &queue);
    assert!(got.is_empty(), "{before} then {got:?}");
}
