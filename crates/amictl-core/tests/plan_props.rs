//! Property and unit tests of the retirement planner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use amictl_core::config::Config;
use amictl_core::inventory::*;
use amictl_core::plan::{plan, stale_actions, ActionKind, Plan, ReasonCode, Verdict};
use amictl_core::policy::{RetirePolicy, AFTER_TAG, STAGE_TAG};
use amictl_core::usage::analyze;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

const ACCOUNT: &str = "123456789012";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
}

fn img(i: usize, family: &str, days: i64) -> Image {
    let mut tags = BTreeMap::new();
    tags.insert("Application".to_string(), family.to_string());
    Image {
        id: format!("ami-{i:08x}"),
        name: format!("{family}-{i}"),
        owner: ACCOUNT.into(),
        state: "available".into(),
        creation_date: Some(now() - chrono::Duration::days(days)),
        public: false,
        description: None,
        tags,
        snapshot_ids: vec![format!("snap-{i:08x}")],
        deprecation_time: None,
    }
}

fn snap(id: &str, description: &str) -> Snapshot {
    Snapshot {
        id: id.into(),
        description: description.into(),
        encrypted: false,
        volume_size_gib: 8,
        start_time: None,
        tags: BTreeMap::new(),
    }
}

fn scope(images: Vec<Image>) -> RegionInventory {
    let snapshots = images
        .iter()
        .flat_map(|i| {
            i.snapshot_ids.iter().map(|s| snap(s, &format!("Created by CreateImage(i-00000001) for {}", i.id)))
        })
        .collect();
    RegionInventory { account: ACCOUNT.into(), region: "us-east-1".into(), images, snapshots, ..Default::default() }
}

fn inv(s: RegionInventory) -> Inventory {
    Inventory { scopes: vec![s], failures: vec![] }
}

fn families() -> amictl_core::family::FamilyRules {
    Config::default().family_rules().unwrap()
}

fn policy(keep: usize, min_age_days: u64, immediate: bool) -> RetirePolicy {
    RetirePolicy { keep, min_age: Duration::from_secs(min_age_days * 86_400), immediate, ..RetirePolicy::default() }
}

fn verdict<'a>(p: &'a Plan, id: &str) -> &'a amictl_core::plan::ImageVerdict {
    p.images.iter().find(|v| v.image_id == id).unwrap()
}

#[test]
fn keep_newest_n_and_min_age() {
    let s =
        scope(vec![img(1, "web", 400), img(2, "web", 300), img(3, "web", 200), img(4, "web", 100), img(5, "web", 10)]);
    let p = plan(&inv(s), &families(), &policy(2, 90, true), now());
    // newest two (#5, #4) kept; #5 is also too young.
    assert_eq!(verdict(&p, "ami-00000005").verdict, Verdict::Keep);
    assert_eq!(verdict(&p, "ami-00000004").verdict, Verdict::Keep);
    assert!(verdict(&p, "ami-00000004").reasons.iter().any(|r| r.code == ReasonCode::Newest));
    for id in ["ami-00000001", "ami-00000002", "ami-00000003"] {
        assert_eq!(verdict(&p, id).verdict, Verdict::Retire, "{id}");
    }
    assert_eq!(p.count(ActionKind::Deregister), 3);
    assert_eq!(p.count(ActionKind::DeleteSnapshot), 3);

    let p = plan(&inv(scope(vec![img(1, "web", 400), img(2, "web", 60)])), &families(), &policy(0, 90, true), now());
    assert_eq!(verdict(&p, "ami-00000002").verdict, Verdict::Keep);
    assert!(verdict(&p, "ami-00000002").reasons.iter().any(|r| r.code == ReasonCode::TooYoung));
    assert_eq!(verdict(&p, "ami-00000001").verdict, Verdict::Retire);
}

