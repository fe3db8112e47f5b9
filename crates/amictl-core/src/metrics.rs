//! The estate as CloudWatch metrics, and the dashboard that shows them. Pure: the values are
//! computed from an audit and the journal's runs here; [`crate::aws::Metrics`] puts them.
//!
//! | metric | dimensions | what |
//! |---|---|---|
//! | `ImageCount` | `Family` | registered images of the family |
//! | `OldestImageAgeDays`, `NewestImageAgeDays` | `Family` | age of its oldest and newest image |
//! | `NonCompliantImages` | — | images with a finding at or above the gate (`compliance.fail_on`) |
//! | `InstancesOnOutdatedImages` | — | live instances whose image is not their family's newest |
//! | `InstancesOnRevokedImages` | — | live instances on a revoked image |
//! | `LastRunSucceeded` | `Command` | 1 when the newest finished run of the command completed, else 0 |

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::audit::{AuditReport, ImageRecord};
use crate::aws::Datum;
use crate::journal::RunSummary;
use crate::report::Severity;
use crate::usage::RefKind;

/// The namespace amictl's metrics go to unless `[metrics] namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "amictl";
/// The commands whose last result is a metric.
pub const PIPELINES: [&str; 8] = ["bake", "validate", "scan", "deploy", "patch", "emergency", "retire", "apply"];

fn datum(name: &str, dimensions: &[(&str, &str)], value: f64, unit: &str) -> Datum {
    Datum {
        name: name.into(),
        dimensions: dimensions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        value,
        unit: unit.into(),
    }
}

fn newest_of_family(images: &[ImageRecord]) -> BTreeMap<&str, &ImageRecord> {
    let mut newest: BTreeMap<&str, &ImageRecord> = BTreeMap::new();
    for i in images.iter().filter(|i| i.state == "available") {
        let Some(f) = i.family.as_deref() else { continue };
        let e = newest.entry(f).or_insert(i);
        if i.creation_date > e.creation_date {
            *e = i;
        }
    }
    newest
}

/// Per family: how many images, the oldest and the newest's age in days.
fn family_metrics(audit: &AuditReport) -> Vec<Datum> {
    let mut by_family: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for i in &audit.images {
        if let Some(f) = i.family.as_deref() {
            by_family.entry(f).or_default().push(i.age_days.unwrap_or(0));
        }
    }
    let mut out = Vec::new();
    for (family, ages) in by_family {
        let dims = [("Family", family)];
        out.push(datum("ImageCount", &dims, ages.len() as f64, "Count"));
        out.push(datum("OldestImageAgeDays", &dims, *ages.iter().max().unwrap_or(&0) as f64, "None"));
        out.push(datum("NewestImageAgeDays", &dims, *ages.iter().min().unwrap_or(&0) as f64, "None"));
    }
    out
}

/// Live instances on an image that is not its family's newest, and on a revoked one.
fn instance_metrics(audit: &AuditReport) -> Vec<Datum> {
    let newest = newest_of_family(&audit.images);
    let mut outdated = 0usize;
    for i in &audit.images {
        let Some(f) = i.family.as_deref() else { continue };
        if newest.get(f).is_some_and(|n| n.id != i.id) {
            outdated += i.in_use_by.iter().filter(|r| r.kind == RefKind::Instance).count();
        }
    }
    let revoked = audit.findings.iter().filter(|f| f.rule == "instance-ami-revoked").count();
    vec![
        datum("InstancesOnOutdatedImages", &[], outdated as f64, "Count"),
        datum("InstancesOnRevokedImages", &[], revoked as f64, "Count"),
    ]
}

/// 1 when the newest finished run of each pipeline command completed, 0 when it did not;
/// commands never run (or still running) have no datum.
fn run_metrics(runs: &[RunSummary]) -> Vec<Datum> {
    let mut out = Vec::new();
    for command in PIPELINES {
        // `runs` is newest first.
        let last = runs.iter().find(|r| r.command == command && r.finished_at.is_some());
        if let Some(r) = last {
            let ok = matches!(r.status.as_str(), "completed");
            out.push(datum("LastRunSucceeded", &[("Command", command)], if ok { 1.0 } else { 0.0 }, "None"));
        }
    }
    out
}

/// Every metric of the estate: families, compliance, instances, the last runs.
pub fn estate_metrics(audit: &AuditReport, gate: Severity, runs: &[RunSummary]) -> Vec<Datum> {
    let mut out = family_metrics(audit);
    let non_compliant = audit.images.iter().filter(|i| i.findings.iter().any(|f| f.severity >= gate)).count();
    out.push(datum("NonCompliantImages", &[], non_compliant as f64, "Count"));
    out.extend(instance_metrics(audit));
    out.extend(run_metrics(runs));
    out
}

fn graph(title: &str, region: &str, metrics: Vec<Value>, x: u32, y: u32, view: &str) -> Value {
    json!({
        "type": "metric", "x": x, "y": y, "width": 12, "height": 6,
        "properties": {"title": title, "region": region, "view": view, "stat": "Maximum", "period": 3600,
                       "metrics": metrics}
    })
}

