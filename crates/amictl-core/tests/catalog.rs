//! The catalog's pure parts: versions, channels, promotion rules, and their effect on the
//! in-use analysis and the retirement guards.

use std::collections::HashMap;

use amictl_core::catalog::*;
use amictl_core::inventory::*;
use amictl_core::plan;
use amictl_core::usage::analyze;
use chrono::{TimeZone, Utc};

fn image(id: &str, tags: &[(&str, &str)]) -> Image {
    Image {
        id: id.into(),
        name: id.into(),
        owner: "123456789012".into(),
        state: "available".into(),
        creation_date: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
        public: false,
        description: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        snapshot_ids: vec![],
        deprecation_time: None,
    }
}

fn entry(version: i64, image: &str, day: u32) -> ChannelEntry {
    ChannelEntry {
        version,
        image_id: image.into(),
        modified: Some(Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap()),
        note: None,
    }
}

fn channel(history: Vec<ChannelEntry>) -> Channel {
    Channel {
        family: "web".into(),
        name: "prod".into(),
        parameter: "/amictl/web/prod".into(),
        image_id: history.last().unwrap().image_id.clone(),
        history,
    }
}

#[test]
fn versions_bump_and_refuse_duplicates_and_non_semver() {
    let imgs = [image("ami-1", &[("Version", "1.2.3")]), image("ami-2", &[("Version", "1.10.0")]), image("ami-3", &[])];
    let refs: Vec<&Image> = imgs.iter().collect();
    assert_eq!(next_version(&refs, None, Bump::Patch).unwrap().to_string(), "1.10.1");
    assert_eq!(next_version(&refs, None, Bump::Minor).unwrap().to_string(), "1.11.0");
    assert_eq!(next_version(&refs, None, Bump::Major).unwrap().to_string(), "2.0.0");
    assert_eq!(next_version(&[], None, Bump::Patch).unwrap().to_string(), "1.0.0");
    assert_eq!(next_version(&refs, Some("v3.0.0"), Bump::Patch).unwrap().to_string(), "3.0.0");
    assert!(next_version(&refs, Some("1.2.3"), Bump::Patch).unwrap_err().contains("already exists: ami-1"));
    assert!(next_version(&refs, Some("1.2"), Bump::Patch).unwrap_err().contains("not a semantic version"));
    // The same on a retry: no clock in the name.
    assert_eq!(image_name("web", &semver::Version::new(1, 2, 3)), "web-1.2.3");
}

#[test]
fn family_versions_sort_by_semver_not_text() {
    let imgs = [
        image("ami-a", &[("Application", "web"), ("Version", "1.9.0")]),
        image("ami-b", &[("Application", "web"), ("Version", "1.10.0")]),
        image("ami-c", &[("Application", "api"), ("Version", "9.0.0")]),
    ];
    let ids: Vec<&str> = family_versions(&imgs, "web", &rules()).iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["ami-b", "ami-a"]);
}

#[test]
fn promotion_objections_cover_validation_scan_revocation_and_family() {
    let passed = vec!["passed".to_string()];
    let good = image("ami-1", &[("Application", "web"), (VALIDATION_TAG, "passed"), ("scan", "passed")]);
    assert!(promotion_objections(&good, "web", &rules(), "scan", &passed).is_empty());
    let bad = image("ami-2", &[("Application", "api"), ("scan", "critical"), (REVOKED_TAG, "2026-11-01T00:00:00Z")]);
    let o = promotion_objections(&bad, "web", &rules(), "scan", &passed).join("; ");
    for needle in ["is revoked", "has not been validated", "failed its security scan", "belongs to family api"] {
        assert!(o.contains(needle), "{needle} in {o}");
    }
    let unscanned = image("ami-3", &[("Application", "web"), (VALIDATION_TAG, "passed")]);
    let o = promotion_objections(&unscanned, "web", &rules(), "scan", &passed);
    assert_eq!(o, vec!["ami-3 has not been scanned (no scan tag)".to_string()]);
}

