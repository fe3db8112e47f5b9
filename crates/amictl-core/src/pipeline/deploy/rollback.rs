//! `amictl rollback`: a group back on its last-known-good version, or a blue-green deployment
//! undone — blue serving again behind every route exactly as it was before.

use super::blue_green::{back_to_blue, traffic_of, undo};
use super::{current_group, last_known_good, once, DeployRequest, Deployment, Prepared, SavedPlan, Strategy};
use crate::aws::{Alarms, Cloud, Groups, LoadBalancing, Machines};
use crate::catalog;
use crate::engine::Progress;
use crate::error::Error;
use crate::journal::Journal;

/// Prepares a rollback: the group returns to its last-known-good version (no new version is
/// made), found in the journal from the deployment the group is on now; with the strategy that
/// deployment used (a rollback goes back the way it came unless told otherwise).
pub(crate) async fn prepare_rollback<C: Cloud + Groups>(
    cloud: &C,
    journal: &Journal,
    group: &str,
) -> Result<(Prepared, Strategy), Error> {
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
    let strategy = journal
        .run_plan(run)?
        .and_then(|(_, plan)| serde_json::from_str::<SavedPlan>(&plan).ok())
        .map(|s| s.request.strategy)
        .filter(|s| !s.switches_traffic())
        .unwrap_or(Strategy::Rolling);
    let p = Prepared {
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
    };
    Ok((p, strategy))
}

/// The newest deployment that `group` took part in (as blue or as green), when it is a
/// blue-green one that no rollback has undone yet: `(run id, its status, its plan)`. A newer
/// deployment of the group that is not blue-green means the group's rollback is not one.
pub(crate) fn blue_of(journal: &Journal, group: &str) -> Result<Option<(i64, String, SavedPlan)>, Error> {
    let undone: Vec<i64> = journal
        .runs_of("rollback")?
        .into_iter()
        .filter(|(_, status, _)| status == "completed")
        .filter_map(|(_, _, plan)| serde_json::from_str::<serde_json::Value>(&plan).ok()?["deploy_run"].as_i64())
        .collect();
    for (id, status, plan) in journal.runs_of("deploy")? {
        let Ok(saved) = serde_json::from_str::<SavedPlan>(&plan) else { continue };
        let green = saved.prepared.traffic.as_ref().map(|t| t.green_group.as_str());
        if saved.prepared.group != group && green != Some(group) {
            continue;
        }
        // A refused run changed nothing: the one before it decides.
        if status == "refused" {
            continue;
        }
        if green.is_none() || status == "rolled-back" || undone.contains(&id) {
            return Ok(None);
        }
        return Ok(Some((id, status, saved)));
    }
    Ok(None)
}

/// Undoes blue-green deployment `deploy_run` ([`super::blue_green::back_to_blue`]): blue serves
/// again behind every route exactly as it was; green is scaled in when the deployment finished
/// (kept for a look), torn down when it did not. Refused before any change when a route sends
/// traffic somewhere the deployment did not (a newer deployment moved it). A rollback that was
/// interrupted is continued, not begun again.
pub(crate) async fn roll_back_blue_green<C: Cloud + Groups + LoadBalancing + Machines + Alarms>(
    cloud: &C,
    journal: Journal,
    deploy_run: i64,
    saved: &SavedPlan,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let p = &saved.prepared;
    let twins = green_twins(&journal, deploy_run)?;
    check_routes_unmoved(cloud, p, &twins, deploy_run).await?;
    let completed = journal.run_plan(deploy_run)?.is_some_and(|(s, _)| s == "completed");
    let earlier = unfinished_rollback(&journal, deploy_run)?;
    let plan = serde_json::json!({"deploy_run": deploy_run, "request": req, "prepared": p}).to_string();
    let (run, _) = crate::engine::Engine::new(journal, "rollback")
        .guard(&[], false)?
        .confirm(|| Ok(()))?
        .begin(&plan, &scopes, earlier)?;
    let work = async {
        if completed {
            back_to_blue(cloud, &run, req, p, &twins, progress).await?;
            let t = traffic_of(p)?;
            let down = async {
                if cloud.group(&t.green_group).await?.is_some() {
                    cloud.scale(&t.green_group, 0, 0).await?;
                }
                Ok(format!("{} scaled in", t.green_group))
            };
            once(&run, "scale-in-green", progress, down).await.map(drop)
        } else {
            undo(cloud, &run, req, p, &twins, progress).await
        }
    };
    let r = run.drive(work).await;
    let run_id = run.id();
    run.finish(if r.is_ok() { "completed" } else { "failed" })?;
    r?;
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

/// Every route sends traffic only to target groups the deployment knew (its original ones and
/// green's twins): otherwise something moved it since, and putting it back would undo that.
async fn check_routes_unmoved<C: LoadBalancing>(
    cloud: &C,
    p: &Prepared,
    twins: &[(String, String)],
    deploy_run: i64,
) -> Result<(), Error> {
    let t = traffic_of(p)?;
    for r in &t.routes {
        let known = |arn: &str| r.forward.names(arn) || twins.iter().any(|(_, g)| g == arn);
        let now = cloud.forward_now(r).await?;
        let Some(now) = now else {
            return Err(Error::Usage(format!("{} has no forward action any more: not rolling back", r.label())));
        };
        if let Some((arn, _)) = now.weights().into_iter().find(|(arn, w)| *w > 0 && !known(arn)) {
            return Err(Error::Usage(format!(
                "{} sends traffic to {arn}, which deploy run {deploy_run} did not put there (a newer deployment?): \
                 roll that back first",
                r.label()
            )));
        }
    }
    Ok(())
}

/// A rollback of `deploy_run` that was interrupted or failed: it is continued.
fn unfinished_rollback(journal: &Journal, deploy_run: i64) -> Result<Option<i64>, Error> {
    for (id, status, plan) in journal.runs_of("rollback")? {
        let of = serde_json::from_str::<serde_json::Value>(&plan).ok().and_then(|v| v["deploy_run"].as_i64());
        if of == Some(deploy_run) {
            let status = journal.run_plan(id)?.map(|(s, _)| s).unwrap_or(status);
            return Ok(matches!(status.as_str(), "interrupted" | "failed").then_some(id));
        }
    }
    Ok(None)
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