#[test]
fn lineage_keeps_the_parents_of_kept_images() {
    let base = img(1, "base", 500);
    let mut mid = img(2, "mid", 400);
    mid.tags.insert("SourceAMI".into(), base.id.clone());
    let mut app = img(3, "app", 300);
    app.tags.insert("SourceAMI".into(), mid.id.clone());
    let mut s = scope(vec![base, mid, app.clone()]);
    s.instances.push(Instance {
        id: "i-1".into(),
        image_id: app.id.clone(),
        state: "running".into(),
        name: None,
        launch_time: None,
        tags: BTreeMap::new(),
    });
    let p = plan(&inv(s), &families(), &policy(0, 0, true), now());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let base = verdict(&p, "ami-00000001");
    assert!(
        base.reasons.iter().any(|r| r.code == ReasonCode::Lineage && r.detail.contains("ami-00000002")),
        "{:?}",
        base.reasons
    );
}

#[test]
fn keep_tags_and_unmatched_rule() {
    let mut tagged = img(1, "web", 400);
    tagged.tags.insert("DoNotDelete".into(), "".into());
    let mut stray = img(2, "x", 400);
    stray.tags.clear();
    stray.name = "hand-made".into();
    let s = scope(vec![tagged, stray]);
    let mut pol = policy(0, 0, true);
    pol.keep_tags = vec!["DoNotDelete".into()];
    let p = plan(&inv(s.clone()), &families(), &pol, now());
    assert_eq!(verdict(&p, "ami-00000001").verdict, Verdict::Keep);
    assert_eq!(verdict(&p, "ami-00000002").verdict, Verdict::Retire, "own family, keep 0");
    pol.keep = 1;
    let p = plan(&inv(s.clone()), &families(), &pol, now());
    assert_eq!(verdict(&p, "ami-00000002").verdict, Verdict::Keep, "newest 1 of its own family");
    pol.keep = 0;
    pol.unmatched = amictl_core::policy::Unmatched::Keep;
    let p = plan(&inv(s), &families(), &pol, now());
    assert!(verdict(&p, "ami-00000002").reasons.iter().any(|r| r.code == ReasonCode::Unmatched));
}

#[test]
fn staged_retirement_follows_grace_periods() {
    let mut pol = policy(0, 0, false);
    pol.grace.deprecated = Duration::from_secs(7 * 86_400);
    pol.grace.disabled = Duration::from_secs(3 * 86_400);
    let mut image = img(1, "web", 400);
    let p = plan(&inv(scope(vec![image.clone()])), &families(), &pol, now());
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].kind, ActionKind::Deprecate);
    assert_eq!(p.actions[0].next_stage_after_secs, Some(7 * 86_400));

    image.tags.insert(STAGE_TAG.into(), "deprecated".into());
    image.tags.insert(AFTER_TAG.into(), (now() + chrono::Duration::days(7)).to_rfc3339());
    let p = plan(&inv(scope(vec![image.clone()])), &families(), &pol, now());
    assert!(p.actions.is_empty());
    assert_eq!(verdict(&p, &image.id).verdict, Verdict::Wait);
    let later = now() + chrono::Duration::days(8);
    let p = plan(&inv(scope(vec![image.clone()])), &families(), &pol, later);
    assert_eq!(p.actions[0].kind, ActionKind::Disable);

    image.tags.insert(STAGE_TAG.into(), "disabled".into());
    image.state = "disabled".into();
    let p = plan(&inv(scope(vec![image.clone()])), &families(), &pol, later);
    assert_eq!(
        p.actions.iter().map(|a| a.kind).collect::<Vec<_>>(),
        [ActionKind::Deregister, ActionKind::DeleteSnapshot]
    );

    // Kept again (now in use) while retiring: restored.
    let mut s = scope(vec![image.clone()]);
    s.instances.push(Instance {
        id: "i-9".into(),
        image_id: image.id.clone(),
        state: "running".into(),
        name: None,
        launch_time: None,
        tags: BTreeMap::new(),
    });
    let p = plan(&inv(s), &families(), &pol, later);
    assert_eq!(p.actions.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Restore]);
}

