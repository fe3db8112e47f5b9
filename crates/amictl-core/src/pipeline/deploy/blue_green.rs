//! Blue-green and canary: a green group beside the blue one, with a green twin of every blue
//! target group. Each twin is attached to every listener and rule that forwards to its blue
//! twin at weight 0 first (so the load balancer health checks green's targets), green must
//! serve, then the weights move together in steps, each followed by a health gate. Blue is not
//! touched before green serves; a gate that fails puts every route back exactly as it was
//! (journaled in the plan) and tears green down. Green copies blue's tags, lifecycle hooks,
//! scaling policies and scheduled actions.

use super::checks::DEPLOYMENT_TAG;
use super::health::{self, Wanted};
use super::traffic::{split, switched};
use super::{current_group, once, shift_steps, DeployRequest, Outcome, Prepared, TrafficPlan};
use crate::aws::{Alarms, Cloud, Forward, Groups, LoadBalancing, Machines, Route};
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;

/// The plan's traffic part, which every blue-green run has.
pub(super) fn traffic_of(p: &Prepared) -> Result<&TrafficPlan, Error> {
    p.traffic.as_ref().ok_or_else(|| {
        Error::Other(format!(
            "the plan of this deployment of {} has no record of its routes (an older amictl made it): roll it back \
             by hand or deploy again",
            p.group
        ))
    })
}

pub(super) async fn blue_green<C: Cloud + Groups + LoadBalancing + Alarms + Machines>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let t = traffic_of(p)?;
    let twins = green_target_groups(cloud, run, p, t, progress).await?;
    let attach = async {
        set_routes(cloud, &t.routes, |f| split(f, &twins, 0)).await?;
        Ok(format!("green's target groups at weight 0 on {} route(s)", t.routes.len()))
    };
    once(run, "attach-green", progress, attach).await?;
    let green_arns: Vec<String> = twins.iter().map(|(_, g)| g.clone()).collect();
    let create = async {
        if cloud.group(&t.green_group).await?.is_none() {
            let blue = current_group(cloud, &p.group).await?;
            let tag = [(DEPLOYMENT_TAG.to_string(), p.token.clone())];
            cloud.create_group_like(&blue, &t.green_group, &p.template_id, version, &green_arns, &tag).await?;
        }
        Ok(format!("{} launches version {version}", t.green_group))
    };
    once(run, "create-green", progress, create).await?;
    let routed = routed_twins(t, &twins);
    let back = async |why: String| undo(cloud, run, req, p, &twins, progress).await.map(|_| Outcome::rolled_back(why));
    if let Some(why) = gate(cloud, run, req, p, t, &routed, "wait-green", progress).await? {
        return back(format!("green never served: {why}")).await;
    }
    for step in shift_steps(req) {
        let shift = async {
            set_routes(cloud, &t.routes, |f| if step >= 100 { switched(f, &twins) } else { split(f, &twins, step) })
                .await?;
            Ok(format!("{step}% of traffic to {}", t.green_group))
        };
        once(run, &format!("shift-{step}"), progress, shift).await?;
        if !req.shift_pause.is_zero() && run.recorded(&format!("gate-{step}"))? == Recorded::Never {
            progress.note(&format!(
                "{step}% on {}; watching {}",
                t.green_group,
                crate::time::format_duration(req.shift_pause)
            ));
            tokio::time::sleep(req.shift_pause).await;
        }
        if let Some(why) = gate(cloud, run, req, p, t, &routed, &format!("gate-{step}"), progress).await? {
            return back(format!("green failed its health gate at {step}%: {why}")).await;
        }
    }
    let copy = async {
        let copied = cloud.copy_scaling(&p.group, &t.green_group, &twins).await?;
        Ok(if copied.is_empty() {
            "no scaling policies or scheduled actions to copy".into()
        } else {
            copied.join("; ")
        })
    };
    let copied = once(run, "copy-scaling", progress, copy).await?;
    if !req.keep_blue.is_zero() {
        progress.note(&format!("keeping {} at full size for {}", p.group, crate::time::format_duration(req.keep_blue)));
        tokio::time::sleep(req.keep_blue).await;
    }
    let notes = copied.split("; ").filter(|c| c.contains("still act on")).map(str::to_string).collect();
    Ok(Outcome { notes, ..Outcome::deployed() })
}

/// Scaling processes suspended on blue while it is scaled in, so that its alarms and schedules
/// do not launch the old version again behind no traffic; rollback resumes them.
const PARKED: [&str; 2] = ["AlarmNotification", "ScheduledActions"];

/// The processes amictl suspends on blue: [`PARKED`] but those the user had suspended already.
fn parked(t: &TrafficPlan) -> Vec<String> {
    PARKED.iter().filter(|p| !t.blue_suspended.iter().any(|s| s == *p)).map(|p| p.to_string()).collect()
}

/// Blue scaled in once green takes all the traffic (and the last-known-good is recorded), its
/// alarm and schedule processes parked.
pub(super) async fn scale_in_blue<C: Groups>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let t = traffic_of(p)?;
    let parked = parked(t);
    let down = async {
        cloud.set_processes(&p.group, &parked, true).await?;
        cloud.scale(&p.group, 0, 0).await?;
        Ok(format!("{} scaled in ({} suspended)", p.group, parked.join(", ")))
    };
    once(run, "scale-in-blue", progress, down).await.map(drop)
}

