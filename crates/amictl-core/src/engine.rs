//! One engine for every mutating run: guards → confirmation → lock → journal → steps → report.
//!
//! The order is kept by types: [`Engine::guard`] gives a [`Guarded`] run, only a guarded run
//! can be [`Guarded::confirm`]ed, only a confirmed one can [`Confirmed::begin`] (journal the
//! run and lock its scopes), and only a begun [`Run`] has steps. Retire and apply run on it,
//! and so do image capture and channel changes; later pipelines (bake, validate, deploy, patch)
//! are meant to: a step may be a long wait (an instance running, an image available), shown
//! through [`Progress`].
//!
//! Every step is journaled before and after its call, so an interrupted run can be resumed;
//! Ctrl-C marks the run `interrupted` and releases its locks; locks are renewed while the run
//! lives, and a run whose holder died is taken over by the next one.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;
use crate::journal::{Journal, LockHolder, StepStatus};

/// Shows long steps to a person (a spinner on a terminal); the engine only says when a step
/// begins and ends.
pub trait Progress: Send + Sync {
    fn begin(&self, what: &str);
    fn end(&self);
    /// How a long step is getting on ("3 of 10 invocations done").
    fn note(&self, _how: &str) {}
}

/// One look at something a run waits for (an agent registering, invocations ending, a
/// refresh, a group's health).
pub enum Look<T, P> {
    Done(T),
    /// Not yet: how it stands (returned if time runs out), and a note for the person watching.
    NotYet(P, String),
}

/// The pauses between looks: from `first`, doubling, to at most `longest`.
pub const SLOW_POLL: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(15));

/// Looks until `look` says done, pausing between looks as `pauses` says; when the next pause
/// would pass `timeout`, returns the last not-yet state. A failed look is an error: waiting is
/// not retrying (the SDK retried the call already).
pub async fn poll<T, P>(
    timeout: Duration,
    (first, longest): (Duration, Duration),
    progress: &dyn Progress,
    mut look: impl AsyncFnMut() -> Result<Look<T, P>, Error>,
) -> Result<Result<T, P>, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = first.min(longest);
    loop {
        match look().await? {
            Look::Done(t) => return Ok(Ok(t)),
            Look::NotYet(p, note) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Ok(Err(p));
                }
                progress.note(&note);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(longest);
            }
        }
    }
}

/// No progress shown (tests, JSON output, no terminal).
pub struct Quiet;

impl Progress for Quiet {
    fn begin(&self, _what: &str) {}
    fn end(&self) {}
}

/// A mutating run about to start: which command, in which scopes.
pub struct Engine {
    journal: Journal,
    command: String,
}

impl Engine {
    pub fn new(journal: Journal, command: &str) -> Self {
        Engine { journal, command: command.into() }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The sanity guards: any violation refuses the run, unless `force` (then each is a warning).
    pub fn guard(self, violations: &[String], force: bool) -> Result<Guarded, Error> {
        check_guards(violations, force)?;
        Ok(Guarded(self))
    }
}

/// Refuses on any violation unless `force`; a run may check again what it learns later (a
/// fresh plan after the confirmation).
pub fn check_guards(violations: &[String], force: bool) -> Result<(), Error> {
    if violations.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(Error::Usage(format!("refusing to apply: {} (--force overrides)", violations.join("; "))));
    }
    for v in violations {
        tracing::warn!("guard overridden by --force: {v}");
    }
    Ok(())
}

/// A run whose guards passed.
pub struct Guarded(Engine);

impl Guarded {
    pub fn journal(&self) -> &Journal {
        &self.0.journal
    }

    /// Asks (or is told, with `--yes`) whether to go on; `ask` returns an error to stop.
    pub fn confirm(self, ask: impl FnOnce() -> Result<(), Error>) -> Result<Confirmed, Error> {
        ask()?;
        Ok(Confirmed(self.0))
    }
}

/// A run a person (or `--yes`) agreed to.
pub struct Confirmed(Engine);

impl Confirmed {
    pub fn journal(&self) -> &Journal {
        &self.0.journal
    }

    /// Journals the run (`plan_json` is what a resume continues) or continues run `resume`,
    /// and takes the lock of every `(account, region)` in `scopes`. A live holder refuses the
    /// run (a new one is recorded as `refused`); a dead one is taken over and returned so the
    /// caller can say so.
    pub fn begin(
        self,
        plan_json: &str,
        scopes: &[(String, String)],
        resume: Option<i64>,
    ) -> Result<(Run, Vec<LockHolder>), Error> {
        let Engine { mut journal, command } = self.0;
        let id = match resume {
            Some(id) => id,
            None => journal.start_run(&command, plan_json)?,
        };
        match journal.lock_scopes(scopes, id, &command) {
            Ok(dead) => Ok((Run { journal: Mutex::new(journal), id, command, interrupted: Default::default() }, dead)),
            Err(e) => {
                if resume.is_none() {
                    journal.finish_run(id, "refused")?;
                }
                Err(e)
            }
        }
    }
}

/// A journaled, locked run.
pub struct Run {
    journal: Mutex<Journal>,
    id: i64,
    command: String,
    /// Set when Ctrl-C ended it: its status stays `interrupted`.
    interrupted: std::sync::atomic::AtomicBool,
}

/// How an interrupted run of `command` is continued.
fn resume_hint(command: &str) -> &'static str {
    match command {
        "retire" | "apply" => "continue it with `amictl apply --resume`",
        "patch" => "continue it with `amictl patch --resume`: it reads the commands it sent, never resends them",
        "bake" => "run the same bake again: it finishes the image this run made, and terminates the builder",
        "deploy" | "rollback" => "see `amictl status`; an instance refresh goes on in AWS",
        _ => "its instances are terminated; run the command again",
    }
}