#[test]
fn rollback_goes_to_the_previous_different_value() {
    let c = channel(vec![entry(1, "ami-1", 1), entry(2, "ami-2", 2), entry(3, "ami-2", 3)]);
    assert_eq!(rollback_target(&c).unwrap().image_id, "ami-1");
    assert!(rollback_target(&channel(vec![entry(1, "ami-1", 1)])).is_none());
}

#[test]
fn channels_protect_current_and_recent_values() {
    let c = channel(vec![entry(1, "ami-old", 1), entry(2, "ami-mid", 10), entry(3, "ami-new", 20)]);
    let since = Utc.with_ymd_and_hms(2026, 11, 5, 0, 0, 0).unwrap();
    let p = channel_protected(&[c], since);
    assert!(p["ami-new"].contains("points at it"));
    assert!(p["ami-mid"].contains("pointed at it until"));
    assert!(p.contains_key("ami-old"), "replaced on the 10th, inside the window");
    let p = channel_protected(&[channel(vec![entry(1, "ami-old", 1), entry(2, "ami-new", 2)])], since);
    assert!(!p.contains_key("ami-old"), "replaced before the window");
}

#[test]
fn launch_templates_resolving_a_channel_use_its_image() {
    let inv = RegionInventory {
        account: "123456789012".into(),
        region: "us-east-1".into(),
        images: vec![image("ami-1", &[]), image("ami-2", &[])],
        launch_templates: vec![LaunchTemplate {
            id: "lt-1".into(),
            name: "web".into(),
            default_version: 1,
            latest_version: 1,
            versions: vec![LaunchTemplateVersion { number: 1, image_id: Some("resolve:ssm:/amictl/web/prod".into()) }],
        }],
        auto_scaling_groups: vec![AutoScalingGroup {
            name: "web-prod".into(),
            min_size: 0,
            max_size: 1,
            desired_capacity: 0,
            source: AsgSource::LaunchTemplate {
                template: TemplateRef { id: Some("lt-1".into()), name: None, version: None },
            },
            instance_ids: vec![],
            in_service: vec![],
        }],
        channels: vec![channel(vec![entry(1, "ami-2", 1)])],
        ..Default::default()
    };
    let u = analyze(&inv);
    let ev: Vec<&str> = u.refs("ami-2").iter().map(|r| r.evidence.as_str()).collect();
    assert!(ev.contains(&"launch template lt-1:1 ($Default, $Latest) via resolve:ssm:/amictl/web/prod"), "{ev:?}");
    assert!(ev.contains(&"asg web-prod via lt-1:$Default via resolve:ssm:/amictl/web/prod (desired 0)"), "{ev:?}");
    assert!(ev.contains(&"channel web/prod"), "{ev:?}");
    assert!(!u.in_use("ami-1"));
    assert!(u.dangling.is_empty(), "{:?}", u.dangling);
}

#[test]
fn descendants_follow_lineage_transitively() {
    let imgs = [
        image("ami-base", &[]),
        image("ami-mid", &[("SourceAMI", "ami-base")]),
        image("ami-app", &[("SourceAMI", "ami-mid")]),
        image("ami-other", &[]),
    ];
    assert_eq!(descendants(&imgs, "ami-base", "SourceAMI"), ["ami-app", "ami-mid"]);
}

#[test]
fn guard_refuses_a_scope_that_lost_all_its_instances() {
    let inv = Inventory {
        scopes: vec![RegionInventory { account: "1".into(), region: "r".into(), ..Default::default() }],
        failures: vec![],
    };
    let p = plan::plan(
        &inv,
        &amictl_core::config::Config::default().family_rules().unwrap(),
        &Default::default(),
        Utc::now(),
    );
    let mut last = HashMap::new();
    assert!(plan::guard_violations(&p, &inv, &last).is_empty());
    last.insert(("1".to_string(), "r".to_string()), 40);
    let v = plan::guard_violations(&p, &inv, &last);
    assert!(v[0].contains("0 instances where the last run saw 40"), "{v:?}");
    let failed = Inventory {
        failures: vec![ScopeFailure { scope: Scope { account: "1".into(), region: "x".into() }, error: "boom".into() }],
        ..inv.clone()
    };
    assert!(plan::guard_violations(&p, &failed, &HashMap::new())[0].contains("inventory is incomplete"));
}

