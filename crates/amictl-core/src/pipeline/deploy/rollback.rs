//! `amictl rollback`: a group back on its last-known-good version, or a blue-green deployment
//! undone — blue serving again behind every route exactly as it was before.

use super::blue_green::{set_routes, traffic_of, undo};
use super::health::{self, Gate};
use super::traffic::{split, switched};
use super::{current_group, last_known_good, once, DeployRequest, Deployment, Prepared, SavedPlan, Strategy};
use crate::aws::{Cloud, Forward, Groups, LoadBalancing, Machines};
use crate::catalog;
use crate::engine::{Progress, Run};
use crate::error::Error;
use crate::journal::Journal;

/// Prepares a rollback: the group returns to its last-known-good version (no new version is
/// made), found in the journal from the deployment the group is on now.
pub async fn prepare_rollback<C: Cloud + Groups>(cloud: &C, journal: &Journal, group: &str) -> Result<Prepared, Error> {
    let scope = cloud.scope().to_string();
    let g = cloud
        .group(group)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("Auto Scaling group {group}"), looked_in: scope.clone() })?;
    if let Some(why) = super::group_objection(&g, Strategy::Rolling) {
        return Err(Error::Usage(why));
    }
    let template_id = g.template_id.clone().unwrap_or_default();
    let named = g.template_version.clone().unwrap_or_else(|| "$Default".into());
    let (current, current_image) = cloud.template_version(&template_id, &named).await?.ok_or_else(|| {
        Error::NotFound { what: format!("version {named} of launch template {template_id}"), looked_in: scope.clone() }
    })?;
    // A refresh still running (a deployment interrupted or still going) is rolled back itself;
    // the group may not name the new version yet.
    let in_flight = cloud.refresh_state(group, None).await?.is_some_and(|r| !r.is_done());
    let (version, image, run) = last_known_good(journal, group, (!in_flight).then_some(current))?.ok_or_else(|| {
        Error::Usage(format!(
            "group {group} is on version {current}, which no completed amictl deployment in {} made: nothing to roll back to",
            journal.path().display()
        ))
    })?;
    let image = image.ok_or_else(|| Error::Usage(format!("version {version} (run {run}) names no image")))?;
    if !in_flight && current_image.as_deref() == Some(image.as_str()) {
        return Err(Error::Usage(format!(
            "group {group} already launches {image}, its last-known-good (version {current}): nothing to roll back"
        )));
    }
    match cloud.image_now(&image).await? {
        None => {
            return Err(Error::NotFound {
                what: format!("last-known-good AMI {image} (version {version})"),
                looked_in: scope,
            })
        }
        Some(i) if catalog::is_revoked(&i) => {
            return Err(Error::Usage(format!("not rolling back: the last-known-good {image} has been revoked")))
        }
        Some(_) => {}
    }
    Ok(Prepared {
        group: g.name,
        template_id,
        named_version: named,
        previous_version: current,
        previous_label: current_image.clone().unwrap_or_default(),
        previous_image: current_image,
        image_label: image.clone(),
        image_id: image,
        target_version: Some(version),
        token: String::new(),
        overridden: vec![],
        capacity: None,
        traffic: None,
    })
}

/// The newest blue-green deployment that `group` took part in (as blue or as green) and that
/// no rollback has undone yet: `(run id, its status, its plan)`.
pub fn blue_of(journal: &Journal, group: &str) -> Result<Option<(i64, String, SavedPlan)>, Error> {
    let undone: Vec<i64> = journal
        .runs_of("rollback")?
        .into_iter()
        .filter(|(_, status, _)| status == "completed")
        .filter_map(|(_, _, plan)| serde_json::from_str::<serde_json::Value>(&plan).ok()?["deploy_run"].as_i64())
        .collect();
    for (id, status, plan) in journal.runs_of("deploy")? {
        let Ok(saved) = serde_json::from_str::<SavedPlan>(&plan) else { continue };
        let Some(t) = &saved.prepared.traffic else { continue };
        if saved.prepared.group != group && t.green_group != group {
            continue;
        }
        // The newest deployment of the group decides: an older one is not what runs.
        if status == "rolled-back" || status == "refused" || undone.contains(&id) {
            return Ok(None);
        }
        return Ok(Some((id, status, saved)));
    }
    Ok(None)
}

