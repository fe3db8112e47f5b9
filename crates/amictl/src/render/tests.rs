//! What a person sees: tables at 80 and 120 columns, pinned with insta snapshots.

use std::collections::BTreeMap;

use amictl_core::config::{ComplianceConfig, Config};
use amictl_core::inventory::{Image, Instance, Inventory, LaunchPermission, RegionInventory, Snapshot};
use amictl_core::policy::{RetirePolicy, AFTER_TAG, STAGE_TAG};
use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 21, 20, 56).unwrap()
}

fn image(n: u32, name: &str, days: i64, tags: &[(&str, &str)]) -> Image {
    Image {
        id: format!("ami-0{n:016x}"),
        name: name.into(),
        owner: "123456789012".into(),
        state: "available".into(),
        creation_date: Some(now() - chrono::Duration::days(days)),
        public: false,
        description: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        snapshot_ids: vec![format!("snap-0{n:016x}")],
        deprecation_time: None,
    }
}

fn estate() -> Inventory {
    let images = vec![
        image(1, "web-1.0.0", 400, &[("Application", "web")]),
        image(2, "web-1.1.0", 200, &[("Application", "web"), ("amictl:scan", "passed")]),
        image(3, "web-1.2.0", 10, &[("Application", "web"), ("amictl:scan", "passed")]),
        image(
            4,
            "base-al2023-2026.09.0",
            120,
            &[("Application", "base-al2023"), (STAGE_TAG, "deprecated"), (AFTER_TAG, "2026-12-06T00:00:00Z")],
        ),
    ];
    let snapshots = images
        .iter()
        .map(|i| Snapshot {
            id: i.snapshot_ids[0].clone(),
            description: format!("Created by CreateImage(i-0123456789abcdef0) for {}", i.id),
            encrypted: false,
            volume_size_gib: 8,
            start_time: None,
            tags: BTreeMap::new(),
        })
        .collect();
    let instances = vec![Instance {
        id: "i-0123456789abcdef0".into(),
        image_id: images[1].id.clone(),
        state: "running".into(),
        name: Some("web-prod-a".into()),
        launch_time: None,
        tags: BTreeMap::new(),
    }];
    let mut launch_permissions = BTreeMap::new();
    launch_permissions.insert(images[1].id.clone(), vec![LaunchPermission::Account("210987654321".into())]);
    for i in [&images[0], &images[2], &images[3]] {
        launch_permissions.insert(i.id.clone(), vec![]);
    }
    Inventory {
        scopes: vec![RegionInventory {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            images,
            snapshots,
            instances,
            launch_permissions,
            ..Default::default()
        }],
        failures: vec![],
    }
}

fn audit_report() -> (AuditReport, ComplianceConfig) {
    let config = Config::default();
    let rules = config.family_rules().unwrap();
    (amictl_core::audit::audit(&estate(), &rules, &config.compliance, now()), config.compliance)
}

fn plan() -> Plan {
    let rules = Config::default().family_rules().unwrap();
    let policy = RetirePolicy { keep: 1, min_age: std::time::Duration::from_secs(30 * 86_400), ..Default::default() };
    amictl_core::plan::plan(&estate(), &rules, &policy, now())
}

/// Every line fits `width` (measured in characters, as a terminal shows them).
fn assert_fits(text: &str, width: u16) {
    for line in text.lines() {
        assert!(line.chars().count() <= width as usize, "wider than {width}: {line:?}\n{text}");
    }
}

/// Ids and rule names appear whole on one line: none was broken by wrapping.
fn assert_whole(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{w} is not whole in:\n{text}");
    }
}

#[test]
fn audit_table_fits_and_keeps_ids_whole() {
    let (report, policy) = audit_report();
    let ids: Vec<String> = estate().scopes[0].images.iter().map(|i| i.id.clone()).collect();
    for width in [80, 120] {
        let text = audit_table(&report, &policy, true, width);
        assert_fits(&text, width);
        let mut words: Vec<&str> = ids.iter().map(String::as_str).collect();
        words.push("ami-shared-outside-allowlist");
        assert_whole(&text, &words);
        insta::assert_snapshot!(format!("audit_{width}"), text);
    }
}

#[test]
fn finding_messages_do_not_repeat_their_resource() {
    let (report, policy) = audit_report();
    let text = audit_table(&report, &policy, true, 120);
    for f in &report.findings {
        let rows = text.lines().filter(|l| l.contains(&f.resource)).count();
        assert!(rows >= 1, "{} missing:\n{text}", f.resource);
        for line in text.lines().filter(|l| l.contains(&f.resource)) {
            assert_eq!(line.matches(f.resource.as_str()).count(), 1, "repeated: {line}");
        }
    }
}

