//! Tables and JSON for the terminal. Every table function is pure: data and a width in, text
//! out, so snapshot tests pin what a person sees at 80 and 120 columns.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;

use amictl_core::apply::ApplyReport;
use amictl_core::audit::AuditReport;
use amictl_core::config::ComplianceConfig;
use amictl_core::inventory::Inventory;
use amictl_core::journal::{RunSummary, StepRecord, StepStatus};
use amictl_core::plan::{Plan, ReasonCode, Verdict};
use amictl_core::time::rfc3339;
use amictl_core::Error;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ColumnConstraint, ContentArrangement, Table};
use serde::Serialize;

use crate::commands::ImageUsage;
use crate::out::{self, outln};

mod grid;
use grid::{table_or_list, Col};

/// Where the width of the terminal is unknown (a pipe, a file, a terminal that reports 0×0).
pub const DEFAULT_WIDTH: u16 = 120;
/// Narrower than this is not a real terminal width (or a broken report of one).
const MIN_WIDTH: u16 = 40;

/// The width tables are laid out for: `COLUMNS` when set, the terminal's when stdout is one,
/// else [`DEFAULT_WIDTH`].
pub fn width() -> u16 {
    let terminal = if std::io::stdout().is_terminal() { Table::new().width() } else { None };
    choose_width(std::env::var("COLUMNS").ok().as_deref(), terminal)
}

/// `COLUMNS` when it is a usable width, else the terminal's when it reports a usable one (a
/// terminal may report 0×0), else [`DEFAULT_WIDTH`].
fn choose_width(columns: Option<&str>, terminal: Option<u16>) -> u16 {
    let usable = |w: &u16| *w >= MIN_WIDTH;
    columns
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(usable)
        .or(terminal.filter(usable))
        .unwrap_or(DEFAULT_WIDTH)
}

/// One JSON document on stdout: `{"schema": SCHEMA, ...body}`. `body` serializes to an object.
pub fn json<T: Serialize>(schema: &str, body: &T) -> Result<(), Error> {
    #[derive(Serialize)]
    struct Document<'a, T: Serialize> {
        schema: &'a str,
        #[serde(flatten)]
        body: &'a T,
    }
    document(&Document { schema, body })
}

/// A value that already carries its `schema` (the audit report, a plan).
pub fn document<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(format!("cannot render JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// Prints text made by the table functions.
pub fn print(text: &str) {
    out::print(text);
}

fn table(header: &[&str], width: u16) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width)
        .set_header(header);
    t
}

/// Ids, names of rules and scopes are never broken across lines: other columns wrap instead.
fn keep_whole(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
}

fn lines(t: &Table) -> String {
    format!("{t}\n")
}

/// Below this width a table with ids, rule names and prose has no room left for the prose:
/// findings become a list, scopes take two lines.
const NARROW: u16 = 110;

/// `account/region`, on two lines where the table is narrow.
fn scope_cell(account: &str, region: &str, width: u16) -> String {
    if width < NARROW {
        format!("{account}\n{region}")
    } else {
        format!("{account}/{region}")
    }
}

/// Prose wrapped at word boundaries to `width`, every line after the first indented by
/// `indent` spaces; a word longer than the line (an id) stays whole on its own line.
pub fn wrap(text: &str, width: u16, indent: usize) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    let width = width as usize;
    let mut out = String::new();
    let mut line: String = text.chars().take_while(|c| *c == ' ').collect();
    let mut fresh = true; // no word on the line yet
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !fresh && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// How many findings the table shows unless `--all`.
const FINDINGS_SHOWN: usize = 50;