/// Undoes blue-green deployment `deploy_run`: a completed one gets blue back at green's size,
/// attached at weight 0 until it serves, then every route exactly as it was and green scaled
/// in; an unfinished one gets every route back and green torn down.
pub async fn roll_back_blue_green<C: Cloud + Groups + LoadBalancing + Machines>(
    cloud: &C,
    journal: Journal,
    deploy_run: i64,
    saved: &SavedPlan,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let twins = green_twins(&journal, deploy_run)?;
    let completed = journal.run_plan(deploy_run)?.is_some_and(|(s, _)| s == "completed");
    let plan = serde_json::json!({"deploy_run": deploy_run, "request": req, "prepared": &saved.prepared}).to_string();
    let (run, _) = crate::engine::Engine::new(journal, "rollback")
        .guard(&[], false)?
        .confirm(|| Ok(()))?
        .begin(&plan, &scopes, None)?;
    let work = async {
        if completed {
            back_to_blue(cloud, &run, req, &saved.prepared, &twins, progress).await
        } else {
            let t = traffic_of(&saved.prepared)?;
            undo(cloud, &run, t, &twins, progress).await
        }
    };
    let r = run.drive(work).await;
    let run_id = run.id();
    run.finish(if r.is_ok() { "completed" } else { "failed" })?;
    r?;
    let p = &saved.prepared;
    let (version, image) = group_version(cloud, &p.group).await?;
    Ok(Deployment {
        command: "rollback".into(),
        run_id,
        group: p.group.clone(),
        strategy: saved.request.strategy,
        image_id: image.unwrap_or_default(),
        version,
        previous_image: Some(p.image_id.clone()),
        previous_version: version,
        outcome: "deployed".into(),
        green_group: None,
        reason: Some(format!("traffic back on {}", p.group)),
        refresh_id: None,
        overridden: vec![],
        notes: vec![],
    })
}

/// The green target groups deploy run `id` made or used, from its journal: `(blue, green)`.
fn green_twins(journal: &Journal, id: i64) -> Result<Vec<(String, String)>, Error> {
    let (_, plan) =
        journal.run_plan(id)?.ok_or_else(|| Error::Other(format!("deploy run {id} is not in the journal")))?;
    let saved: SavedPlan =
        serde_json::from_str(&plan).map_err(|e| Error::Other(format!("run {id}: unreadable plan: {e}")))?;
    let t = traffic_of(&saved.prepared)?;
    let steps = journal.steps(id)?;
    let mut out = Vec::new();
    for (i, twin) in t.twins.iter().enumerate() {
        let made = steps.get(&format!("green-target-group-{}", i + 1)).and_then(|s| s.detail.clone());
        if let Some(green) = made.filter(|d| d.starts_with("arn:")) {
            out.push((twin.blue.arn.clone(), green));
        }
    }
    Ok(out)
}

/// The version a group names and the image it launches, read back.
pub(super) async fn group_version<C: Groups>(cloud: &C, group: &str) -> Result<(i64, Option<String>), Error> {
    let g = current_group(cloud, group).await?;
    let (Some(t), Some(v)) = (&g.template_id, &g.template_version) else { return Ok((0, None)) };
    Ok(cloud.template_version(t, v).await?.unwrap_or((0, None)))
}

async fn back_to_blue<C: Cloud + Groups + LoadBalancing + Machines>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    twins: &[(String, String)],
    progress: &dyn Progress,
) -> Result<(), Error> {
    let t = traffic_of(p)?;
    let green = cloud.group(&t.green_group).await?;
    let size = green.as_ref().map(|g| g.desired_capacity).unwrap_or(t.blue_desired).max(t.blue_desired);
    // Blue's target groups carry no traffic now: attached at weight 0 they are health checked.
    let attach = async {
        set_routes(cloud, &t.routes, |f| split(f, twins, 100)).await?;
        Ok(format!("blue's target groups at weight 0 on {} route(s)", t.routes.len()))
    };
    once(run, "attach-blue", progress, attach).await?;
    let up = async {
        cloud.scale(&p.group, t.blue_min.min(size), size).await?;
        Ok(format!("{} back to {size}", p.group))
    };
    once(run, "scale-out-blue", progress, up).await?;
    let image = group_version(cloud, &p.group).await?.1.unwrap_or_default();
    let b = current_group(cloud, &p.group).await?;
    let routed: Vec<String> = twins
        .iter()
        .filter(|(blue, _)| t.routes.iter().any(|r| r.forward.names(blue)))
        .map(|(blue, _)| blue.clone())
        .collect();
    let gate = Gate {
        group: &p.group,
        image: &image,
        want: size.max(0) as usize,
        target_groups: &routed,
        warmup: health::warmup(&b, req.warmup_seconds, !routed.is_empty()),
        grace: health::grace(&b),
        timeout: req.health_timeout,
        poll_interval: req.poll_interval,
    };
    let serving = async { health::wait_serving(cloud, &gate, progress).await };
    let served = run
        .step("wait-blue", progress, serving, |r| match r {
            Ok(ids) => format!("passed: {} serving", ids.len()),
            Err(why) => format!("failed: {why}"),
        })
        .await?;
    if let Err(why) = served {
        set_routes(cloud, &t.routes, |f| switched(f, twins)).await?;
        return Err(Error::Other(format!(
            "{} did not serve again: {why}; the traffic stays on {}",
            p.group, t.green_group
        )));
    }
    let restore = async {
        set_routes(cloud, &t.routes, Forward::clone).await?;
        Ok(format!("{} route(s) as they were", t.routes.len()))
    };
    once(run, "restore-routes", progress, restore).await?;
    if green.is_some() {
        let down = async {
            cloud.scale(&t.green_group, 0, 0).await?;
            Ok(format!("{} scaled in", t.green_group))
        };
        once(run, "scale-in-green", progress, down).await?;
    }
    Ok(())
}