#[test]
fn split_resource_takes_the_resource_and_its_label_out() {
    assert_eq!(split_resource("ami-1", "ami-1 (web-1) is 400 days old"), (Some("web-1"), "is 400 days old"));
    assert_eq!(split_resource("ami-1", "ami-1 has no tag"), (None, "has no tag"));
    assert_eq!(
        split_resource("i-1", "instance i-1 (running) runs revoked ami-2"),
        (Some("running"), "runs revoked ami-2")
    );
    // A resource named in the middle of a sentence stays where it is.
    assert_eq!(split_resource("ami-1", "the group web runs ami-1 now"), (None, "the group web runs ami-1 now"));
    assert_eq!(split_resource("ami-1", "ami-1"), (None, "ami-1"));
}

#[test]
fn plan_table_fits_and_says_who_waits_until_when() {
    let p = plan();
    for width in [80, 120] {
        let text = plan_table(&p, width);
        assert_fits(&text, width);
        insta::assert_snapshot!(format!("plan_{width}"), text);
    }
    let text = plan_table(&p, 120);
    let waiting = p.images.iter().find(|i| i.verdict == Verdict::Wait).expect("the fixture has a waiting image");
    let line = text.lines().find(|l| l.starts_with("Waiting:")).expect("a Waiting line");
    assert!(line.contains(waiting.image_id.as_str()) && line.contains("2026-12-06T00:00:00Z"), "{line}");
}

#[test]
fn non_terminal_width_is_120() {
    // Under `cargo test` stdout is captured, not a terminal.
    if std::io::stdout().is_terminal() || std::env::var_os("COLUMNS").is_some() {
        return;
    }
    assert_eq!(width(), DEFAULT_WIDTH);
}

#[test]
fn lineage_tree_renders() {
    let images = estate().scopes[0].images.clone();
    let rules = Config::default().family_rules().unwrap();
    let forest = amictl_core::catalog::lineage(&images, "SourceAMI", &|i| rules.family_of(i).map(|m| m.family));
    let text = lineage(&forest);
    assert_eq!(text.lines().count(), images.len(), "{text}");
}

#[test]
fn wrap_breaks_at_spaces_and_keeps_long_words_whole() {
    assert_eq!(wrap("aa bb cc", 5, 2), "aa bb\n  cc\n");
    assert_eq!(wrap("ami-0123456789abcdef0 x", 10, 0), "ami-0123456789abcdef0\nx\n");
    assert_eq!(wrap("  lead in", 80, 4), "  lead in\n");
    assert_eq!(wrap("", 80, 0), "");
}

#[test]
fn widths_come_from_columns_then_the_terminal_then_120() {
    assert_eq!(choose_width(None, None), 120, "a pipe or a file");
    assert_eq!(choose_width(None, Some(0)), 120, "a terminal reporting 0x0");
    assert_eq!(choose_width(None, Some(80)), 80);
    assert_eq!(choose_width(Some("100"), Some(80)), 100);
    assert_eq!(choose_width(Some("0"), Some(90)), 90);
    assert_eq!(choose_width(Some("wide"), None), 120);
}