/// Green's target groups, made once each like its blue twin (or the one `--green-target-group`
/// named): `(blue ARN, green ARN)` pairs.
async fn green_target_groups<C: LoadBalancing>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    t: &TrafficPlan,
    progress: &dyn Progress,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (i, twin) in t.twins.iter().enumerate() {
        let make = async {
            if let Some(arn) = &twin.given {
                return Ok(arn.clone());
            }
            let tag = [(DEPLOYMENT_TAG.to_string(), p.token.clone())];
            Ok(cloud.create_target_group_like(&twin.blue, &twin.green_name, &tag).await?)
        };
        let arn = once(run, &format!("green-target-group-{}", i + 1), progress, make).await?;
        out.push((twin.blue.arn.clone(), arn));
    }
    Ok(out)
}

/// The green ARNs whose blue twin a route uses (the others are `unused` whatever they run).
fn routed_twins(t: &TrafficPlan, twins: &[(String, String)]) -> Vec<String> {
    twins.iter().filter(|(blue, _)| t.routes.iter().any(|r| r.forward.names(blue))).map(|(_, g)| g.clone()).collect()
}

/// Sets every route's forward to `form(original)`.
pub(super) async fn set_routes<C: LoadBalancing>(
    cloud: &C,
    routes: &[Route],
    form: impl Fn(&Forward) -> Forward,
) -> Result<(), Error> {
    for r in routes {
        cloud.set_forward(r, &form(&r.forward)).await?;
    }
    Ok(())
}

/// A health gate on green, journaled as step `id` (`passed ...` or `failed: why`); a resumed run
/// takes a recorded verdict as it is. `Some(why)` when green does not serve or an alarm fires.
#[allow(clippy::too_many_arguments)]
async fn gate<C: Groups + LoadBalancing + Alarms + Machines>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    t: &TrafficPlan,
    target_groups: &[String],
    id: &str,
    progress: &dyn Progress,
) -> Result<Option<String>, Error> {
    let wanted =
        Wanted { group: &t.green_group, image: &p.image_id, want: None, exclude: &[], target_groups, alarms: true };
    let check = health::verdict(cloud, req, &wanted, progress);
    let detail = once(run, id, progress, check).await?;
    Ok(detail.strip_prefix("failed: ").map(str::to_string))
}

/// A deployment that did not finish undone: blue serving again behind every route exactly as
/// it was before the deployment, then green torn down.
pub(super) async fn undo<C: Groups + LoadBalancing + Machines + Cloud + Alarms>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    twins: &[(String, String)],
    progress: &dyn Progress,
) -> Result<(), Error> {
    back_to_blue(cloud, run, req, p, twins, progress).await?;
    let t = traffic_of(p)?;
    let down = async {
        if cloud.group(&t.green_group).await?.is_some() {
            cloud.delete_group(&t.green_group).await?;
        }
        for ((_, green), twin) in twins.iter().zip(&t.twins) {
            if twin.given.is_none() {
                cloud.delete_target_group(green).await?;
            }
        }
        Ok(format!("{} deleted", t.green_group))
    };
    once(run, "tear-down-green", progress, down).await.map(drop)
}

/// Blue takes the traffic back: its target groups beside green's at weight 0 where a route
/// sends blue nothing now (so they are health checked), its processes resumed, its size back
/// (at least what it had, at most green's), every instance serving — only then every route
/// exactly as it was before the deployment. Blue that does not serve leaves the traffic where
/// it is.
pub(super) async fn back_to_blue<C: Groups + LoadBalancing + Machines + Cloud + Alarms>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    twins: &[(String, String)],
    progress: &dyn Progress,
) -> Result<(), Error> {
    let t = traffic_of(p)?;
    let attach = async {
        let mut attached = 0;
        for r in &t.routes {
            let now = cloud.forward_now(r).await?;
            let blue_missing =
                twins.iter().any(|(blue, _)| r.forward.names(blue) && !now.as_ref().is_some_and(|f| f.names(blue)));
            if blue_missing {
                cloud.set_forward(r, &split(&r.forward, twins, 100)).await?;
                attached += 1;
            }
        }
        Ok(format!("blue's target groups at weight 0 on {attached} route(s)"))
    };
    once(run, "attach-blue", progress, attach).await?;
    let green = cloud.group(&t.green_group).await?;
    let size = green.as_ref().map(|g| g.desired_capacity).unwrap_or(0).max(t.blue_desired);
    let up = async {
        cloud.set_processes(&p.group, &parked(t), false).await?;
        let blue = current_group(cloud, &p.group).await?;
        if blue.desired_capacity < size {
            cloud.scale(&p.group, t.blue_min.min(size), size).await?;
        }
        Ok(format!("{} at {size} or more", p.group))
    };
    once(run, "scale-out-blue", progress, up).await?;
    let image = super::template::image_of(cloud, p.previous_image.as_deref(), p.previous_version).await?;
    let routed: Vec<String> = twins
        .iter()
        .filter(|(blue, _)| t.routes.iter().any(|r| r.forward.names(blue)))
        .map(|(b, _)| b.clone())
        .collect();
    let want = Some(size.max(0) as usize);
    let wanted = Wanted { group: &p.group, image: &image, want, exclude: &[], target_groups: &routed, alarms: false };
    let check = health::verdict(cloud, req, &wanted, progress);
    let verdict = once(run, "wait-blue", progress, check).await?;
    if let Some(why) = verdict.strip_prefix("failed: ") {
        return Err(Error::Other(format!(
            "{} did not serve again: {why}; the traffic stays where it is (on {})",
            p.group, t.green_group
        )));
    }
    let restore = async {
        set_routes(cloud, &t.routes, Forward::clone).await?;
        Ok(format!("{} route(s) as they were", t.routes.len()))
    };
    once(run, "restore-routes", progress, restore).await.map(drop)
}
