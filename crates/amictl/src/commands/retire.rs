use amictl_core::config::{Config, SharingScope};
use amictl_core::policy::Unmatched;
use amictl_core::Error;

use super::{duration_flag, execute};
use crate::cli::{GlobalArgs, Output, RetireArgs, ScanArgs};
use crate::exit;
use crate::out::outln;
use crate::render;

/// The retire flags applied on top of `[retire]` in the config.
pub fn apply_flags(mut c: Config, a: &RetireArgs) -> Result<Config, Error> {
    let p = &mut c.retire;
    if let Some(k) = a.keep {
        p.keep = k;
    }
    if let Some(s) = &a.min_age {
        p.min_age = duration_flag("--min-age", s)?;
    }
    p.keep_tags.extend(a.keep_tags.iter().cloned());
    if a.max_deletions.is_some() {
        p.max_deletions = a.max_deletions;
    }
    p.orphans |= a.orphans;
    p.immediate |= a.now;
    p.unshare_unused |= a.unshare_unused;
    if let Some(u) = &a.unmatched {
        p.unmatched = if u == "keep" { Unmatched::Keep } else { Unmatched::OwnFamily };
    }
    if let Some(s) = &a.grace_deprecated {
        p.grace.deprecated = duration_flag("--grace-deprecated", s)?;
    }
    if let Some(s) = &a.grace_disabled {
        p.grace.disabled = duration_flag("--grace-disabled", s)?;
    }
    if let Some(s) = &a.grace_deregistered {
        p.grace.deregistered = duration_flag("--grace-deregistered", s)?;
    }
    Ok(c)
}

pub async fn run(g: &GlobalArgs, c: Config, a: &RetireArgs) -> Result<u8, Error> {
    if a.apply {
        execute::refuse_as_of(&a.exec)?;
    }
    let as_of = execute::as_of(&a.exec)?;
    let (conn, mut inv) = super::load_estate(&c, &ScanArgs { check_sharing: None }, SharingScope::Deferred).await?;
    execute::add_journal_evidence(&c, &a.exec, &mut inv)?;
    let plan = super::plan_retirement(&conn, &mut inv, &c, a.exec.journal.as_deref(), &c.retire, as_of).await?;
    if let Some(path) = &a.plan_out {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::Other(format!("cannot write the plan to {}: {e}", path.display())))?;
    }
    if !a.apply {
        match g.output {
            Output::Json => render::document(&plan)?,
            Output::Table => {
                render::print(&render::plan_table(&plan, render::width()));
                for what in inv.incompleteness() {
                    outln!("INCOMPLETE: {what}");
                }
                match &a.plan_out {
                    Some(p) => {
                        outln!("Plan written to {}; apply it with `amictl apply {}`.", p.display(), p.display())
                    }
                    None => outln!("Dry run: nothing changed. Re-run with --apply to carry the plan out."),
                }
            }
        }
        // A plan that keeps images for evidence it could not read is not a clean plan, in
        // any format: exit 2, as `audit` does.
        super::require_complete(&inv)?;
        return Ok(exit::OK);
    }
    if g.output == Output::Table {
        render::print(&render::plan_table(&plan, render::width()));
    }
    let (executed, report) = execute::run_plan(&c, &a.exec, &plan, &conn, &inv, None, "retire").await?;
    execute::finish(g, Some(&executed), report)
}