#[test]
fn orphans_only_with_the_flag_and_never_manual() {
    let mut s = scope(vec![img(1, "web", 10)]);
    s.snapshots.push(snap("snap-orphan", "Created by CreateImage(i-00000001) for ami-0000dead"));
    s.snapshots.push(snap("snap-copy", "Copied for DestinationAmi ami-0000beef from SourceAmi ami-00000001 for SourceSnapshot snap-00000001. Task created on x."));
    s.snapshots.push(snap("snap-manual", "nightly backup"));
    let p = plan(&inv(s.clone()), &families(), &policy(1, 0, true), now());
    assert!(p.actions.is_empty());
    let mut pol = policy(1, 0, true);
    pol.orphans = true;
    let p = plan(&inv(s), &families(), &pol, now());
    let snaps: BTreeSet<&str> = p.actions.iter().filter_map(|a| a.snapshot_id.as_deref()).collect();
    assert_eq!(snaps, BTreeSet::from(["snap-orphan", "snap-copy"]));
}

#[test]
fn saved_plan_goes_stale_when_an_image_comes_into_use() {
    let s = scope(vec![img(1, "web", 400), img(2, "web", 300)]);
    let saved = plan(&inv(s.clone()), &families(), &policy(0, 0, true), now());
    assert!(stale_actions(&saved, &saved).is_empty());
    let mut changed = s;
    changed.instances.push(Instance {
        id: "i-7".into(),
        image_id: "ami-00000001".into(),
        state: "running".into(),
        name: None,
        launch_time: None,
        tags: BTreeMap::new(),
    });
    let fresh = plan(&inv(changed), &families(), &policy(0, 0, true), now());
    let stale = stale_actions(&saved, &fresh);
    assert!(!stale.is_empty());
    assert!(stale.iter().any(|s| s.contains("ami-00000001") && s.contains("instance i-7 (running)")), "{stale:?}");
}

