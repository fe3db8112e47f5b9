//! Property tests of the in-use analysis: an AMI referenced by any source is never reported
//! unused, and an AMI nothing references is never reported used.

use std::collections::{BTreeMap, BTreeSet};

use amictl_core::inventory::*;
use amictl_core::usage::{analyze, orphaned_snapshots, RefKind};
use proptest::prelude::*;

const ACCOUNT: &str = "123456789012";

fn ami(i: usize) -> String {
    format!("ami-{i:08x}")
}

fn image(i: usize, public: bool, deregistered: bool) -> Image {
    Image {
        id: ami(i),
        name: format!("img-{i}"),
        owner: ACCOUNT.into(),
        state: if deregistered { "deregistered" } else { "available" }.into(),
        creation_date: None,
        public,
        description: None,
        tags: BTreeMap::new(),
        snapshot_ids: vec![format!("snap-{i:08x}")],
        deprecation_time: None,
    }
}

prop_compose! {
    fn arb_inventory()(
        n in 1usize..25,
        publics in proptest::collection::vec(any::<bool>(), 25),
        instances in proptest::collection::vec((0usize..30, 0usize..5), 0..15),
        templates in proptest::collection::vec((proptest::collection::vec(prop_oneof![
            3 => (0usize..30).prop_map(Some), 1 => Just(None)], 1..20), 0usize..20), 0..5),
        lcs in proptest::collection::vec(0usize..30, 0..5),
        asgs in proptest::collection::vec((0usize..8, 0usize..4, 0i64..25, 0i32..3), 0..8),
        shares in proptest::collection::vec((0usize..30, 0u8..3), 0..6),
        ssm in 0usize..3,
    ) -> RegionInventory {
        let states = ["running", "stopped", "pending", "terminated", "shutting-down"];
        let images: Vec<Image> = (0..n).map(|i| image(i, publics[i] && i % 3 == 0, false)).collect();
        let instances = instances.iter().enumerate().map(|(k, (img, st))| Instance {
            id: format!("i-{k:08x}"), image_id: ami(*img), state: states[*st].into(), name: None,
            launch_time: None, tags: BTreeMap::new(),
        }).collect();
        let launch_templates: Vec<LaunchTemplate> = templates.iter().enumerate().map(|(t, (versions, d))| LaunchTemplate {
            id: format!("lt-{t:08x}"), name: format!("lt{t}"),
            default_version: (*d % versions.len()) as i64 + 1, latest_version: versions.len() as i64,
            versions: versions.iter().enumerate().map(|(v, img)| LaunchTemplateVersion {
                number: v as i64 + 1,
                image_id: if t == 0 && v < ssm { Some("resolve:ssm:/amictl/web/prod".into()) } else { img.map(ami) },
            }).collect(),
        }).collect();
        let launch_configurations: Vec<LaunchConfiguration> = lcs.iter().enumerate()
            .map(|(k, img)| LaunchConfiguration { name: format!("lc-{k}"), image_id: ami(*img) }).collect();
        let auto_scaling_groups = asgs.iter().enumerate().map(|(k, (target, how, version, desired))| {
            let template = TemplateRef {
                id: Some(format!("lt-{target:08x}")), name: None,
                version: match version % 3 { 0 => Some("$Latest".into()), 1 => None, _ => Some(version.to_string()) },
            };
            let source = match how {
                0 => AsgSource::LaunchTemplate { template },
                1 => AsgSource::MixedInstancesPolicy { template, overrides: vec![] },
                2 => AsgSource::LaunchConfiguration { name: format!("lc-{target}") },
                _ => AsgSource::Unknown,
            };
            AutoScalingGroup { name: format!("asg-{k}"), min_size: 0, max_size: 2, desired_capacity: *desired,
                source, instance_ids: vec![], in_service: vec![] }
        }).collect();
        let launch_permissions = shares.iter().filter(|(i, _)| *i < n).map(|(i, kind)| (ami(*i), vec![match kind {
            0 => LaunchPermission::Account("210987654321".into()),
            1 => LaunchPermission::Organization("arn:aws:organizations::o-1".into()),
            _ => LaunchPermission::OrganizationalUnit("ou-1".into()),
        }])).collect();
        RegionInventory {
            account: ACCOUNT.into(), region: "us-east-1".into(), images, foreign_images: vec![],
            snapshots: vec![], instances, launch_templates, launch_configurations, auto_scaling_groups,
            launch_permissions, channels: vec![], ..Default::default()
        }
    }
}

