//! Carrying a plan out: guards, confirmation, journal, Ctrl-C. One path for `retire --apply`,
//! `apply FILE` and `apply --resume`.

use std::io::{BufRead, IsTerminal, Write};

use amictl_core::apply::{self, ApplyOptions, ApplyReport, StepOutcome};
use amictl_core::aws::collect::{self, DEFAULT_CONCURRENCY};
use amictl_core::aws::session::Connection;
use amictl_core::config::{Config, SharingScope};
use amictl_core::engine::{self, Engine};
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
    if path.exists() || is_team(&path) {
        open_journal(c, exec.journal.as_deref())?.add_retired_snapshots(inv)?;
    }
    Ok(())
}

fn journal_path(c: &Config, exec_path: Option<&std::path::Path>) -> std::path::PathBuf {
    exec_path.map(|p| p.to_path_buf()).or_else(|| c.journal.clone()).unwrap_or_else(journal::default_path)
}

fn is_team(path: &std::path::Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(journal::DYNAMODB_SCHEME))
}

/// The journal of `--journal`, `AMICTL_JOURNAL`, `journal =` or the default file. A team
/// journal (`dynamodb://[REGION/]TABLE`) is reached with amictl's own profile and endpoint, in
/// the region it names or the profile's: never `--region`, which changes between commands.
pub fn open_journal(c: &Config, exec_path: Option<&std::path::Path>) -> Result<Journal, Error> {
    let path = journal_path(c, exec_path);
    if is_team(&path) {
        let opts = super::connect_options(c);
        let config = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(amictl_core::aws::session::base_config(&opts, None))
        });
        journal::dynamo::configure(config);
    }
    Journal::open(&path)
}

fn confirm(plan: &Plan, yes: bool) -> Result<(), Error> {
    let question = format!(
        "Apply {} change(s): {} unsharing(s), {} deprecation(s), {} disabling(s), {} deregistration(s), {} snapshot deletion(s), {} restore(s)?",
        plan.actions.len(),
        plan.count(ActionKind::Unshare),
        plan.count(ActionKind::Deprecate),
        plan.count(ActionKind::Disable),
        plan.count(ActionKind::Deregister),
        plan.count(ActionKind::DeleteSnapshot),
        plan.count(ActionKind::Restore)
    );
    ask(&question, "apply", yes)
}

/// Asks a person to type `yes` (or takes `--yes`); refuses when nobody can answer.
pub fn ask(question: &str, verb: &str, yes: bool) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!("refusing to {verb} without --yes: standard input is not a terminal")));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} Type yes: ");
    let _ = err.flush();
    drop(err);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Error::Other(e.to_string()))?;
    if line.trim() != "yes" {
        return Err(Error::Other(format!("did not {verb}: the answer was not `yes`")));
    }
    Ok(())
}