prop_compose! {
    fn arb_scope()(
        images in proptest::collection::vec((0usize..4, 0i64..500, any::<bool>(), 0u8..10), 1..40),
        instance_refs in proptest::collection::vec((0usize..45, any::<bool>()), 0..8),
        lt_refs in proptest::collection::vec(0usize..45, 0..8),
        lc_refs in proptest::collection::vec(0usize..45, 0..4),
        shared in proptest::collection::vec(0usize..45, 0..4),
        shared_snapshots in proptest::collection::vec((0usize..45, 0usize..45), 0..4),
    ) -> RegionInventory {
        let fams = ["web", "api", "worker", "base"];
        let mut list: Vec<Image> = images.iter().enumerate().map(|(i, (f, days, public, keep))| {
            let mut im = img(i, fams[*f], *days);
            im.public = *public && i % 7 == 0;
            if *keep == 0 { im.tags.insert("amictl:keep".into(), "yes".into()); }
            if *keep == 1 && i > 0 { im.tags.insert("SourceAMI".into(), format!("ami-{:08x}", i - 1)); }
            im
        }).collect();
        // Some images share a snapshot with another image (RegisterImage from a snapshot), or
        // map their own twice.
        for (a, b) in &shared_snapshots {
            if *a < list.len() && *b < list.len() {
                let s = list[*b].snapshot_ids[0].clone();
                list[*a].snapshot_ids.push(s);
            }
        }
        let mut s = scope(list);
        s.instances = instance_refs.iter().enumerate().map(|(k, (i, live))| Instance {
            id: format!("i-{k}"), image_id: format!("ami-{i:08x}"),
            state: if *live { "running" } else { "terminated" }.into(), name: None, launch_time: None, tags: BTreeMap::new(),
        }).collect();
        s.launch_templates = vec![LaunchTemplate { id: "lt-1".into(), name: "lt".into(), default_version: 1, latest_version: lt_refs.len().max(1) as i64,
            versions: lt_refs.iter().enumerate().map(|(v, i)| LaunchTemplateVersion { number: v as i64 + 1, image_id: Some(format!("ami-{i:08x}")) }).collect() }];
        s.launch_configurations = lc_refs.iter().enumerate().map(|(k, i)| LaunchConfiguration { name: format!("lc-{k}"), image_id: format!("ami-{i:08x}") }).collect();
        s.launch_permissions = shared.iter().map(|i| (format!("ami-{i:08x}"), vec![LaunchPermission::Account("210987654321".into())])).collect();
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn planner_invariants(s in arb_scope(), keep in 0usize..4, min_age in 0u64..400, immediate in any::<bool>()) {
        let inventory = inv(s.clone());
        let pol = policy(keep, min_age, immediate);
        let p = plan(&inventory, &families(), &pol, now());
        let usage = analyze(&s);

        // No image that anything uses is ever acted on destructively.
        for a in p.actions.iter().filter(|a| a.kind.is_destructive() && a.snapshot_id.is_none()) {
            let id = a.image_id.as_deref().unwrap();
            prop_assert!(!usage.in_use(id), "{id} is in use: {:?}", usage.refs(id));
            let image = s.images.iter().find(|i| i.id == id).unwrap();
            prop_assert!(!image.tags.contains_key("amictl:keep"));
            prop_assert!(!image.public);
        }

        // The newest `keep` of each family are kept.
        let mut by_family: HashMap<&str, Vec<&Image>> = HashMap::new();
        for i in &s.images { by_family.entry(i.tags["Application"].as_str()).or_default().push(i); }
        for members in by_family.values_mut() {
            members.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then_with(|| b.name.cmp(&a.name)).then_with(|| b.id.cmp(&a.id)));
            for i in members.iter().take(keep) {
                prop_assert_eq!(verdict(&p, &i.id).verdict, Verdict::Keep, "{} is among the newest {}", &i.id, keep);
            }
        }

        // Snapshots deleted: owned by a deregistered image, and by no image that stays.
        let deregistered: BTreeSet<&str> = p.actions.iter().filter(|a| a.kind == ActionKind::Deregister).filter_map(|a| a.image_id.as_deref()).collect();
        let staying: BTreeSet<&str> = s.images.iter().filter(|i| !deregistered.contains(i.id.as_str())).flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
        let deletions: Vec<&str> = p.actions.iter().filter(|a| a.kind == ActionKind::DeleteSnapshot).filter_map(|a| a.snapshot_id.as_deref()).collect();
        let deleted: BTreeSet<&str> = deletions.iter().copied().collect();
        prop_assert_eq!(deletions.len(), deleted.len(), "a snapshot is deleted once: {:?}", deletions);
        // Each deletion comes after the deregistration it waits for, of an image that maps it.
        let position: HashMap<String, usize> = p.actions.iter().enumerate().map(|(n, a)| (a.id(), n)).collect();
        for (n, a) in p.actions.iter().enumerate().filter(|(_, a)| a.kind == ActionKind::DeleteSnapshot) {
            let after = a.depends_on().and_then(|d| position.get(&d).copied());
            prop_assert!(after.is_some_and(|d| d < n), "{} waits for nothing before it", a.id());
            let image = s.images.iter().find(|i| Some(i.id.as_str()) == a.image_id.as_deref()).unwrap();
            prop_assert!(image.snapshot_ids.iter().any(|x| Some(x.as_str()) == a.snapshot_id.as_deref()));
        }
        for snap in &deleted {
            prop_assert!(!staying.contains(snap), "{snap} is still mapped by a kept image");
            let owner_retired = s.images.iter().any(|i| deregistered.contains(i.id.as_str()) && i.snapshot_ids.iter().any(|x| x == snap));
            prop_assert!(owner_retired, "{snap} belongs to no retired image");
        }
        if immediate {
            // ...and every snapshot a retired image owns alone is deleted.
            for i in s.images.iter().filter(|i| deregistered.contains(i.id.as_str())) {
                for snap in &i.snapshot_ids {
                    if !staying.contains(snap.as_str()) {
                        prop_assert!(deleted.contains(snap.as_str()), "{snap} of retired {} is left behind", i.id);
                    }
                }
            }
        } else {
            prop_assert!(deregistered.is_empty(), "without --now the first run only deprecates");
        }
    }
}

#[test]
fn planner_on_a_large_estate_is_linear_enough() {
    // A smoke test of scale (timing is measured by `amictl bench plan`, not asserted here).
    let images: Vec<Image> = (0..20_000).map(|i| img(i, ["web", "api", "worker"][i % 3], (i % 500) as i64)).collect();
    let p = plan(&inv(scope(images)), &families(), &policy(3, 90, true), now());
    assert_eq!(p.images.len(), 20_000);
    assert_eq!(
        p.images
            .iter()
            .filter(|v| v.verdict == Verdict::Keep && v.reasons.iter().any(|r| r.code == ReasonCode::Newest))
            .count(),
        9
    );
}
