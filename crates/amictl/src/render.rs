//! Tables and JSON for the terminal.

use amictl_core::audit::AuditReport;
use amictl_core::config::ComplianceConfig;
use amictl_core::inventory::Inventory;
use amictl_core::Error;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::commands::ImageUsage;

pub fn json<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(format!("cannot render JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    t
}

/// How many findings the table shows unless `--all`.
const FINDINGS_SHOWN: usize = 50;

pub fn audit_table(r: &AuditReport, policy: &ComplianceConfig, all: bool) {
    println!(
        "Audited {} AMI(s) in {} scope(s): {} in use, {} finding(s); failing at {} and above.",
        r.summary.images,
        r.scopes.len(),
        r.summary.images_in_use,
        r.summary.findings,
        policy.fail_on
    );
    for f in &r.failures {
        println!("INCOMPLETE: {} could not be listed: {}", f.scope, f.error);
    }
    if r.findings.is_empty() {
        println!("No findings.");
        return;
    }
    let mut by_rule = table(&["rule", "severity", "count"]);
    let mut rules: Vec<_> = r.summary.by_rule.iter().collect();
    rules.sort_by_key(|(rule, n)| {
        let sev = r.findings.iter().find(|f| &f.rule == *rule).map(|f| f.severity);
        (std::cmp::Reverse(sev), std::cmp::Reverse(**n))
    });
    for (rule, n) in rules {
        let sev = r.findings.iter().find(|f| &f.rule == rule).map(|f| f.severity.to_string()).unwrap_or_default();
        by_rule.add_row(vec![rule.clone(), sev, n.to_string()]);
    }
    println!("{by_rule}");
    let shown = if all { r.findings.len() } else { FINDINGS_SHOWN.min(r.findings.len()) };
    let mut t = table(&["severity", "rule", "scope", "resource", "message"]);
    for f in &r.findings[..shown] {
        t.add_row(vec![
            f.severity.to_string(),
            f.rule.clone(),
            format!("{}/{}", f.account, f.region),
            f.resource.clone(),
            f.message.clone(),
        ]);
    }
    println!("{t}");
    if shown < r.findings.len() {
        println!("… {} more finding(s): use --all, or --output json for the full document.", r.findings.len() - shown);
    }
}

pub fn usage_table(rows: &[ImageUsage]) {
    let mut t = table(&["ami", "scope", "name", "state", "in use", "evidence"]);
    for r in rows {
        let mut evidence: Vec<String> = r.in_use_by.iter().map(|x| x.evidence.clone()).collect();
        evidence.extend(r.history.iter().map(|x| format!("history: {}", x.evidence)));
        t.add_row(vec![
            r.id.clone(),
            format!("{}/{}", r.account, r.region),
            r.name.clone(),
            r.state.clone(),
            if r.in_use { "yes" } else { "no" }.to_string(),
            evidence.join("\n"),
        ]);
    }
    println!("{t}");
    let used = rows.iter().filter(|r| r.in_use).count();
    println!("{} AMI(s), {used} in use, {} unused.", rows.len(), rows.len() - used);
}

pub fn inventory_table(inv: &Inventory) {
    let mut t = table(&[
        "scope",
        "amis",
        "snapshots",
        "instances",
        "launch templates",
        "template versions",
        "launch configs",
        "asgs",
    ]);
    for s in &inv.scopes {
        t.add_row(vec![
            s.scope().to_string(),
            s.images.len().to_string(),
            s.snapshots.len().to_string(),
            s.instances.len().to_string(),
            s.launch_templates.len().to_string(),
            s.launch_templates.iter().map(|l| l.versions.len()).sum::<usize>().to_string(),
            s.launch_configurations.len().to_string(),
            s.auto_scaling_groups.len().to_string(),
        ]);
    }
    for f in &inv.failures {
        t.add_row(vec![f.scope.to_string(), format!("FAILED: {}", f.error)]);
    }
    println!("{t}");
}

pub fn bench_table(result: &serde_json::Value) {
    let mut t = table(&["run", "amis", "wall s", "collect s", "analysis s", "api requests", "emulator s", "emulator share"]);
    for r in result["runs"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        t.add_row(vec![
            r["iteration"].to_string(),
            r["images"].to_string(),
            f("wall_seconds"),
            f("collect_seconds"),
            f("analysis_seconds"),
            r["api_requests"].to_string(),
            f("emulator_seconds"),
            r["emulator_share"].as_f64().map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{t}");
    if let Some(ops) = result["runs"].as_array().and_then(|r| r.last()).map(|r| &r["api_requests_by_operation"]) {
        println!("API requests by operation (last run): {ops}");
    }
}