pub fn audit_table(r: &AuditReport, policy: &ComplianceConfig, all: bool, width: u16) -> String {
    let summary = format!(
        "Audited {} AMI(s) in {} scope(s): {} in use, {} finding(s); failing at {} and above.",
        r.summary.images,
        r.scopes.len(),
        r.summary.images_in_use,
        r.summary.findings,
        policy.fail_on
    );
    let mut s = wrap(&summary, width, 2);
    for f in &r.failures {
        s.push_str(&wrap(&format!("INCOMPLETE: {} could not be listed: {}", f.scope, f.error), width, 2));
    }
    if r.findings.is_empty() {
        s.push_str("No findings.\n");
        return s;
    }
    let mut by_rule = table(&["rule", "severity", "count"], width);
    let mut rules: Vec<_> = r.summary.by_rule.iter().collect();
    let severity_of = |rule: &str| r.findings.iter().find(|f| f.rule == rule).map(|f| f.severity);
    rules.sort_by_key(|(rule, n)| (std::cmp::Reverse(severity_of(rule)), std::cmp::Reverse(**n)));
    for (rule, n) in rules {
        let sev = severity_of(rule).map(|s| s.to_string()).unwrap_or_default();
        by_rule.add_row(vec![rule.clone(), sev, n.to_string()]);
    }
    s.push_str(&lines(&by_rule));
    let shown = if all { r.findings.len() } else { FINDINGS_SHOWN.min(r.findings.len()) };
    if width < NARROW {
        s.push_str(&findings_list(&r.findings[..shown], width));
    } else {
        s.push_str(&findings_table(&r.findings[..shown], width));
    }
    if shown < r.findings.len() {
        let more = format!(
            "… {} more finding(s): use --all, or --output json for the full document.",
            r.findings.len() - shown
        );
        s.push_str(&wrap(&more, width, 2));
    }
    s
}

/// Findings where there is no room for a table: a heading line, the resource, the message.
fn findings_list(findings: &[amictl_core::report::Finding], width: u16) -> String {
    let mut s = String::new();
    for f in findings {
        let (detail, message) = split_resource(&f.resource, &f.message);
        let label = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        s.push_str(&format!("{} {}\n", f.severity.to_string().to_uppercase(), f.rule));
        s.push_str(&wrap(&format!("  {}{label} in {}/{}", f.resource, f.account, f.region), width, 4));
        s.push_str(&wrap(&format!("  {message}"), width, 4));
    }
    s
}

fn findings_table(findings: &[amictl_core::report::Finding], width: u16) -> String {
    let mut t = table(&["severity", "rule", "scope", "resource", "message"], width);
    for f in findings {
        let (detail, message) = split_resource(&f.resource, &f.message);
        let resource = match detail {
            Some(d) => format!("{}\n{d}", f.resource),
            None => f.resource.clone(),
        };
        t.add_row(vec![
            f.severity.to_string(),
            f.rule.clone(),
            scope_cell(&f.account, &f.region, width),
            resource,
            message.to_string(),
        ]);
    }
    keep_whole(&mut t, &[0, 1, 2, 3]);
    lines(&t)
}

/// A finding's message without the resource it starts with (the table shows the resource in
/// its own column): `ami-1 (web-1) is 400 days old` → (`web-1`, `is 400 days old`). The
/// resource may follow one leading word (`instance i-1 (running) runs …`).
pub fn split_resource<'a>(resource: &str, message: &'a str) -> (Option<&'a str>, &'a str) {
    let Some(at) = message.find(resource) else { return (None, message) };
    let before = &message[..at];
    if !(before.is_empty() || (before.ends_with(' ') && !before.trim_end().contains(' '))) {
        return (None, message);
    }
    let rest = &message[at + resource.len()..];
    if let Some(inner) = rest.strip_prefix(" (") {
        if let Some(close) = inner.find(") ") {
            return (Some(&inner[..close]), inner[close + 2..].trim_start_matches(": "));
        }
    }
    match rest.strip_prefix(' ') {
        Some(r) if !r.is_empty() => (None, r.trim_start_matches(": ")),
        _ => (None, message),
    }
}

