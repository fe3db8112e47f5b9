use amictl_core::audit;
use amictl_core::config::Config;
use amictl_core::Error;

use crate::cli::{AuditArgs, GlobalArgs, Output};
use crate::exit;
use crate::render;

pub async fn run(g: &GlobalArgs, c: Config, a: &AuditArgs) -> Result<u8, Error> {
    let topic = a.topic_arn.clone().or_else(|| c.alerts.topic_arn.clone());
    if a.notify && topic.is_none() {
        return Err(Error::Usage(
            "--notify needs an SNS topic: --topic-arn ARN, or [alerts] topic_arn in amictl.toml".into(),
        ));
    }
    let (conn, inv) = super::load_estate(&c, &a.scan, c.compliance.check_sharing).await?;
    let families = c.family_rules()?;
    let report = audit::audit(&inv, &families, &c.compliance, chrono::Utc::now());
    match g.output {
        Output::Json => render::document(&report)?,
        Output::Table => render::print(&render::audit_table(&report, &c.compliance, a.all, render::width())),
    }
    if let (true, Some(topic)) = (a.notify, topic.as_deref()) {
        let gate = match &a.notify_severity {
            Some(s) => s.parse().map_err(Error::Usage)?,
            None => c.alerts.min_severity,
        };
        super::observe::notify_audit(&conn, topic, &report, gate).await?;
    }
    // An audit that missed a region must not pass as clean.
    super::require_complete(&inv)?;
    Ok(match report.worst() {
        Some(w) if w >= c.compliance.fail_on => exit::FINDINGS,
        _ => exit::OK,
    })
}
