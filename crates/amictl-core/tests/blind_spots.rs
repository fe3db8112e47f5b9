//! No in-use blind spots: every `resolve:ssm:` reference, fleets and spot requests, and the
//! rule that evidence which could not be read keeps a whole scope.

use std::collections::{BTreeMap, HashMap};

use amictl_core::aws::collect::collect;
use amictl_core::aws::failure::FailureCloud;
use amictl_core::aws::memory::MemoryCloud;
use amictl_core::config::{Config, SharingScope};
use amictl_core::inventory::*;
use amictl_core::plan::{self, ReasonCode, Verdict};
use amictl_core::policy::RetirePolicy;
use amictl_core::usage::analyze;
use amictl_core::CloudErrorKind;
use chrono::{TimeZone, Utc};

fn image(n: usize) -> Image {
    Image {
        id: format!("ami-{n:08x}"),
        name: format!("img-{n}"),
        owner: "123456789012".into(),
        state: "available".into(),
        creation_date: Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
        public: false,
        description: None,
        tags: BTreeMap::new(),
        snapshot_ids: vec![],
        deprecation_time: None,
    }
}

fn ami(n: usize) -> String {
    format!("ami-{n:08x}")
}

fn template(id: &str, versions: &[(i64, &str)]) -> LaunchTemplate {
    LaunchTemplate {
        id: id.into(),
        name: format!("{id}-name"),
        default_version: 1,
        latest_version: versions.len() as i64,
        versions: versions
            .iter()
            .map(|(n, i)| LaunchTemplateVersion { number: *n, image_id: Some(i.to_string()) })
            .collect(),
    }
}

fn value(image: &str, version: i64) -> ParameterValue {
    ParameterValue { value: image.into(), version }
}

fn estate() -> RegionInventory {
    RegionInventory {
        account: "123456789012".into(),
        region: "us-east-1".into(),
        images: (0..12).map(image).collect(),
        ..Default::default()
    }
}

async fn collected(truth: RegionInventory) -> Inventory {
    collect(&[MemoryCloud::new(truth)], SharingScope::All, 4).await
}

fn evidence(inv: &RegionInventory, n: usize) -> Vec<String> {
    analyze(inv).refs(&ami(n)).iter().filter(|r| r.is_use()).map(|r| r.evidence.clone()).collect()
}

#[tokio::test]
async fn every_resolve_ssm_reference_is_resolved_with_its_selector() {
    let mut truth = estate();
    truth.launch_templates = vec![template(
        "lt-0abc",
        &[(1, "resolve:ssm:/golden/web/latest"), (2, "resolve:ssm:/golden/web:3"), (3, "resolve:ssm:/golden/web:prod")],
    )];
    truth.parameters = BTreeMap::from([
        ("/golden/web/latest".to_string(), value(&ami(1), 12)),
        ("/golden/web:3".to_string(), value(&ami(2), 3)),
        ("/golden/web:prod".to_string(), value(&ami(3), 7)),
    ]);
    let inv = collected(truth).await;
    assert!(inv.is_complete(), "{:?}", inv.incompleteness());
    let scope = &inv.scopes[0];
    assert_eq!(
        evidence(scope, 1),
        ["launch template lt-0abc:1 ($Default) via resolve:ssm:/golden/web/latest (version 12)"]
    );
    assert_eq!(evidence(scope, 2), ["launch template lt-0abc:2 via resolve:ssm:/golden/web:3 (version 3)"]);
    assert_eq!(
        evidence(scope, 3),
        ["launch template lt-0abc:3 ($Latest) via resolve:ssm:/golden/web:prod (version 7)"]
    );
    let p = plan::plan(&inv, &Config::default().family_rules().unwrap(), &keep_nothing(), Utc::now());
    for n in 1..=3 {
        assert_eq!(verdict(&p, n), Verdict::Keep, "{n}");
    }
}

fn keep_nothing() -> RetirePolicy {
    RetirePolicy { keep: 0, min_age: std::time::Duration::ZERO, immediate: true, ..Default::default() }
}

fn verdict(p: &plan::Plan, n: usize) -> Verdict {
    p.images.iter().find(|i| i.image_id == ami(n)).unwrap().verdict
}

#[tokio::test]
async fn an_unreadable_parameter_keeps_the_whole_scope_and_apply_refuses() {
    let mut truth = estate();
    truth.launch_templates = vec![template("lt-1", &[(1, "resolve:ssm:/nobody/knows")])];
    let inv = collected(truth).await;
    assert!(!inv.is_complete());
    let gaps = inv.incompleteness().join("; ");
    assert!(gaps.contains("/nobody/knows") && gaps.contains("lt-1:1"), "{gaps}");
    let p = plan::plan(&inv, &Config::default().family_rules().unwrap(), &keep_nothing(), Utc::now());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    for i in &p.images {
        assert_eq!(i.verdict, Verdict::Keep);
        assert!(i.reasons.iter().any(|r| r.code == ReasonCode::Incomplete), "{:?}", i.reasons);
    }
    assert!(plan::guard_violations(&p, &inv, &HashMap::new()).iter().any(|v| v.contains("/nobody/knows")));
    let report = amictl_core::audit::audit(
        &inv,
        &Config::default().family_rules().unwrap(),
        &Config::default().compliance,
        Utc::now(),
    );
    assert!(report.failures.iter().any(|f| f.error.contains("/nobody/knows")));
}