pub fn usage_table(rows: &[ImageUsage], width: u16) -> String {
    const COLS: [Col; 6] = [
        Col::whole("ami"),
        Col::whole("scope"),
        Col::whole("name"),
        Col::whole("state"),
        Col::whole("in use"),
        Col::prose("evidence"),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut evidence: Vec<String> = r.in_use_by.iter().map(|x| x.evidence.clone()).collect();
            evidence.extend(r.history.iter().map(|x| format!("history: {}", x.evidence)));
            vec![
                r.image_id.clone(),
                format!("{}\n{}", r.account, r.region),
                r.name.clone(),
                r.state.clone(),
                if r.in_use { "yes" } else { "no" }.to_string(),
                evidence.join("\n"),
            ]
        })
        .collect();
    let used = rows.iter().filter(|r| r.in_use).count();
    format!(
        "{}{} AMI(s), {used} in use, {} unused.\n",
        table_or_list(&COLS, &cells, width),
        rows.len(),
        rows.len() - used
    )
}

pub fn inventory_table(inv: &Inventory, width: u16) -> String {
    let mut t = table(
        &["scope", "amis", "snapshots", "instances", "launch templates", "template versions", "launch configs", "asgs"],
        width,
    );
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
    keep_whole(&mut t, &[0]);
    lines(&t)
}

pub fn bench_table(result: &serde_json::Value, width: u16) -> String {
    if result["benchmark"] == "plan" {
        return plan_bench_table(result, width);
    }
    let mut t = table(
        &["run", "amis", "wall s", "collect s", "analysis s", "api requests", "emulator s", "emulator share"],
        width,
    );
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
    let mut s = lines(&t);
    if let Some(ops) = result["runs"].as_array().and_then(|r| r.last()).map(|r| &r["api_requests_by_operation"]) {
        s.push_str(&format!("API requests by operation (last run): {ops}\n"));
    }
    s
}

/// The planner benchmark: each run's wall time and what it planned.
fn plan_bench_table(result: &serde_json::Value, width: u16) -> String {
    let mut t = table(&["run", "amis", "wall s", "actions", "retired"], width);
    let runs = result["runs"].as_array().map(Vec::as_slice).unwrap_or_default();
    for r in runs {
        let wall = r["wall_seconds"].as_f64().map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        t.add_row(vec![
            r["iteration"].to_string(),
            r["images"].to_string(),
            wall,
            r["actions"].to_string(),
            r["retired"].to_string(),
        ]);
    }
    let mut s = lines(&t);
    if let (Some(fastest), Some(median)) = (result["fastest_seconds"].as_f64(), result["median_seconds"].as_f64()) {
        s.push_str(&format!(
            "fastest {fastest:.3} s, median {median:.3} s ({} build; run 1 also pays the first touch of the \
             memory the plan fills)\n",
            result["build"].as_str().unwrap_or("?")
        ));
    }
    s
}

pub fn plan_table(plan: &Plan, width: u16) -> String {
    let count = |v: Verdict| plan.images.iter().filter(|i| i.verdict == v).count();
    let summary = format!(
        "Plan as of {}: {} AMI(s) — {} kept, {} to retire now, {} waiting for a grace period; {} action(s).",
        rfc3339(plan.as_of),
        plan.images.len(),
        count(Verdict::Keep),
        count(Verdict::Retire),
        count(Verdict::Wait),
        plan.actions.len()
    );
    let mut s = wrap(&summary, width, 2);
    s.push_str(&wrap(&kept_summary(plan), width, 2));
    s.push_str(&waiting_list(plan, width));
    if plan.actions.is_empty() {
        s.push_str("Nothing to do.\n");
        return s;
    }
    let mut t = table(&["action", "scope", "target", "why"], width);
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
            .unwrap_or_else(|| a.detail());
        let target = match (&a.snapshot_id, &a.image_id) {
            (Some(s), Some(i)) => format!("{s}\n(of {i})"),
            (Some(s), None) => s.to_string(),
            (None, Some(i)) => i.to_string(),
            (None, None) => String::new(),
        };
        t.add_row(vec![a.kind.as_str().to_string(), scope_cell(&a.account, &a.region, width), target, reason]);
    }
    keep_whole(&mut t, &[0, 1, 2]);
    s.push_str(&lines(&t));
    s
}