/// The dashboard's body (CloudWatch dashboard JSON): families, compliance, instances, runs.
pub fn dashboard(namespace: &str, region: &str, families: &[String]) -> Value {
    let per_family =
        |metric: &str| -> Vec<Value> { families.iter().map(|f| json!([namespace, metric, "Family", f])).collect() };
    let runs: Vec<Value> = PIPELINES.iter().map(|c| json!([namespace, "LastRunSucceeded", "Command", c])).collect();
    json!({"widgets": [
        graph("AMIs per family", region, per_family("ImageCount"), 0, 0, "timeSeries"),
        graph("Oldest AMI age (days)", region, per_family("OldestImageAgeDays"), 12, 0, "timeSeries"),
        graph("Non-compliant AMIs", region, vec![json!([namespace, "NonCompliantImages"])], 0, 6, "singleValue"),
        graph("Instances on outdated or revoked AMIs", region,
              vec![json!([namespace, "InstancesOnOutdatedImages"]), json!([namespace, "InstancesOnRevokedImages"])],
              12, 6, "singleValue"),
        graph("Last run succeeded (1) or not (0)", region, runs, 0, 12, "singleValue"),
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> AuditReport {
        serde_json::from_value(json!({
            "schema": "amictl.audit/v1", "generated_at": "2026-11-30T00:00:00Z", "scopes": ["123456789012/us-east-1"],
            "failures": [], "summary": {"images": 3, "images_in_use": 2, "findings": 1, "by_severity": {}, "by_rule": {}},
            "images": [
                {"image_id": "ami-old", "account": "1", "region": "r", "name": "web-1", "family": "web", "state": "available",
                 "creation_date": "2026-01-01T00:00:00Z", "age_days": 333, "in_use": true,
                 "in_use_by": [{"kind": "instance", "resource": "i-1", "evidence": ""}, {"kind": "instance", "resource": "i-2", "evidence": ""},
                               {"kind": "auto_scaling_group", "resource": "g", "evidence": ""}],
                 "history": [], "sharing_checked": false,
                 "findings": [{"severity": "medium", "rule": "ami-too-old", "account": "1", "region": "r", "resource": "ami-old", "image_id": "ami-old", "message": ""}]},
                {"image_id": "ami-new", "account": "1", "region": "r", "name": "web-2", "family": "web", "state": "available",
                 "creation_date": "2026-11-01T00:00:00Z", "age_days": 29, "in_use": true,
                 "in_use_by": [{"kind": "instance", "resource": "i-3", "evidence": ""}], "history": [], "sharing_checked": false, "findings": []},
                {"image_id": "ami-db", "account": "1", "region": "r", "name": "db-1", "family": "db", "state": "available",
                 "creation_date": "2026-11-20T00:00:00Z", "age_days": 10, "in_use": false, "in_use_by": [], "history": [],
                 "sharing_checked": false, "findings": []}
            ],
            "findings": [{"severity": "high", "rule": "instance-ami-revoked", "account": "1", "region": "r", "resource": "i-9", "image_id": "ami-x", "message": ""}],
            "orphaned_snapshots": []
        }))
        .unwrap()
    }

    fn value(data: &[Datum], name: &str, dim: Option<&str>) -> f64 {
        data.iter()
            .find(|d| d.name == name && d.dimensions.first().map(|(_, v)| v.as_str()) == dim)
            .unwrap_or_else(|| panic!("no {name} {dim:?} in {data:?}"))
            .value
    }

    fn run(id: i64, command: &str, status: &str) -> RunSummary {
        RunSummary {
            id,
            command: command.into(),
            started_at: String::new(),
            finished_at: (status != "running").then(String::new),
            status: status.into(),
            actions: 0,
            done: 0,
            failed: 0,
            aborted: 0,
            pid: None,
            host: None,
        }
    }

    #[test]
    fn families_are_counted_and_aged() {
        let d = estate_metrics(&audit(), Severity::Medium, &[]);
        assert_eq!(value(&d, "ImageCount", Some("web")), 2.0);
        assert_eq!(value(&d, "OldestImageAgeDays", Some("web")), 333.0);
        assert_eq!(value(&d, "NewestImageAgeDays", Some("web")), 29.0);
        assert_eq!(value(&d, "ImageCount", Some("db")), 1.0);
    }

    #[test]
    fn instances_on_an_older_image_of_their_family_are_outdated() {
        let d = estate_metrics(&audit(), Severity::Medium, &[]);
        // i-1 and i-2 run web-1 while web-2 exists; the group is not an instance.
        assert_eq!(value(&d, "InstancesOnOutdatedImages", None), 2.0);
        assert_eq!(value(&d, "InstancesOnRevokedImages", None), 1.0);
    }

    #[test]
    fn non_compliance_follows_the_gate() {
        assert_eq!(value(&estate_metrics(&audit(), Severity::Medium, &[]), "NonCompliantImages", None), 1.0);
        assert_eq!(value(&estate_metrics(&audit(), Severity::High, &[]), "NonCompliantImages", None), 0.0);
    }

    #[test]
    fn the_newest_finished_run_of_each_command_counts() {
        let runs = [
            run(5, "deploy", "running"),
            run(4, "deploy", "failed"),
            run(3, "deploy", "completed"),
            run(2, "bake", "completed"),
        ];
        let d = estate_metrics(&audit(), Severity::Medium, &runs);
        assert_eq!(value(&d, "LastRunSucceeded", Some("deploy")), 0.0);
        assert_eq!(value(&d, "LastRunSucceeded", Some("bake")), 1.0);
        assert!(!d.iter().any(|x| x.dimensions.iter().any(|(_, v)| v == "patch")));
    }

    #[test]
    fn the_dashboard_graphs_every_family() {
        let body = dashboard("amictl", "us-east-1", &["db".into(), "web".into()]);
        let text = body.to_string();
        assert_eq!(body["widgets"].as_array().unwrap().len(), 5);
        assert!(text.contains(r#"["amictl","ImageCount","Family","web"]"#), "{text}");
        assert!(text.contains("InstancesOnRevokedImages"));
    }
}
