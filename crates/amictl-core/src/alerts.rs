//! What amictl tells people through SNS: pipeline start, finish and failure, and audit
//! findings at or above a severity. Pure: the messages are built here and sent by
//! [`crate::aws::Notify`].

use std::collections::BTreeMap;

use crate::audit::AuditReport;
use crate::report::Severity;

/// SNS takes up to 256 KB; this many findings make a message a person still reads.
const FINDINGS_LISTED: usize = 50;

/// One SNS message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub subject: String,
    pub body: String,
}

/// Where a pipeline run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Finished,
    Failed,
}

impl Event {
    fn word(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Finished => "finished",
            Event::Failed => "FAILED",
        }
    }
}

/// `amictl emergency run 12 started`, with `detail` (the plan, the result, the error) as the body.
pub fn pipeline(command: &str, run_id: Option<i64>, event: Event, scope: &str, detail: &str) -> Message {
    let run = run_id.map(|r| format!(" run {r}")).unwrap_or_default();
    Message {
        subject: format!("amictl {command}{run} {} in {scope}", event.word()),
        body: format!("amictl {command}{run} {} in {scope}.\n\n{detail}\n", event.word()),
    }
}

/// A summary of the audit's findings at or above `gate`; `None` when there is none (nothing to
/// tell anyone).
pub fn audit_summary(report: &AuditReport, gate: Severity) -> Option<Message> {
    let serious: Vec<_> = report.findings.iter().filter(|f| f.severity >= gate).collect();
    if serious.is_empty() {
        return None;
    }
    let mut by_rule: BTreeMap<(std::cmp::Reverse<Severity>, &str), usize> = BTreeMap::new();
    for f in &serious {
        *by_rule.entry((std::cmp::Reverse(f.severity), f.rule.as_str())).or_default() += 1;
    }
    let scopes = report.scopes.join(", ");
    let mut body = format!(
        "amictl audit of {scopes}: {} finding(s) at or above {gate} (of {} in all; {} images, {} in use).\n\nBy rule:\n",
        serious.len(),
        report.summary.findings,
        report.summary.images,
        report.summary.images_in_use
    );
    for ((sev, rule), n) in &by_rule {
        body.push_str(&format!("  {n:>5}  {:<8} {rule}\n", sev.0.to_string()));
    }
    body.push_str("\nFindings:\n");
    for f in serious.iter().take(FINDINGS_LISTED) {
        body.push_str(&format!(
            "  {:<8} {:<28} {}/{} {}: {}\n",
            f.severity.to_string(),
            f.rule,
            f.account,
            f.region,
            f.resource,
            f.message
        ));
    }
    if serious.len() > FINDINGS_LISTED {
        body.push_str(&format!("  … and {} more (amictl audit --output json)\n", serious.len() - FINDINGS_LISTED));
    }
    if !report.failures.is_empty() {
        body.push_str(&format!(
            "\nIncomplete: {} scope(s) or reads failed; the audit may miss findings.\n",
            report.failures.len()
        ));
    }
    Some(Message {
        subject: format!("amictl audit: {} finding(s) at or above {gate} in {}", serious.len(), short(&scopes)),
        body,
    })
}

fn short(s: &str) -> String {
    if s.chars().count() <= 50 {
        return s.to_string();
    }
    format!("{}…", s.chars().take(49).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Finding;

    fn finding(sev: Severity, rule: &str, resource: &str) -> Finding {
        Finding {
            severity: sev,
            rule: rule.into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            resource: resource.into(),
            image_id: None,
            message: "m".into(),
        }
    }

    fn report(findings: Vec<Finding>) -> AuditReport {
        let mut r: AuditReport = serde_json::from_value(serde_json::json!({
            "schema": "amictl.audit/v1", "generated_at": "2026-11-30T00:00:00Z", "scopes": ["123456789012/us-east-1"],
            "failures": [], "summary": {"images": 3, "images_in_use": 1, "findings": 0, "by_severity": {}, "by_rule": {}},
            "images": [], "findings": [], "orphaned_snapshots": []
        }))
        .unwrap();
        r.summary.findings = findings.len();
        r.findings = findings;
        r
    }

    #[test]
    fn only_findings_at_or_above_the_gate_are_told() {
        let r = report(vec![
            finding(Severity::Critical, "instance-runs-revoked", "i-1"),
            finding(Severity::High, "ami-too-old", "ami-1"),
            finding(Severity::Low, "ami-revoked", "ami-2"),
        ]);
        let m = audit_summary(&r, Severity::High).unwrap();
        assert!(m.subject.contains("2 finding(s) at or above high"), "{}", m.subject);
        assert!(m.body.contains("i-1") && m.body.contains("ami-1"));
        assert!(!m.body.contains("ami-2"), "{}", m.body);
        assert!(audit_summary(&r, Severity::Critical).unwrap().subject.contains("1 finding"));
    }

    #[test]
    fn nothing_at_the_gate_sends_nothing() {
        let r = report(vec![finding(Severity::Low, "ami-revoked", "ami-2")]);
        assert_eq!(audit_summary(&r, Severity::Medium), None);
    }

    #[test]
    fn a_long_list_is_cut_and_says_how_many_more() {
        let many = (0..60).map(|i| finding(Severity::High, "ami-too-old", &format!("ami-{i}"))).collect();
        let m = audit_summary(&report(many), Severity::High).unwrap();
        assert!(m.body.contains("… and 10 more"), "{}", m.body);
    }

    #[test]
    fn pipeline_messages_name_the_run_and_the_event() {
        let m = pipeline("emergency", Some(7), Event::Failed, "123456789012/us-east-1", "bake of web failed");
        assert_eq!(m.subject, "amictl emergency run 7 FAILED in 123456789012/us-east-1");
        assert!(m.body.contains("bake of web failed"));
    }
}