/// The one path of every apply, on the library's run engine: guards, confirmation, a fresh
/// plan, journal and lock, execution, report.
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
    let engine = Engine::new(open_journal(c, exec.journal.as_deref())?, command);
    let last_live = engine.journal().last_live_instances()?;
    let guarded = engine.guard(&plan::guard_violations(shown, inv, &last_live), exec.force)?;
    if shown.actions.is_empty() {
        return Ok((shown.clone(), ApplyReport::default()));
    }
    let confirmed = guarded.confirm(|| confirm(shown, exec.yes))?;

    // What is true now, after the confirmation.
    // Without launch permissions: the re-check reads them, once per image, right before its call.
    let mut fresh_inv = collect::collect(&conn.clouds, SharingScope::Deferred, DEFAULT_CONCURRENCY).await;
    conn.report_unreachable(&mut fresh_inv);
    confirmed.journal().add_retired_snapshots(&mut fresh_inv)?;
    // Unless the plan read them a moment ago and no one was asked to confirm in between.
    if exec.yes {
        let recent = Utc::now() - chrono::Duration::from_std(apply::PERMISSIONS_FRESH).unwrap_or_default();
        collect::carry_launch_permissions(inv, &mut fresh_inv, recent);
    }
    // Except for images to take back from other accounts: who they are shared with, and
    // whether those accounts use them, is the whole question.
    let mut sharing: std::collections::BTreeMap<amictl_core::inventory::Scope, Vec<String>> = Default::default();
    for a in shown.actions.iter().filter(|a| a.kind == ActionKind::Unshare) {
        let scope = amictl_core::inventory::Scope { account: a.account.to_string(), region: a.region.to_string() };
        sharing.entry(scope).or_default().extend(a.image_id.as_deref().map(str::to_string));
    }
    if !sharing.is_empty() {
        // Read now, never from the journal's readings: this is the re-check.
        let fresh = amictl_core::sharing::Evidence::fresh_only();
        collect::add_launch_permissions(&conn.clouds, &mut fresh_inv, &sharing, DEFAULT_CONCURRENCY, &fresh).await;
    }
    let now = Utc::now();
    let (executed, differing) = replan(c, shown, &fresh_inv, confirmed.journal(), resume, now)?;
    engine::check_guards(&plan::guard_violations(&executed, &fresh_inv, &last_live), exec.force)?;

    let text = serde_json::to_string(&executed).map_err(|e| Error::Other(e.to_string()))?;
    let scopes: Vec<(String, String)> = executed.scopes.iter().map(|s| (s.account.clone(), s.region.clone())).collect();
    let (run, taken_over) = confirmed.begin(&text, &scopes, resume)?;
    for h in taken_over {
        crate::out::eprint_line(&format!(
            "warning: taking over the lock of {}/{} from run {} (process {} on {} is gone or its lease expired)",
            h.account, h.region, h.run_id, h.pid, h.host
        ));
    }
    let skipped = {
        let j = run.journal().lock().unwrap();
        if resume.is_none() {
            for s in &executed.scopes {
                j.record_scope(run.id(), &s.account, &s.region, s.live_instances, s.images)?;
            }
        }
        record_differing(&j, run.id(), &differing)?
    };
    // Deregistrations are the slowest paced of the changing calls (EC2 refills DeregisterImage
    // at 5 a second; CreateTags at 10, DeleteSnapshot at 5 but mostly spared).
    let paced_per_sec = conn.pacer.pace_of("EC2", "DeregisterImage").map(|p| p.per_sec);
    let opts = ApplyOptions { concurrency: exec.concurrency, rate_per_sec: exec.rate, paced_per_sec, now };
    let run_id = run.id();
    let report = run.drive(apply::apply(&executed, &conn.clouds, &fresh_inv, run.journal(), run_id, &opts)).await;
    let mut report = match report {
        Ok(r) => r,
        Err(e) => {
            run.finish("failed")?;
            return Err(e);
        }
    };
    report.outcomes.extend(skipped);
    run.finish(if report.all_done() { "completed" } else { "completed-with-errors" })?;
    Ok((executed, ApplyReport { run_id, ..report }))
}

/// A fresh plan under the stricter policy, reconciled with what was shown: the plan to
/// execute, and the shown actions it does not take, each with why.
fn replan(
    c: &Config,
    shown: &Plan,
    fresh_inv: &Inventory,
    journal: &Journal,
    resume: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(Plan, Vec<(Action, String)>), Error> {
    let policy = if c.retire_configured { shown.policy.stricter(&c.retire) } else { shown.policy.clone() };
    let families = c.family_rules()?;
    let fresh = plan::plan(fresh_inv, &families, &policy, now);
    // Judged at the shown plan's time: planned only when an item differs and needs explaining.
    let then = std::cell::OnceCell::new();
    let prior = match resume {
        Some(id) => journal.steps(id)?,
        None => Default::default(),
    };
    let done = |id: &str| prior.get(id).is_some_and(|s| s.status == StepStatus::Done);
    let applied_in = |id: &str| if resume.is_some() { None } else { journal.applied_in(id).ok().flatten() };
    let explain = |a: &Action| {
        let then = then.get_or_init(|| plan::plan(fresh_inv, &families, &policy, shown.as_of));
        plan::explain_difference(a, shown, &fresh, then, &applied_in)
    };
    let reconciled = plan::reconcile(shown, &fresh, &done, &explain);
    Ok((Plan { actions: reconciled.actions, ..fresh }, reconciled.differing))
}

/// Saved actions the fresh plan does not take: journaled and reported as skipped.
fn record_differing(journal: &Journal, run_id: i64, differing: &[(Action, String)]) -> Result<Vec<StepOutcome>, Error> {
    let mut out = Vec::new();
    for (a, why) in differing {
        let detail = format!("not in a fresh plan: {why}");
        journal.step_finished(run_id, &a.id(), StepStatus::Skipped, &detail)?;
        out.push(StepOutcome::of(a, StepStatus::Skipped, detail));
    }
    Ok(out)
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
