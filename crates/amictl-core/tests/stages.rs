//! The retirement stage comes from what EC2 reports; tags only time it.

use std::collections::BTreeMap;

use amictl_core::config::Config;
use amictl_core::inventory::*;
use amictl_core::plan::{plan, stage_now, ActionKind, Stage, Verdict};
use amictl_core::policy::{RetirePolicy, AFTER_TAG, STAGE_TAG};
use chrono::{DateTime, TimeZone, Utc};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
}

fn image(state: &str, tags: &[(&str, &str)], deprecated_days_ago: Option<i64>) -> Image {
    Image {
        id: "ami-00000001".into(),
        name: "old-1.0.0".into(),
        owner: "123456789012".into(),
        state: state.into(),
        creation_date: Some(now() - chrono::Duration::days(400)),
        public: false,
        description: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        snapshot_ids: vec![],
        deprecation_time: deprecated_days_ago.map(|d| now() - chrono::Duration::days(d)),
    }
}

/// The one action a staged plan (keep 0) takes on the image, if any.
fn step(i: Image) -> Option<ActionKind> {
    let inv = Inventory {
        scopes: vec![RegionInventory {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            images: vec![i],
            ..Default::default()
        }],
        failures: vec![],
    };
    let policy = RetirePolicy { keep: 0, min_age: std::time::Duration::ZERO, ..Default::default() };
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &policy, now());
    assert_ne!(p.images[0].verdict, Verdict::Keep, "{:?}", p.images[0].reasons);
    p.actions.first().map(|a| a.kind)
}

const PAST: (&str, &str) = (AFTER_TAG, "2026-01-01T00:00:00Z");

#[test]
fn an_image_tagged_disabled_that_ec2_shows_available_is_not_deregistered() {
    let i = image("available", &[(STAGE_TAG, "disabled"), PAST], None);
    assert_eq!(stage_now(&i, now()), (Some(Stage::Deprecated), false));
    assert_eq!(step(i), Some(ActionKind::Deprecate), "its stage is recorded again, with a new grace period");
}

#[test]
fn an_image_disabled_by_someone_else_is_timed_before_it_goes() {
    let i = image("disabled", &[], None);
    assert_eq!(stage_now(&i, now()), (Some(Stage::Disabled), false));
    assert_eq!(step(i), Some(ActionKind::Disable), "recorded with a grace period, not deregistered");
    let timed = image("disabled", &[(STAGE_TAG, "disabled"), PAST], None);
    assert_eq!(step(timed), Some(ActionKind::Deregister));
}

#[test]
fn a_native_deprecation_counts_and_amictl_times_it() {
    let i = image("available", &[], Some(3));
    assert_eq!(stage_now(&i, now()), (Some(Stage::Deprecated), false));
    assert_eq!(step(i), Some(ActionKind::Deprecate));
    let timed = image("available", &[(STAGE_TAG, "deprecated"), PAST], Some(3));
    assert_eq!(step(timed), Some(ActionKind::Disable));
    // A deprecation time still ahead is no deprecation yet.
    assert_eq!(stage_now(&image("available", &[], Some(-3)), now()), (None, false));
}

#[test]
fn a_waiting_image_waits() {
    let later = (AFTER_TAG, "2027-01-01T00:00:00Z");
    assert_eq!(step(image("disabled", &[(STAGE_TAG, "disabled"), later], None)), None);
    assert_eq!(step(image("available", &[(STAGE_TAG, "deprecated"), later], Some(1))), None);
}

fn staged_snapshot(id: &str, description: &str, image: &str) -> Snapshot {
    Snapshot {
        id: id.into(),
        description: description.into(),
        encrypted: false,
        volume_size_gib: 8,
        start_time: None,
        tags: [
            (STAGE_TAG.to_string(), "deregistered".to_string()),
            (AFTER_TAG.to_string(), "2026-01-01T00:00:00Z".to_string()),
            (amictl_core::policy::RETIRED_IMAGE_TAG.to_string(), image.to_string()),
        ]
        .into(),
    }
}

/// Snapshot ids a plan deletes in a scope holding `snapshots`, one image (`ami-00000009`, in
/// use), and what the journal recorded.
fn deleted(snapshots: Vec<Snapshot>, journaled: &[(&str, &str)]) -> Vec<String> {
    let mut kept = image("available", &[("amictl:keep", "yes")], None);
    kept.id = "ami-00000009".into();
    let inv = Inventory {
        scopes: vec![RegionInventory {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            images: vec![kept],
            snapshots,
            retired_snapshots: journaled.iter().map(|(s, i)| (s.to_string(), i.to_string())).collect(),
            ..Default::default()
        }],
        failures: vec![],
    };
    let policy = RetirePolicy { keep: 0, min_age: std::time::Duration::ZERO, ..Default::default() };
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &policy, now());
    p.actions
        .iter()
        .filter(|a| a.kind == ActionKind::DeleteSnapshot)
        .filter_map(|a| a.snapshot_id.as_deref().map(str::to_string))
        .collect()
}

#[test]
fn a_retirement_tag_alone_never_makes_a_snapshot_deletable() {
    let forged = staged_snapshot("snap-1", "my database backup", "ami-00000001");
    assert!(deleted(vec![forged.clone()], &[]).is_empty(), "a tag is not evidence");
    assert_eq!(deleted(vec![forged], &[("snap-1", "ami-00000001")]), ["snap-1"], "the journal recorded its mapping");
    let described =
        staged_snapshot("snap-2", "Created by CreateImage(i-1) for ami-00000001 from vol-1", "ami-00000001");
    assert_eq!(deleted(vec![described], &[]), ["snap-2"], "EC2's description names the image");
    let mismatch = staged_snapshot("snap-3", "Created by CreateImage(i-1) for ami-00000002 from vol-1", "ami-00000001");
    assert!(deleted(vec![mismatch], &[]).is_empty(), "the description names another image");
    let alive = staged_snapshot("snap-4", "Created by CreateImage(i-1) for ami-00000009 from vol-1", "ami-00000009");
    assert!(deleted(vec![alive], &[("snap-4", "ami-00000009")]).is_empty(), "its image still exists");
}
