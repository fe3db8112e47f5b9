//! Rolling: an instance refresh to the new version, followed to its end. AWS keeps the health
//! floor, waits for warm-up, pauses at checkpoints, watches alarms and rolls itself back.

use std::time::Duration;

use super::{current_group, fast_poll, once, DeployRequest, Outcome, Prepared};
use crate::aws::{Groups, RefreshPreferences, RefreshState};
use crate::engine::{poll, Look, Progress, Recorded, Run};
use crate::error::Error;

/// The refresh preferences a request asks for.
fn preferences(req: &DeployRequest) -> RefreshPreferences {
    // AWS ends a refresh at its last checkpoint: 100 makes it replace every instance.
    let mut checkpoints = req.checkpoints.clone();
    if checkpoints.last().is_some_and(|c| *c < 100) {
        checkpoints.push(100);
    }
    RefreshPreferences {
        min_healthy: req.min_healthy,
        max_healthy: req.max_healthy,
        warmup_seconds: req.warmup_seconds,
        checkpoints,
        checkpoint_delay_seconds: req.checkpoint_delay_seconds,
        skip_matching: req.skip_matching,
        auto_rollback: true,
        alarms: req.alarms.clone(),
        bake_time_seconds: req.bake_time_seconds,
    }
}

/// An instance refresh to `version`, followed to its end (a rollback with one still running
/// rolls that one back instead).
pub(super) async fn rolling<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    if p.target_version.is_some() {
        if let Some(active) = cloud.refresh_state(&p.group, None).await?.filter(|r| !r.is_done()) {
            return roll_back_refresh(cloud, run, req, p, active, progress).await;
        }
    }
    let id = start_refresh_once(cloud, run, req, p, version, progress).await?;
    let wait = follow_refresh(cloud, &p.group, &id, req.timeout, req.poll_interval, progress);
    let end = run
        .step("wait-refresh", progress, wait, |s: &RefreshState| format!("{} ({}%)", s.status, s.percentage))
        .await?;
    let refresh_id = Some(id);
    if end.status == "Successful" {
        let pin = async {
            cloud.pin_group(&p.group, &p.template_id, version).await?;
            Ok(format!("{} pinned to version {version}", p.group))
        };
        once(run, "pin-new", progress, pin).await?;
        return Ok(Outcome { refresh_id, ..Outcome::deployed() });
    }
    let why = format!("instance refresh {}: {}", end.status, end.reason.clone().unwrap_or_default());
    if end.status == "RollbackSuccessful" {
        return Ok(Outcome { refresh_id, ..Outcome::rolled_back(why) });
    }
    // Failed, cancelled, or a rollback that failed: the group's instances are mixed.
    Err(Error::Other(format!("{why}; {} may run both images: `amictl status --asg {}`", p.group, p.group)))
}

/// Rolls back a refresh that is still running (AWS's own RollbackInstanceRefresh).
async fn roll_back_refresh<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    active: RefreshState,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    // One already rolling back is followed, not rolled back again.
    if active.status != "RollbackInProgress" {
        let rb = async {
            cloud.rollback_refresh(&p.group).await?;
            Ok(format!("rolling back instance refresh {}", active.id))
        };
        once(run, "rollback-refresh", progress, rb).await?;
    }
    let wait = follow_refresh(cloud, &p.group, &active.id, req.timeout, req.poll_interval, progress);
    let end = run
        .step("wait-refresh", progress, wait, |s: &RefreshState| format!("{} ({}%)", s.status, s.percentage))
        .await?;
    if end.status != "RollbackSuccessful" {
        return Err(Error::Other(format!(
            "rolling back instance refresh {} of {} ended {}: {}",
            active.id,
            p.group,
            end.status,
            end.reason.unwrap_or_default()
        )));
    }
    // AWS restored the group to what it named before that refresh.
    let g = current_group(cloud, &p.group).await?;
    let now = g.template_version.unwrap_or_default();
    run.step("group-restored", progress, async { Ok(now.clone()) }, |v| format!("{} names version {v}", p.group))
        .await?;
    Ok(Outcome { refresh_id: Some(active.id), ..Outcome::deployed() })
}

/// Starts the refresh once: a resumed run follows the one it started (journaled, or found
/// active on the group after an attempt that could not journal it).
async fn start_refresh_once<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<String, Error> {
    match run.recorded("start-refresh")? {
        Recorded::Done(detail) => {
            if let Some(id) = detail.strip_prefix("instance refresh ") {
                return Ok(id.to_string());
            }
        }
        Recorded::Started => {
            // Only a refresh to this run's version is this run's.
            if let Some(r) = cloud
                .refresh_state(&p.group, None)
                .await?
                .filter(|r| !r.is_done() && r.desired_version == Some(version))
            {
                return Ok(r.id);
            }
        }
        Recorded::Never => {}
    }
    let prefs = preferences(req);
    let start = async { Ok(cloud.start_refresh(&p.group, &p.template_id, version, &prefs).await?) };
    run.step("start-refresh", progress, start, |id| format!("instance refresh {id}")).await
}

/// Polls the refresh until it ends (or `timeout`), showing its progress.
async fn follow_refresh<C: Groups>(
    cloud: &C,
    group: &str,
    id: &str,
    timeout: Duration,
    poll_interval: Duration,
    progress: &dyn Progress,
) -> Result<RefreshState, Error> {
    let look = async || {
        let s = cloud
            .refresh_state(group, Some(id))
            .await?
            .ok_or_else(|| Error::Other(format!("instance refresh {id} of {group} vanished")))?;
        if s.is_done() {
            return Ok(Look::Done(s));
        }
        let reason = s.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
        let note = format!("{}: {}% replaced, {} to go{reason}", s.status, s.percentage, s.to_update);
        Ok(Look::NotYet(s.status, note))
    };
    poll(timeout, fast_poll(poll_interval), progress, look).await?.map_err(|status| {
        Error::Other(format!(
            "instance refresh {id} of {group} still {status} after {}; it goes on in AWS: `amictl status --asg {group}`",
            crate::time::format_duration(timeout)
        ))
    })
}