fn kept_summary(plan: &Plan) -> String {
    let mut kept: BTreeMap<ReasonCode, usize> = BTreeMap::new();
    for i in plan.images.iter().filter(|i| i.verdict == Verdict::Keep) {
        let mut codes: Vec<ReasonCode> = i.reasons.iter().map(|r| r.code).collect();
        codes.dedup();
        for c in codes {
            *kept.entry(c).or_default() += 1;
        }
    }
    if kept.is_empty() {
        return String::new();
    }
    let code = |c: &ReasonCode| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string));
    let parts: Vec<String> = kept.iter().map(|(c, n)| format!("{} {n}", code(c).unwrap_or_default())).collect();
    format!("Kept because (an AMI may have several reasons): {}.", parts.join(", "))
}

/// Which images wait for a grace period, and until when.
fn waiting_list(plan: &Plan, width: u16) -> String {
    let mut s = String::new();
    for i in plan.images.iter().filter(|i| i.verdict == Verdict::Wait) {
        let until: Vec<&str> =
            i.reasons.iter().filter(|r| r.code == ReasonCode::Grace).map(|r| r.detail.as_str()).collect();
        let line = format!(
            "Waiting: {} ({}) in {}/{}: {}",
            i.image_id,
            i.name,
            i.account,
            i.region,
            if until.is_empty() { "grace period".to_string() } else { until.join("; ") }
        );
        s.push_str(&wrap(&line, width, 2));
    }
    s
}

fn status_text(s: StepStatus) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub fn apply_table(r: &ApplyReport, width: u16) -> String {
    if r.outcomes.is_empty() {
        return "Nothing was applied.\n".into();
    }
    let mut t = table(&["status", "action", "target", "detail"], width);
    for o in &r.outcomes {
        t.add_row(vec![status_text(o.status), o.kind.as_str().to_string(), o.target.clone(), o.detail.clone()]);
    }
    keep_whole(&mut t, &[0, 1, 2]);
    format!(
        "{}Run {}: {} done, {} aborted by a re-check, {} failed, {} skipped. `amictl history --run {}` shows the journal.\n",
        lines(&t),
        r.run_id,
        r.count(StepStatus::Done),
        r.count(StepStatus::Aborted),
        r.count(StepStatus::Failed),
        r.count(StepStatus::Skipped),
        r.run_id
    )
}

/// A journal time as written (RFC 3339, maybe with fractions) shown to the second.
fn shown_time(s: &str) -> String {
    amictl_core::journal::parse_time(s).map(rfc3339).unwrap_or_else(|| s.to_string())
}

/// How long a run took, to the second (`-` while it has not finished).
fn took(started: &str, finished: Option<&str>) -> String {
    use amictl_core::journal::parse_time;
    match (parse_time(started), finished.and_then(parse_time)) {
        (Some(a), Some(b)) => {
            let secs = (b - a).num_seconds().max(0) as u64;
            amictl_core::time::format_duration(std::time::Duration::from_secs(secs))
        }
        _ => "-".into(),
    }
}

pub fn runs_table(runs: &[RunSummary], path: &std::path::Path, width: u16) -> String {
    if runs.is_empty() {
        return format!("No runs in {}.\n", path.display());
    }
    const COLS: [Col; 9] = [
        Col::whole("run"),
        Col::whole("command"),
        Col::whole("started"),
        Col::whole("took"),
        Col::whole("status"),
        Col::whole("actions"),
        Col::whole("done"),
        Col::whole("aborted"),
        Col::whole("failed"),
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.command.clone(),
                shown_time(&r.started_at),
                took(&r.started_at, r.finished_at.as_deref()),
                r.status.clone(),
                r.actions.to_string(),
                r.done.to_string(),
                r.aborted.to_string(),
                r.failed.to_string(),
            ]
        })
        .collect();
    table_or_list(&COLS, &rows, width)
}

/// A run's steps in the order they ran (then by name).
pub fn steps_table(steps: &[StepRecord], width: u16) -> String {
    const COLS: [Col; 5] =
        [Col::whole("step"), Col::whole("status"), Col::whole("started"), Col::whole("finished"), Col::prose("detail")];
    let mut steps: Vec<&StepRecord> = steps.iter().collect();
    steps.sort_by(|a, b| (&a.started_at, &a.action_id).cmp(&(&b.started_at, &b.action_id)));
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                s.action_id.clone(),
                status_text(s.status),
                shown_time(&s.started_at),
                s.finished_at.as_deref().map(shown_time).unwrap_or_default(),
                s.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table_or_list(&COLS, &rows, width)
}