/// The sources that make an image used, computed directly from the inventory.
fn referenced(inv: &RegionInventory) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    s.extend(
        inv.instances
            .iter()
            .filter(|i| !matches!(i.state.as_str(), "terminated" | "shutting-down"))
            .map(|i| i.image_id.clone()),
    );
    s.extend(inv.launch_templates.iter().flat_map(|t| t.versions.iter().filter_map(|v| v.image_id.clone())));
    s.extend(inv.launch_configurations.iter().map(|l| l.image_id.clone()));
    s.extend(inv.images.iter().filter(|i| i.public).map(|i| i.id.clone()));
    s.extend(inv.launch_permissions.iter().filter(|(_, p)| !p.is_empty()).map(|(id, _)| id.clone()));
    s.retain(|id| id.starts_with("ami-"));
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn referenced_images_are_never_unused(inv in arb_inventory()) {
        let usage = analyze(&inv);
        let expected = referenced(&inv);
        for id in &expected {
            prop_assert!(usage.in_use(id), "{id} is referenced but reported unused: {:?}", usage.refs(id));
        }
        for img in &inv.images {
            prop_assert_eq!(usage.in_use(&img.id), expected.contains(&img.id), "{}", img.id);
        }
    }

    #[test]
    fn every_asg_resolves_or_is_a_finding(inv in arb_inventory()) {
        let usage = analyze(&inv);
        for g in &inv.auto_scaling_groups {
            let has_ref = usage.references.values().flatten().any(|r| r.kind == RefKind::AutoScalingGroup && r.id == g.name);
            let has_finding = usage.dangling.iter().any(|d| d.resource == g.name);
            let resolves_to_nothing = match &g.source {
                AsgSource::Unknown => true,
                AsgSource::LaunchTemplate { template } | AsgSource::MixedInstancesPolicy { template, .. } => {
                    inv.launch_templates.iter().find(|t| Some(&t.id) == template.id.as_ref())
                        .and_then(|t| t.resolve(template.version.as_deref()))
                        .is_some_and(|v| v.image_id.as_deref().is_none_or(|i| !i.starts_with("ami-")))
                }
                AsgSource::LaunchConfiguration { .. } => false,
            };
            prop_assert!(has_ref || has_finding || resolves_to_nothing, "asg {} vanished from the analysis", g.name);
        }
    }

    #[test]
    fn references_to_missing_images_are_findings(inv in arb_inventory()) {
        let usage = analyze(&inv);
        let owned: BTreeSet<&str> = inv.images.iter().map(|i| i.id.as_str()).collect();
        for i in inv.instances.iter().filter(|i| i.is_live()) {
            if !owned.contains(i.image_id.as_str()) {
                prop_assert!(usage.dangling.iter().any(|d| d.resource == i.id && d.image_id.as_deref() == Some(i.image_id.as_str())));
            }
        }
    }

    #[test]
    fn orphans_are_never_mapped_by_a_live_image(inv in arb_inventory(), gone in proptest::collection::vec(0usize..40, 0..10)) {
        let mut inv = inv;
        // CreateImage snapshots of live and gone images, one copy, one manual snapshot.
        for (k, i) in gone.iter().enumerate() {
            inv.snapshots.push(Snapshot { id: format!("snap-{i:08x}"), description: format!("Created by CreateImage(i-0000000{k}) for {}", ami(*i)),
                encrypted: false, volume_size_gib: 8, start_time: None, tags: BTreeMap::new() });
        }
        inv.snapshots.push(Snapshot { id: "snap-manual".into(), description: "manual".into(), encrypted: false, volume_size_gib: 8, start_time: None, tags: BTreeMap::new() });
        let orphans = orphaned_snapshots(&inv);
        let mapped: BTreeSet<&str> = inv.images.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
        let owned: BTreeSet<&str> = inv.images.iter().map(|i| i.id.as_str()).collect();
        for o in &orphans {
            prop_assert!(!mapped.contains(o.snapshot_id.as_str()));
            prop_assert!(!owned.contains(o.image_id.as_str()));
            prop_assert_ne!(o.snapshot_id.as_str(), "snap-manual");
        }
        for i in &gone {
            if !owned.contains(ami(*i).as_str()) {
                let id = format!("snap-{i:08x}");
                prop_assert!(orphans.iter().any(|o| o.snapshot_id == id), "{id} of a gone image is not an orphan");
            }
        }
    }
}
