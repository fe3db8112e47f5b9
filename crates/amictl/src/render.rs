//! Tables and JSON for the terminal.

use std::collections::{BTreeMap, HashMap};

use amictl_core::apply::ApplyReport;
use amictl_core::audit::AuditReport;
use amictl_core::config::ComplianceConfig;
use amictl_core::inventory::Inventory;
use amictl_core::journal::{RunSummary, StepRecord, StepStatus};
use amictl_core::plan::{Plan, ReasonCode, Verdict};
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
    let mut t =
        table(&["run", "amis", "wall s", "collect s", "analysis s", "api requests", "emulator s", "emulator share"]);
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

pub fn plan_table(plan: &Plan) {
    let count = |v: Verdict| plan.images.iter().filter(|i| i.verdict == v).count();
    println!(
        "Plan as of {}: {} AMI(s) — {} kept, {} to retire now, {} waiting for a grace period; {} action(s).",
        plan.as_of.to_rfc3339(),
        plan.images.len(),
        count(Verdict::Keep),
        count(Verdict::Retire),
        count(Verdict::Wait),
        plan.actions.len()
    );
    let mut kept: BTreeMap<ReasonCode, usize> = BTreeMap::new();
    for i in plan.images.iter().filter(|i| i.verdict == Verdict::Keep) {
        let mut codes: Vec<ReasonCode> = i.reasons.iter().map(|r| r.code).collect();
        codes.dedup();
        for c in codes {
            *kept.entry(c).or_default() += 1;
        }
    }
    if !kept.is_empty() {
        let parts: Vec<String> = kept
            .iter()
            .map(|(c, n)| {
                format!(
                    "{} {n}",
                    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
                )
            })
            .collect();
        println!("Kept because (an AMI may have several reasons): {}.", parts.join(", "));
    }
    if plan.actions.is_empty() {
        println!("Nothing to do.");
        return;
    }
    let mut t = table(&["action", "scope", "target", "why"]);
    let why: HashMap<(&str, &str, &str), String> = plan
        .images
        .iter()
        .map(|i| {
            let text = i.reasons.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>().join("; ");
            ((i.account.as_str(), i.region.as_str(), i.image_id.as_str()), text)
        })
        .collect();
    for a in &plan.actions {
        let reason = a
            .image_id
            .as_deref()
            .and_then(|i| why.get(&(a.account.as_str(), a.region.as_str(), i)))
            .cloned()
            .unwrap_or_else(|| a.detail.clone());
        let target = match (&a.snapshot_id, &a.image_id) {
            (Some(s), Some(i)) => format!("{s} (of {i})"),
            (Some(s), None) => s.clone(),
            (None, Some(i)) => i.clone(),
            (None, None) => String::new(),
        };
        t.add_row(vec![a.kind.as_str().to_string(), format!("{}/{}", a.account, a.region), target, reason]);
    }
    println!("{t}");
}

pub fn apply_table(r: &ApplyReport) {
    if r.outcomes.is_empty() {
        println!("Nothing was applied.");
        return;
    }
    let mut t = table(&["status", "action", "target", "detail"]);
    for o in &r.outcomes {
        let kind = o.kind.as_str().to_string();
        let status =
            serde_json::to_value(o.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        t.add_row(vec![status, kind, o.target.clone(), o.detail.clone()]);
    }
    println!("{t}");
    println!(
        "Run {}: {} done, {} aborted by a re-check, {} failed, {} skipped. `amictl history --run {}` shows the journal.",
        r.run_id,
        r.count(StepStatus::Done),
        r.count(StepStatus::Aborted),
        r.count(StepStatus::Failed),
        r.count(StepStatus::Skipped),
        r.run_id
    );
}

pub fn runs_table(runs: &[RunSummary], path: &std::path::Path) {
    if runs.is_empty() {
        println!("No runs in {}.", path.display());
        return;
    }
    let mut t = table(&["run", "command", "started", "finished", "status", "actions", "done", "aborted", "failed"]);
    for r in runs {
        t.add_row(vec![
            r.id.to_string(),
            r.command.clone(),
            r.started_at.clone(),
            r.finished_at.clone().unwrap_or_default(),
            r.status.clone(),
            r.actions.to_string(),
            r.done.to_string(),
            r.aborted.to_string(),
            r.failed.to_string(),
        ]);
    }
    println!("{t}");
}

pub fn steps_table(steps: &[StepRecord]) {
    let mut t = table(&["action", "status", "started", "finished", "detail"]);
    for s in steps {
        let status =
            serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        t.add_row(vec![
            s.action_id.clone(),
            status,
            s.started_at.clone(),
            s.finished_at.clone().unwrap_or_default(),
            s.detail.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}

pub fn image_list(rows: &[amictl_core::catalog::ListedImage]) {
    let mut t = table(&[
        "family",
        "version",
        "ami",
        "age (days)",
        "state",
        "in use",
        "validation",
        "scan",
        "channels",
        "revoked",
    ]);
    for r in rows {
        t.add_row(vec![
            r.family.clone(),
            r.version.clone().unwrap_or_default(),
            r.image_id.clone(),
            r.age_days.map(|d| d.to_string()).unwrap_or_default(),
            r.state.clone(),
            if r.in_use { r.in_use_summary.clone() } else { "no".into() },
            r.validation.clone(),
            r.scan.clone(),
            r.channels.join(", "),
            if r.revoked { "REVOKED".into() } else { String::new() },
        ]);
    }
    println!("{t}");
}

pub fn lineage(forest: &[amictl_core::catalog::LineageNode]) {
    fn walk(n: &amictl_core::catalog::LineageNode, prefix: &str, last: bool, root: bool) {
        let branch = if root {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        let mut line = format!("{prefix}{branch}{} {}", n.image_id, n.name);
        if let Some(v) = &n.version {
            line.push_str(&format!(" v{v}"));
        }
        if n.revoked {
            line.push_str(" [REVOKED]");
        }
        if let Some(o) = &n.outdated_by {
            line.push_str(&format!(" [OUTDATED: {o}]"));
        }
        println!("{line}");
        let next = if root { String::new() } else { format!("{prefix}{}", if last { "    " } else { "│   " }) };
        for (i, c) in n.children.iter().enumerate() {
            walk(c, &next, i + 1 == n.children.len(), false);
        }
    }
    for n in forest {
        walk(n, "", true, true);
    }
}

pub fn channel_history(c: &amictl_core::catalog::Channel) {
    println!("{}/{} ({}) points at {}", c.family, c.name, c.parameter, c.image_id);
    let mut t = table(&["version", "image", "changed", "action", "by", "previous"]);
    for e in c.history.iter().rev() {
        t.add_row(vec![
            e.version.to_string(),
            e.image_id.clone(),
            e.modified.map(|m| m.to_rfc3339()).unwrap_or_default(),
            e.note.as_ref().map(|n| n.action.clone()).unwrap_or_default(),
            e.note.as_ref().map(|n| n.by.clone()).unwrap_or_default(),
            e.note.as_ref().and_then(|n| n.previous.clone()).unwrap_or_default(),
        ]);
    }
    println!("{t}");
}