pub fn image_list(rows: &[amictl_core::catalog::ListedImage], width: u16) -> String {
    const COLS: [Col; 9] = [
        Col::whole("ami"),
        Col::whole("family"),
        Col::whole("version"),
        Col::whole("age"),
        Col::whole("state"),
        Col::prose("in use"),
        Col::whole("validation"),
        Col::whole("scan"),
        Col::prose("channels"),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.image_id.clone(),
                r.family.clone(),
                r.version.clone().unwrap_or_default(),
                r.age_days.map(|d| format!("{d}d")).unwrap_or_default(),
                if r.revoked { format!("{}\nREVOKED", r.state) } else { r.state.clone() },
                if r.in_use { r.in_use_summary.clone() } else { "no".into() },
                r.validation.clone(),
                r.scan.clone(),
                r.channels.join(", "),
            ]
        })
        .collect();
    table_or_list(&COLS, &cells, width)
}

pub fn lineage(forest: &[amictl_core::catalog::LineageNode]) -> String {
    fn walk(n: &amictl_core::catalog::LineageNode, prefix: &str, last: bool, root: bool, out: &mut String) {
        let branch = match (root, last) {
            (true, _) => "",
            (false, true) => "└── ",
            (false, false) => "├── ",
        };
        out.push_str(&format!("{prefix}{branch}{} {}", n.image_id, n.name));
        if let Some(v) = &n.version {
            out.push_str(&format!(" v{v}"));
        }
        if n.revoked {
            out.push_str(" [REVOKED]");
        }
        if let Some(o) = &n.outdated_by {
            out.push_str(&format!(" [OUTDATED: {o}]"));
        }
        out.push('\n');
        let next = if root { String::new() } else { format!("{prefix}{}", if last { "    " } else { "│   " }) };
        for (i, c) in n.children.iter().enumerate() {
            walk(c, &next, i + 1 == n.children.len(), false, out);
        }
    }
    let mut s = String::new();
    for n in forest {
        walk(n, "", true, true, &mut s);
    }
    s
}

/// Each instance's result of a patch: the failures (or every one, for a scan), with the last
/// line of its output.
pub fn patch_results(rows: &[&amictl_core::patching::InstanceResult], width: u16) -> String {
    const COLS: [Col; 6] = [
        Col::whole("instance"),
        Col::whole("group"),
        Col::whole("status"),
        Col::whole("details"),
        Col::whole("exit"),
        Col::prose("last output"),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|i| {
            vec![
                i.instance_id.clone(),
                i.group.clone().unwrap_or_else(|| "-".into()),
                i.status.clone(),
                i.status_details.clone(),
                i.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                i.output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string(),
            ]
        })
        .collect();
    table_or_list(&COLS, &cells, width)
}

pub fn channel_history(c: &amictl_core::catalog::Channel, width: u16) -> String {
    const COLS: [Col; 6] = [
        Col::whole("version"),
        Col::whole("image"),
        Col::whole("changed"),
        Col::whole("action"),
        Col::whole("by"),
        Col::whole("previous"),
    ];
    let rows: Vec<Vec<String>> = c
        .history
        .iter()
        .rev()
        .map(|e| {
            vec![
                e.version.to_string(),
                e.image_id.clone(),
                e.modified.map(rfc3339).unwrap_or_default(),
                e.note.as_ref().map(|n| n.action.clone()).unwrap_or_default(),
                e.note.as_ref().map(|n| n.by.clone()).unwrap_or_default(),
                e.note.as_ref().and_then(|n| n.previous.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    format!(
        "{}/{} ({}) points at {}\n{}",
        c.family,
        c.name,
        c.parameter,
        c.image_id,
        table_or_list(&COLS, &rows, width)
    )
}

#[cfg(test)]
mod tests;