fn usage_rows() -> Vec<ImageUsage> {
    use amictl_core::usage::{RefKind, Reference};
    let images = estate().scopes[0].images.clone();
    vec![
        ImageUsage {
            image_id: images[1].id.clone(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            name: images[1].name.clone(),
            state: "available".into(),
            in_use: true,
            in_use_by: vec![
                Reference {
                    kind: RefKind::LaunchTemplate,
                    id: "lt-17cdde37d23c3d897:$Latest".into(),
                    evidence: "launch template lt-17cdde37d23c3d897:$Latest (web-prod)".into(),
                },
                Reference {
                    kind: RefKind::Instance,
                    id: "i-0123456789abcdef0".into(),
                    evidence: "instance i-0123456789abcdef0 (running, web-prod-a)".into(),
                },
            ],
            history: vec![],
        },
        ImageUsage {
            image_id: images[3].id.clone(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            name: images[3].name.clone(),
            state: "available".into(),
            in_use: false,
            in_use_by: vec![],
            history: vec![],
        },
    ]
}

fn listed() -> Vec<amictl_core::catalog::ListedImage> {
    let images = estate().scopes[0].images.clone();
    images
        .iter()
        .map(|i| amictl_core::catalog::ListedImage {
            image_id: i.id.clone(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            family: i.tags.get("Application").cloned().unwrap_or_default(),
            name: i.name.clone(),
            version: i.name.rsplit_once('-').map(|(_, v)| v.to_string()),
            age_days: Some(12),
            state: "available".into(),
            in_use: i.id.ends_with('2'),
            in_use_summary: "2 instance(s), 1 auto scaling group(s)".into(),
            validation: "passed".into(),
            scan: "none".into(),
            channels: if i.id.ends_with('3') { vec!["prod".into(), "staging".into()] } else { vec![] },
            revoked: i.id.ends_with('1'),
        })
        .collect()
}

fn runs() -> Vec<RunSummary> {
    ["retire", "channel promote", "deploy", "emergency"]
        .iter()
        .enumerate()
        .map(|(i, c)| RunSummary {
            id: i as i64 + 1,
            command: c.to_string(),
            started_at: "2026-11-29T21:20:56.123Z".into(),
            finished_at: Some("2026-11-29T21:22:01Z".into()),
            status: "completed-with-errors".into(),
            actions: 12,
            done: 10,
            failed: 1,
            aborted: 1,
            pid: Some(4242),
            host: Some("ops-1".into()),
        })
        .collect()
}

fn steps() -> Vec<StepRecord> {
    let step = |id: &str, at: &str, detail: &str| StepRecord {
        action_id: id.into(),
        status: StepStatus::Done,
        detail: Some(detail.into()),
        started_at: at.into(),
        finished_at: Some(at.into()),
    };
    vec![
        step("cleanup", "2026-11-29T21:30:00Z", "terminated i-0123456789abcdef0"),
        step("start-refresh", "2026-11-29T21:20:58Z", "instance refresh 0b5f4c1e-3d2a-4f6b-9c8d-7e6f5a4b3c2d"),
        step("create-version", "2026-11-29T21:20:57Z", "version 7 of lt-17cdde37d23c3d897 runs ami-00000000000000003"),
    ]
}

#[test]
fn usage_image_list_history_and_steps_keep_every_id_whole_at_80_and_120() {
    let usage = usage_rows();
    let images = listed();
    let runs = runs();
    let steps = steps();
    let ids: Vec<String> = estate().scopes[0].images.iter().map(|i| i.id.clone()).collect();
    for width in [80, 120] {
        let tables = [
            ("usage", usage_table(&usage, width), vec!["lt-17cdde37d23c3d897:$Latest", "i-0123456789abcdef0"]),
            ("image_list", image_list(&images, width), vec!["available", "base-al2023", "REVOKED", "2026.09.0"]),
            (
                "history",
                runs_table(&runs, std::path::Path::new("/tmp/j.db"), width),
                vec!["channel promote", "completed-with-errors", "2026-11-29T21:20:56Z"],
            ),
            ("steps", steps_table(&steps, width), vec!["0b5f4c1e-3d2a-4f6b-9c8d-7e6f5a4b3c2d", "lt-17cdde37d23c3d897"]),
        ];
        for (name, text, words) in tables {
            assert_fits(&text, width);
            assert_whole(&text, &words);
            // An id shown at all is shown whole: its tail never starts a line of its own.
            for id in &ids {
                assert!(!text.contains(&id[id.len() - 8..]) || text.contains(id.as_str()), "{id} broken in:\n{text}");
            }
            insta::assert_snapshot!(format!("{name}_{width}"), text);
        }
    }
    // Steps in the order they ran, not by name.
    let text = steps_table(&steps, 120);
    let order: Vec<usize> =
        ["create-version", "start-refresh", "cleanup"].iter().map(|s| text.find(s).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn patch_results_have_a_header_and_keep_ids_whole() {
    let r = amictl_core::patching::InstanceResult {
        instance_id: "i-0123456789abcdef0".into(),
        group: Some("web-prod".into()),
        batch: Some(1),
        status: "Failed".into(),
        status_details: "Failed".into(),
        exit_code: Some(1),
        output: "Loaded plugins\nError: Failed to download metadata for repo 'amzn2-core'\n".into(),
    };
    for width in [80, 120] {
        let text = patch_results(&[&r], width);
        assert_fits(&text, width);
        assert_whole(&text, &["i-0123456789abcdef0", "web-prod", "'amzn2-core'"]);
        insta::assert_snapshot!(format!("patch_{width}"), text);
    }
}