/// A step as an earlier attempt of the run left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Never,
    /// Begun, not known to have ended: its call may or may not have taken effect.
    Started,
    /// Done, with the detail it recorded.
    Done(String),
}

/// How often a run renews its locks; they lapse after [`crate::journal::LOCK_LEASE`].
const RENEW_EVERY: Duration = Duration::from_secs(30);

impl Run {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The journal, for executors that record their own steps (the retire executor).
    pub fn journal(&self) -> &Mutex<Journal> {
        &self.journal
    }

    /// What the journal has of step `id` of this run (a resumed run continues from it).
    pub fn recorded(&self, id: &str) -> Result<Recorded, Error> {
        let steps = self.journal.lock().unwrap().steps(self.id)?;
        Ok(match steps.get(id) {
            None => Recorded::Never,
            Some(s) if s.status == StepStatus::Done => Recorded::Done(s.detail.clone().unwrap_or_default()),
            Some(_) => Recorded::Started,
        })
    }

    /// Runs `work` while renewing the run's locks; Ctrl-C stops it, records the run as
    /// `interrupted` and releases the locks.
    pub async fn drive<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => {
                let j = self.journal.lock().unwrap();
                j.finish_run(self.id, "interrupted")?;
                j.unlock(self.id)?;
                self.interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(Error::Interrupted(format!("run {} ({}) stopped; {}", self.id, self.command, resume_hint(&self.command))))
            }
            lost = self.renew() => {
                // Another run holds the scope now: stop before changing anything more.
                let j = self.journal.lock().unwrap();
                j.finish_run(self.id, "failed")?;
                Err(lost)
            }
        }
    }

    /// Renews the locks until one turns out taken by another run: that error ends the run.
    async fn renew(&self) -> Error {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tick.tick().await;
            match self.journal.lock().unwrap().renew_locks(self.id) {
                Err(e) if e.to_string().contains(crate::journal::dynamo::LOST) => return e,
                Err(e) => tracing::warn!("could not renew the run's lock: {e}"),
                Ok(()) => {}
            }
        }
    }

    /// One journaled step: recorded as started, then done with `detail` of its result, or
    /// failed with the error. A step the journal has as done already (a resume) is not run.
    pub async fn step<T>(
        &self,
        id: &str,
        progress: &dyn Progress,
        work: impl Future<Output = Result<T, Error>>,
        detail: impl Fn(&T) -> String,
    ) -> Result<T, Error> {
        self.journal.lock().unwrap().step_started(self.id, id)?;
        progress.begin(id);
        let r = work.await;
        progress.end();
        let j = self.journal.lock().unwrap();
        match &r {
            Ok(v) => j.step_finished(self.id, id, StepStatus::Done, &detail(v))?,
            Err(e) => j.step_finished(self.id, id, StepStatus::Failed, &e.to_string())?,
        }
        r
    }

    /// Ends the run: `completed` when `ok`, else `failed` (or `completed-with-errors` for a run
    /// that did what it could), and releases its locks.
    pub fn finish(self, status: &str) -> Result<(), Error> {
        if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let j = self.journal.into_inner().unwrap();
        j.unlock(self.id)?;
        j.finish_run(self.id, status)
    }
}

/// Runs `work` as a whole journaled, locked run of `command` with no plan to confirm (a
/// capture, a channel change): guards (none), confirmation (given by the command itself),
/// lock, journal, steps; the run ends `completed` or `failed`, never left `running`.
pub async fn run_steps<T>(
    journal: Journal,
    command: &str,
    request_json: &str,
    scopes: &[(String, String)],
    work: impl AsyncFnOnce(&Run) -> Result<T, Error>,
) -> Result<(i64, T), Error> {
    let run = begin_unplanned(journal, command, request_json, scopes)?;
    let id = run.id();
    let r = run.drive(work(&run)).await;
    run.finish(if r.is_ok() { "completed" } else { "failed" })?;
    r.map(|v| (id, v))
}

/// A run with no plan to guard or confirm, journaled and locked; a dead holder's lock is taken
/// over, with a warning.
fn begin_unplanned(
    journal: Journal,
    command: &str,
    request_json: &str,
    scopes: &[(String, String)],
) -> Result<Run, Error> {
    let (run, dead) =
        Engine::new(journal, command).guard(&[], false)?.confirm(|| Ok(()))?.begin(request_json, scopes, None)?;
    for h in dead {
        tracing::warn!("took over the lock of {}/{} from run {} (its process is gone)", h.account, h.region, h.run_id);
    }
    Ok(run)
}

/// As [`run_steps`], and `cleanup` runs after `work` however it ended (done, failed, or stopped
/// by Ctrl-C), as the journaled step `cleanup`: the instances a pipeline launched are
/// terminated even when a step failed. A failed cleanup fails a run that had succeeded.
pub async fn run_steps_with_cleanup<T>(
    journal: Journal,
    command: &str,
    request_json: &str,
    scopes: &[(String, String)],
    work: impl AsyncFnOnce(&Run) -> Result<T, Error>,
    cleanup: impl AsyncFnOnce(&Run) -> Result<String, Error>,
) -> Result<(i64, T), Error> {
    let run = begin_unplanned(journal, command, request_json, scopes)?;
    let id = run.id();
    let r = run.drive(work(&run)).await;
    let cleaned = run.step("cleanup", &Quiet, cleanup(&run), |d: &String| d.clone()).await;
    let r = match (r, cleaned) {
        (Ok(v), Ok(_)) => Ok(v),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(c)) => Err(Error::Other(format!("{e}; and the cleanup failed: {c}"))),
    };
    run.finish(if r.is_ok() { "completed" } else { "failed" })?;
    r.map(|v| (id, v))
}
