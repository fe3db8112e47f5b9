//! Blue-green and canary: a green group beside the blue one, with a green twin of every blue
//! target group. Each twin is attached to every listener and rule that forwards to its blue
//! twin at weight 0 first (so the load balancer health checks green's targets), green must
//! serve, then the weights move together in steps, each followed by a health gate. Blue is not
//! touched before green serves; a gate that fails puts every route back exactly as it was
//! (journaled in the plan) and tears green down. Green copies blue's tags, lifecycle hooks,
//! scaling policies and scheduled actions.

use super::checks::DEPLOYMENT_TAG;
use super::health::{self, Gate};
use super::traffic::{split, switched};
use super::{current_group, firing, once, shift_steps, DeployRequest, Outcome, Prepared, TrafficPlan};
use crate::aws::{Alarms, Forward, Groups, LoadBalancing, Machines, Route};
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;

/// The plan's traffic part, which every blue-green run has.
pub(super) fn traffic_of(p: &Prepared) -> Result<&TrafficPlan, Error> {
    p.traffic.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "the plan of this deployment of {} has no record of its routes (an older amictl made it): roll it back \
             by hand or deploy again",
            p.group
        ))
    })
}

pub(super) async fn blue_green<C: Groups + LoadBalancing + Alarms + Machines>(
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
    let back = async |why: String| undo(cloud, run, t, &twins, progress).await.map(|_| Outcome::rolled_back(why));
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

/// Blue scaled in once green takes all the traffic (and the last-known-good is recorded).
pub(super) async fn scale_in_blue<C: Groups>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let down = async {
        cloud.scale(&p.group, 0, 0).await?;
        Ok(format!("{} scaled in", p.group))
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
    let check = async {
        let g = current_group(cloud, &t.green_group).await?;
        let gate = Gate {
            group: &t.green_group,
            image: &p.image_id,
            want: g.desired_capacity.max(0) as usize,
            target_groups,
            warmup: health::warmup(&g, req.warmup_seconds, !target_groups.is_empty()),
            grace: health::grace(&g),
            timeout: req.health_timeout,
            poll_interval: req.poll_interval,
        };
        let mut failing = match health::wait_serving(cloud, &gate, progress).await? {
            Ok(ids) => return firing(cloud, req).await.map(|f| verdict(ids.len(), f)),
            Err(why) => vec![why],
        };
        failing.extend(firing(cloud, req).await?);
        Ok(verdict(0, failing))
    };
    let detail = once(run, id, progress, check).await?;
    Ok(detail.strip_prefix("failed: ").map(str::to_string))
}

fn verdict(serving: usize, failing: Vec<String>) -> String {
    if failing.is_empty() {
        format!("passed: {serving} serving")
    } else {
        format!("failed: {}", failing.join("; "))
    }
}

/// Every route back exactly as it was before the deployment, then green torn down.
pub(super) async fn undo<C: Groups + LoadBalancing>(
    cloud: &C,
    run: &Run,
    t: &TrafficPlan,
    twins: &[(String, String)],
    progress: &dyn Progress,
) -> Result<(), Error> {
    let restore = async {
        set_routes(cloud, &t.routes, Forward::clone).await?;
        Ok(format!("{} route(s) as they were", t.routes.len()))
    };
    once(run, "restore-routes", progress, restore).await?;
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
