//! Carrying a plan out: guards, confirmation, journal, Ctrl-C. One path for `retire --apply`,
//! `apply FILE` and `apply --resume`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use amictl_core::apply::{self, ApplyOptions, ApplyReport, StepOutcome};
use amictl_core::aws::collect::{self, DEFAULT_CONCURRENCY};
use amictl_core::aws::session::Connection;
use amictl_core::config::{Config, SharingScope};
use amictl_core::inventory::Inventory;
use amictl_core::journal::{self, Journal, StepStatus};
use amictl_core::plan::{self, Action, ActionKind, Plan};
use amictl_core::Error;
use chrono::{DateTime, Utc};

use crate::cli::{ExecArgs, GlobalArgs, Output};
use crate::exit;
use crate::render;

/// `--as-of` judges a plan at another time; a change is always made now.
pub fn refuse_as_of(exec: &ExecArgs) -> Result<(), Error> {
    match &exec.as_of {
        Some(t) => Err(Error::Usage(format!(
            "--as-of / AMICTL_AS_OF ({t}) is for plans only: changes are made as of now (drop --apply, or unset AMICTL_AS_OF)"
        ))),
        None => Ok(()),
    }
}

pub fn as_of(exec: &ExecArgs) -> Result<DateTime<Utc>, Error> {
    match &exec.as_of {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| Error::Usage(format!("--as-of {s:?}: not an RFC 3339 time like 2026-12-01T00:00:00Z: {e}"))),
    }
}

/// Adds what the journal knows (snapshots of images amictl deregistered) to an inventory; a
/// journal that does not exist yet knows nothing.
pub fn add_journal_evidence(c: &Config, exec: &ExecArgs, inv: &mut Inventory) -> Result<(), Error> {
    let path = journal_path(c, exec.journal.as_deref());
    if path.exists() {
        Journal::open(&path)?.add_retired_snapshots(inv)?;
    }
    Ok(())
}

fn journal_path(c: &Config, exec_path: Option<&std::path::Path>) -> std::path::PathBuf {
    exec_path.map(|p| p.to_path_buf()).or_else(|| c.journal.clone()).unwrap_or_else(journal::default_path)
}

pub fn open_journal(c: &Config, exec_path: Option<&std::path::Path>) -> Result<Journal, Error> {
    Journal::open(&journal_path(c, exec_path))
}

fn confirm(plan: &Plan, yes: bool) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage("refusing to apply without --yes: standard input is not a terminal".into()));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "Apply {} change(s): {} deprecation(s), {} disabling(s), {} deregistration(s), {} snapshot deletion(s), {} restore(s)? Type yes: ",
        plan.actions.len(),
        plan.count(ActionKind::Deprecate),
        plan.count(ActionKind::Disable),
        plan.count(ActionKind::Deregister),
        plan.count(ActionKind::DeleteSnapshot),
        plan.count(ActionKind::Restore)
    );
    let _ = err.flush();
    drop(err);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Error::Other(e.to_string()))?;
    if line.trim() != "yes" {
        return Err(Error::Other("not applied: the answer was not `yes`".into()));
    }
    Ok(())
}

/// Guards, confirmation, a fresh plan, journal, lock, execution: the one path of every apply.
///
/// `shown` is the plan the user saw (made now, read from a file, or from the journal when
/// `resume` names a run); `inv` the inventory it was checked against. After the confirmation
/// the estate is read again and planned again under the stricter of `shown`'s policy and the
/// configured one; only what that fresh plan also takes is executed, with its targets. The
/// rest is reported, item by item, as skipped.
pub async fn run_plan(
    c: &Config,
    exec: &ExecArgs,
    shown: &Plan,
    conn: &Connection,
    inv: &Inventory,
    resume: Option<i64>,
    command: &str,
) -> Result<(Plan, ApplyReport), Error> {
    let mut journal = open_journal(c, exec.journal.as_deref())?;
    check_guards(shown, inv, &journal, exec.force)?;
    if shown.actions.is_empty() {
        return Ok((shown.clone(), ApplyReport::default()));
    }
    confirm(shown, exec.yes)?;

    // What is true now, after the confirmation.
    let mut fresh_inv = collect::collect(&conn.clouds, SharingScope::Unreferenced, DEFAULT_CONCURRENCY).await;
    journal.add_retired_snapshots(&mut fresh_inv)?;
    let policy = if c.retire_configured { shown.policy.stricter(&c.retire) } else { shown.policy.clone() };
    let families = c.family_rules()?;
    let now = Utc::now();
    let fresh = plan::plan(&fresh_inv, &families, &policy, now);
    let then = plan::plan(&fresh_inv, &families, &policy, shown.as_of);
    let prior = match resume {
        Some(id) => journal.steps(id)?,
        None => Default::default(),
    };
    let done = |id: &str| prior.get(id).is_some_and(|s| s.status == StepStatus::Done);
    let applied_in = |id: &str| if resume.is_some() { None } else { journal.applied_in(id).ok().flatten() };
    let explain = |a: &Action| plan::explain_difference(a, shown, &fresh, &then, &applied_in);
    let reconciled = plan::reconcile(shown, &fresh, &done, &explain);
    let executed = Plan { actions: reconciled.actions, ..fresh };
    check_guards(&executed, &fresh_inv, &journal, exec.force)?;

    let run_id = match resume {
        Some(id) => id,
        None => start_run(&journal, &executed, command)?,
    };
    let skipped = record_differing(&journal, run_id, &reconciled.differing)?;
    lock(&mut journal, &executed, run_id, command, resume.is_none())?;
    let journal = Mutex::new(journal);
    let opts = ApplyOptions { concurrency: exec.concurrency, rate_per_sec: exec.rate, now };
    let report = tokio::select! {
        r = apply::apply(&executed, &conn.clouds, &fresh_inv, &journal, run_id, &opts) => r,
        _ = tokio::signal::ctrl_c() => {
            let j = journal.lock().unwrap();
            j.finish_run(run_id, "interrupted")?;
            j.unlock(run_id)?;
            return Err(Error::Other(format!("interrupted: run {run_id} stopped; continue it with `amictl apply --resume`")));
        }
        _ = renew_locks(&journal, run_id) => unreachable!("renewing never ends"),
    };
    let j = journal.lock().unwrap();
    j.unlock(run_id)?;
    let mut report = report?;
    report.outcomes.extend(skipped);
    let status = if report.all_done() { "completed" } else { "completed-with-errors" };
    j.finish_run(run_id, status)?;
    Ok((executed, ApplyReport { run_id, ..report }))
}