fn rules() -> amictl_core::family::FamilyRules {
    amictl_core::config::Config::default().family_rules().unwrap()
}

fn dated(mut i: Image, day: u32) -> Image {
    i.creation_date = Some(Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap());
    i
}

fn find<'a>(forest: &'a [LineageNode], id: &str) -> Option<&'a LineageNode> {
    forest.iter().find_map(|n| if n.image_id == id { Some(n) } else { find(&n.children, id) })
}

#[test]
fn lineage_never_calls_an_image_outdated_because_of_itself_or_its_own_family() {
    let base = [("Application", "base-al2023")];
    let imgs = [
        dated(image("ami-b1", &base), 1),
        dated(image("ami-b2", &[base[0], ("SourceAMI", "ami-b1")]), 2),
        dated(image("ami-app", &[("Application", "web"), ("SourceAMI", "ami-b1")]), 3),
    ];
    let rules = rules();
    let forest = lineage(&imgs, "SourceAMI", &|i| rules.name_of(i));
    assert_eq!(find(&forest, "ami-b2").unwrap().outdated_by, None, "{forest:#?}");
    let app = find(&forest, "ami-app").unwrap().outdated_by.clone().expect("web was built from an old base");
    assert!(app.contains("ami-b2") && app.contains("ami-b1"), "{app}");
}

#[test]
fn families_found_by_name_pattern_are_families_in_the_catalog_too() {
    let mut a = image("ami-a", &[]);
    a.name = "base-al2023-2026.08.0".into();
    let mut b = image("ami-b", &[("Version", "2026.9.0")]);
    b.name = "base-al2023-2026.09.0".into();
    let imgs = [a, b];
    let ids: Vec<&str> = family_versions(&imgs, "base-al2023", &rules()).iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["ami-b", "ami-a"]);
    let scope =
        RegionInventory { account: "1".into(), region: "r".into(), images: imgs.to_vec(), ..Default::default() };
    let rows = listing(&scope, Some("base-al2023"), &rules(), "scan", &[], Utc::now());
    assert_eq!(rows.len(), 2);
}

#[test]
fn the_base_of_a_family_is_its_newest_validated_unrevoked_unfailed_image() {
    let passed = vec!["passed".to_string()];
    let imgs = [
        image("ami-1", &[("Application", "web"), ("Version", "1.0.0"), (VALIDATION_TAG, "passed")]),
        image("ami-2", &[("Application", "web"), ("Version", "1.1.0"), (VALIDATION_TAG, "passed"), ("scan", "passed")]),
        image("ami-3", &[("Application", "web"), ("Version", "1.2.0"), (VALIDATION_TAG, "passed"), ("scan", "failed")]),
        image("ami-4", &[("Application", "web"), ("Version", "1.3.0"), (VALIDATION_TAG, "passed"), (REVOKED_TAG, "x")]),
        image("ami-5", &[("Application", "web"), ("Version", "1.4.0"), (VALIDATION_TAG, "failed")]),
        image("ami-6", &[("Application", "web"), ("Version", "1.5.0")]),
    ];
    assert_eq!(newest_validated(&imgs, "web", &rules(), "scan", &passed).unwrap().id, "ami-2");
    assert!(newest_validated(&imgs[4..], "web", &rules(), "scan", &passed).is_none());
    assert!(newest_validated(&imgs, "api", &rules(), "scan", &passed).is_none());
}

#[test]
fn most_recent_is_by_creation_date_among_available_images() {
    let mut a = image("ami-a", &[]);
    let mut b = image("ami-b", &[]);
    let mut c = image("ami-c", &[]);
    a.creation_date = Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    b.creation_date = Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    c.creation_date = Some(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
    c.state = "pending".into();
    assert_eq!(most_recent(&[a.clone(), b.clone(), c]).unwrap().id, "ami-b");
    assert!(most_recent(&[]).is_none());
}
