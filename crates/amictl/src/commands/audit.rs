use amictl_core::audit;
use amictl_core::config::Config;
use amictl_core::Error;

use crate::cli::{AuditArgs, GlobalArgs, Output};
use crate::exit;
use crate::render;

pub async fn run(g: &GlobalArgs, c: Config, a: &AuditArgs) -> Result<u8, Error> {
    let (_conn, inv) = super::load_estate(&c, &a.scan, c.compliance.check_sharing).await?;
    let families = c.family_rules()?;
    let report = audit::audit(&inv, &families, &c.compliance, chrono::Utc::now());
    match g.output {
        Output::Json => render::document(&report)?,
        Output::Table => render::print(&render::audit_table(&report, &c.compliance, a.all, render::width())),
    }
    // An audit that missed a region must not pass as clean.
    super::require_complete(&inv)?;
    Ok(match report.worst() {
        Some(w) if w >= c.compliance.fail_on => exit::FINDINGS,
        _ => exit::OK,
    })
}