/// The sanity guards; `force` turns a refusal into warnings.
fn check_guards(plan: &Plan, inv: &Inventory, journal: &Journal, force: bool) -> Result<(), Error> {
    let violations = plan::guard_violations(plan, inv, &journal.last_live_instances()?);
    if violations.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(Error::Usage(format!("refusing to apply: {} (--force overrides)", violations.join("; "))));
    }
    for v in &violations {
        tracing::warn!("guard overridden by --force: {v}");
    }
    Ok(())
}

/// Journals a new run with the plan it executes (what a resume continues).
fn start_run(journal: &Journal, plan: &Plan, command: &str) -> Result<i64, Error> {
    let text = serde_json::to_string(plan).map_err(|e| Error::Other(e.to_string()))?;
    let id = journal.start_run(command, &text)?;
    for s in &plan.scopes {
        journal.record_scope(id, &s.account, &s.region, s.live_instances, s.images)?;
    }
    Ok(id)
}

/// Saved actions the fresh plan does not take: journaled and reported as skipped.
fn record_differing(journal: &Journal, run_id: i64, differing: &[(Action, String)]) -> Result<Vec<StepOutcome>, Error> {
    let mut out = Vec::new();
    for (a, why) in differing {
        let detail = format!("not in a fresh plan: {why}");
        journal.step_finished(run_id, &a.id, StepStatus::Skipped, &detail)?;
        out.push(StepOutcome {
            action_id: a.id.clone(),
            kind: a.kind,
            target: a.snapshot_id.clone().or_else(|| a.image_id.clone()).unwrap_or_default(),
            status: StepStatus::Skipped,
            detail,
            earlier: false,
        });
    }
    Ok(out)
}

/// One run at a time per account and region: takes the plan's scopes for `run_id`, saying
/// which dead holder it took over. A refused new run is recorded as refused, not left running.
fn lock(journal: &mut Journal, plan: &Plan, run_id: i64, command: &str, new_run: bool) -> Result<(), Error> {
    let scopes: Vec<(String, String)> = plan.scopes.iter().map(|s| (s.account.clone(), s.region.clone())).collect();
    match journal.lock_scopes(&scopes, run_id, command) {
        Ok(dead) => {
            for h in dead {
                crate::out::eprint_line(&format!(
                    "warning: taking over the lock of {}/{} from run {} (process {} on {} is gone or its lease expired)",
                    h.account, h.region, h.run_id, h.pid, h.host
                ));
            }
            Ok(())
        }
        Err(e) => {
            if new_run {
                journal.finish_run(run_id, "refused")?;
            }
            Err(e)
        }
    }
}

/// Keeps this run's locks alive while it works.
async fn renew_locks(journal: &Mutex<Journal>, run_id: i64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        if let Err(e) = journal.lock().unwrap().renew_locks(run_id) {
            tracing::warn!("could not renew the run's lock: {e}");
        }
    }
}

/// Prints the result of an apply and picks the exit code.
pub fn finish(g: &GlobalArgs, plan: Option<&Plan>, report: ApplyReport) -> Result<u8, Error> {
    match g.output {
        Output::Json => render::json("amictl.apply/v1", &serde_json::json!({ "plan": plan, "result": report }))?,
        Output::Table => render::print(&render::apply_table(&report, render::width())),
    }
    let bad = report.count(StepStatus::Aborted) + report.count(StepStatus::Failed) + report.count(StepStatus::Skipped);
    Ok(if bad == 0 { exit::OK } else { exit::FINDINGS })
}
