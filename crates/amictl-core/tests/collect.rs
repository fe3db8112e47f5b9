//! The collector, on an in-memory cloud: what it calls, and how it handles failures.

use std::collections::BTreeMap;

use amictl_core::aws::collect::{collect, collect_scope};
use amictl_core::aws::failure::FailureCloud;
use amictl_core::aws::memory::MemoryCloud;
use amictl_core::config::SharingScope;
use amictl_core::inventory::*;
use amictl_core::usage::analyze;
use amictl_core::CloudErrorKind;

fn estate(region: &str, images: usize) -> RegionInventory {
    let img = |i: usize| Image {
        id: format!("ami-{i:08x}"),
        name: format!("web-1.{i}.0"),
        owner: "123456789012".into(),
        state: "available".into(),
        creation_date: None,
        public: i == 1,
        description: None,
        tags: BTreeMap::new(),
        snapshot_ids: vec![],
        deprecation_time: None,
    };
    let mut perms = BTreeMap::new();
    perms.insert(format!("ami-{:08x}", 2), vec![LaunchPermission::Account("210987654321".into())]);
    RegionInventory {
        account: "123456789012".into(),
        region: region.into(),
        images: (0..images).map(img).collect(),
        foreign_images: vec![Image { id: "ami-vendor".into(), owner: "137112412989".into(), ..img(999) }],
        instances: vec![
            Instance {
                id: "i-1".into(),
                image_id: format!("ami-{:08x}", 0),
                state: "running".into(),
                name: None,
                launch_time: None,
                tags: BTreeMap::new(),
            },
            Instance {
                id: "i-2".into(),
                image_id: "ami-vendor".into(),
                state: "running".into(),
                name: None,
                launch_time: None,
                tags: BTreeMap::new(),
            },
        ],
        launch_templates: vec![LaunchTemplate {
            id: "lt-1".into(),
            name: "web".into(),
            default_version: 1,
            latest_version: 2,
            versions: vec![
                LaunchTemplateVersion { number: 1, image_id: Some(format!("ami-{:08x}", 3)) },
                LaunchTemplateVersion { number: 2, image_id: Some(format!("ami-{:08x}", 4)) },
            ],
        }],
        launch_permissions: perms,
        ..Default::default()
    }
}

#[tokio::test]
async fn launch_permissions_are_fetched_only_where_they_decide_use() {
    let cloud = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 50)));
    let inv = collect_scope(&cloud, SharingScope::Unreferenced, 4).await.unwrap();
    let calls = cloud.calls();
    // 50 images: #0 has an instance, #1 is public, #3 and #4 are in the template. The other 46
    // are unreferenced: their sharing decides whether they are in use.
    assert_eq!(calls["DescribeImageAttribute"], 46);
    assert_eq!(calls["DescribeLaunchTemplateVersions"], 1);
    assert_eq!(calls["DescribeImages"], 2, "owned images, then one lookup of the foreign ones");
    let usage = analyze(&inv);
    assert!(usage.in_use(&format!("ami-{:08x}", 2)), "shared image is in use");
    assert_eq!(inv.foreign_images.len(), 1);
    assert!(!usage.dangling.iter().any(|d| d.resource == "i-2"), "vendor image is not missing");

    let cloud = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 50)));
    collect_scope(&cloud, SharingScope::All, 4).await.unwrap();
    assert_eq!(cloud.calls()["DescribeImageAttribute"], 49, "every private image");
}

#[tokio::test]
async fn list_calls_do_not_grow_with_images() {
    let small = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 10)));
    let large = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 5000)));
    collect_scope(&small, SharingScope::Unreferenced, 4).await.unwrap();
    collect_scope(&large, SharingScope::Unreferenced, 4).await.unwrap();
    let (mut s, mut l) = (small.calls(), large.calls());
    s.remove("DescribeImageAttribute");
    l.remove("DescribeImageAttribute");
    assert_eq!(s, l);
}

#[tokio::test]
async fn a_failed_scope_is_recorded_not_dropped() {
    let ok = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 5)));
    let bad = FailureCloud::new(MemoryCloud::new(estate("eu-west-1", 5))).fail(
        "DescribeSnapshots",
        1,
        CloudErrorKind::Throttled,
    );
    let inv = collect(&[ok, bad], SharingScope::Unreferenced, 4).await;
    assert_eq!(inv.scopes.len(), 1);
    assert_eq!(inv.scopes[0].region, "us-east-1");
    assert!(!inv.is_complete());
    assert_eq!(inv.failures[0].scope.region, "eu-west-1");
    assert!(inv.failures[0].error.contains("DescribeSnapshots"), "{}", inv.failures[0].error);
}

#[tokio::test]
async fn a_failed_permission_lookup_fails_the_scope() {
    // Without the permissions, an unreferenced shared image would look unused: the scope must
    // fail rather than under-report.
    let bad = FailureCloud::new(MemoryCloud::new(estate("us-east-1", 5))).fail(
        "DescribeImageAttribute",
        1,
        CloudErrorKind::Permission,
    );
    let inv = collect(&[bad], SharingScope::Unreferenced, 4).await;
    assert!(inv.scopes.is_empty());
    assert!(inv.failures[0].error.contains("DescribeImageAttribute"));
}