#[tokio::test]
async fn a_failed_parameter_call_is_a_gap_not_a_blind_spot() {
    let mut truth = estate();
    truth.launch_templates = vec![template("lt-1", &[(1, "resolve:ssm:/golden/web")])];
    truth.parameters = BTreeMap::from([("/golden/web".to_string(), value(&ami(1), 1))]);
    let cloud = FailureCloud::new(MemoryCloud::new(truth)).fail("GetParameters", 1, CloudErrorKind::Throttled);
    let inv = collect(&[cloud], SharingScope::All, 4).await;
    assert!(!inv.is_complete());
    assert!(inv.incompleteness()[0].contains("injected failure"), "{:?}", inv.incompleteness());
}

fn fleet(kind: FleetKind, id: &str, state: &str, kind_of_request: Option<&str>, images: &[usize]) -> Fleet {
    Fleet {
        kind,
        fleet_id: id.into(),
        state: state.into(),
        request_type: kind_of_request.map(str::to_string),
        image_ids: images.iter().map(|n| ami(*n)).collect(),
        templates: vec![],
    }
}

#[tokio::test]
async fn fleets_and_spot_requests_that_may_launch_are_use() {
    let mut truth = estate();
    let by_template = TemplateRef { id: Some("lt-9".into()), name: None, version: Some("$Latest".into()) };
    truth.launch_templates = vec![template("lt-9", &[(1, &ami(9)), (2, &ami(10))])];
    truth.fleets = vec![
        fleet(FleetKind::SpotFleet, "sfr-1", "active", Some("maintain"), &[1]),
        fleet(FleetKind::SpotFleet, "sfr-2", "cancelled", Some("maintain"), &[2]),
        fleet(FleetKind::Ec2Fleet, "fleet-1", "active", Some("maintain"), &[3]),
        fleet(FleetKind::Ec2Fleet, "fleet-2", "active", Some("instant"), &[4]),
        fleet(FleetKind::SpotRequest, "sir-1", "open", Some("one-time"), &[5]),
        fleet(FleetKind::SpotRequest, "sir-2", "active", Some("persistent"), &[6]),
        fleet(FleetKind::SpotRequest, "sir-3", "active", Some("one-time"), &[7]),
        fleet(FleetKind::SpotRequest, "sir-4", "cancelled", Some("persistent"), &[8]),
        Fleet { templates: vec![by_template], ..fleet(FleetKind::Ec2Fleet, "fleet-3", "active", Some("request"), &[]) },
    ];
    let inv = collected(truth).await;
    let scope = &inv.scopes[0];
    assert_eq!(evidence(scope, 1), ["spot fleet sfr-1 (active)"]);
    assert!(evidence(scope, 2).is_empty(), "a cancelled spot fleet launches nothing");
    assert_eq!(evidence(scope, 3), ["ec2 fleet fleet-1 (active)"]);
    assert!(evidence(scope, 4).is_empty(), "an instant fleet launched once and is done");
    assert_eq!(evidence(scope, 5), ["spot request sir-1 (open)"]);
    assert_eq!(evidence(scope, 6), ["spot request sir-2 (active)"]);
    assert!(evidence(scope, 7).is_empty(), "its instance is counted as an instance");
    assert!(evidence(scope, 8).is_empty());
    let ten = evidence(scope, 10);
    assert!(ten.contains(&"ec2 fleet fleet-3 (active) via lt-9:$Latest".to_string()), "{ten:?}");
}

#[tokio::test]
async fn a_mixed_instances_override_naming_another_template_is_use() {
    let mut truth = estate();
    truth.launch_templates = vec![template("lt-base", &[(1, &ami(1))]), template("lt-arm", &[(1, &ami(2))])];
    truth.auto_scaling_groups = vec![AutoScalingGroup {
        name: "web".into(),
        min_size: 1,
        max_size: 2,
        desired_capacity: 1,
        source: AsgSource::MixedInstancesPolicy {
            template: TemplateRef { id: Some("lt-base".into()), name: None, version: Some("1".into()) },
            overrides: vec![TemplateRef {
                id: None,
                name: Some("lt-arm-name".into()),
                version: Some("$Default".into()),
            }],
        },
        instance_ids: vec![],
        in_service: vec![],
    }];
    let inv = collected(truth).await;
    let two = evidence(&inv.scopes[0], 2);
    assert!(two.contains(&"asg web via mixed instances override lt-arm:$Default (desired 1)".to_string()), "{two:?}");
}
