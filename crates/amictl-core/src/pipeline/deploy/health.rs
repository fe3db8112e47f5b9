//! Health as AWS reports it. An instance serves when it is `InService`, healthy to Auto
//! Scaling, `healthy` in every target group that carries traffic to it, and warmed up; target
//! states `initial`, `unused`, `draining`, `unavailable` and `unhealthy` never pass. Every gate
//! has a deadline and names the instances and states it waited for.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;

use super::{current_group, fast_poll};
use crate::aws::{GroupDetail, GroupInstance, Groups, LoadBalancing, Machine, Machines};
use crate::engine::{poll, Look, Progress};
use crate::error::Error;

/// What a gate waits for: `want` instances of `group` that run `image` and serve.
pub(super) struct Gate<'a> {
    pub group: &'a str,
    pub image: &'a str,
    pub want: usize,
    /// The target groups whose health counts (those a listener or rule uses).
    pub target_groups: &'a [String],
    /// How long a new instance warms up before it counts as serving.
    pub warmup: Duration,
    /// Before this age a failing health check is not yet a failure (the group's grace period).
    pub grace: Duration,
    pub timeout: Duration,
    pub poll_interval: Duration,
}

/// How long instances of `g` warm up before their health counts: `--warmup`, else the group's
/// default instance warm-up, else — when nothing but Auto Scaling's own health speaks for an
/// instance — its health check grace period, during which Auto Scaling calls it healthy
/// whatever it is.
pub(super) fn warmup(g: &GroupDetail, requested: Option<i32>, has_targets: bool) -> Duration {
    let grace = if has_targets { None } else { g.health_check_grace_period };
    let secs = requested.or(g.default_instance_warmup).or(grace).unwrap_or(0).max(0);
    Duration::from_secs(secs as u64)
}

/// The group's health check grace period.
pub(super) fn grace(g: &GroupDetail) -> Duration {
    Duration::from_secs(g.health_check_grace_period.unwrap_or(0).max(0) as u64)
}

/// The group's instances on their way out are not members any more.
pub(super) fn members(g: &GroupDetail) -> Vec<&GroupInstance> {
    g.instances
        .iter()
        .filter(|i| !i.lifecycle_state.starts_with("Terminat") && !i.lifecycle_state.starts_with("Detach"))
        .collect()
}

/// The running instances among `ids`, by id (DescribeInstances, 200 ids a request).
pub(super) async fn machines<C: Machines>(cloud: &C, ids: &[String]) -> Result<HashMap<String, Machine>, Error> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(200) {
        for m in cloud.running_instances(&[("instance-id".into(), chunk.to_vec())]).await? {
            out.insert(m.instance_id.clone(), m);
        }
    }
    Ok(out)
}

/// `targetgroup/NAME/…` → `NAME`, for messages.
pub(super) fn short_name(arn: &str) -> &str {
    arn.split_once(":targetgroup/").map(|(_, r)| r.split('/').next().unwrap_or(r)).unwrap_or(arn)
}

/// One look at the gate's instances.
struct Look_ {
    serving: Vec<String>,
    /// Instance → why it does not serve yet.
    waiting: BTreeMap<String, String>,
    /// Instance → why it failed (unhealthy after its grace period).
    failed: BTreeMap<String, String>,
}

async fn look<C: Groups + Machines + LoadBalancing>(cloud: &C, gate: &Gate<'_>) -> Result<Look_, Error> {
    let g = current_group(cloud, gate.group).await?;
    let members = members(&g);
    let ids: Vec<String> = members.iter().map(|i| i.instance_id.clone()).collect();
    let running = machines(cloud, &ids).await?;
    let mut health: Vec<(&str, HashMap<String, (String, Option<String>)>)> = Vec::new();
    for tg in gate.target_groups {
        let states = cloud.target_health(tg).await?.into_iter().map(|t| (t.id, (t.state, t.reason))).collect();
        health.push((short_name(tg), states));
    }
    let mut out = Look_ { serving: vec![], waiting: BTreeMap::new(), failed: BTreeMap::new() };
    let now = Utc::now();
    for i in members {
        let Some(m) = running.get(&i.instance_id) else {
            out.waiting.insert(i.instance_id.clone(), format!("{} (not running yet)", i.lifecycle_state));
            continue;
        };
        if m.image_id != gate.image {
            continue;
        }
        let age = m.launch_time.map(|t| (now - t).to_std().unwrap_or_default()).unwrap_or(Duration::MAX);
        let past_grace = age >= gate.grace.max(gate.warmup);
        let mut why = Vec::new();
        let mut failed = Vec::new();
        if !i.in_service() {
            why.push(i.lifecycle_state.clone());
        }
        if !i.health_status.eq_ignore_ascii_case("healthy") {
            failed.push(format!("{} to Auto Scaling", i.health_status));
        }
        for (name, states) in &health {
            let (state, reason) =
                states.get(&i.instance_id).cloned().unwrap_or_else(|| ("not registered".into(), None));
            if state == "healthy" {
                continue;
            }
            let text = format!("{state} in {name}{}", reason.map(|r| format!(" ({r})")).unwrap_or_default());
            if state == "unhealthy" && past_grace {
                failed.push(text);
            } else {
                why.push(text);
            }
        }
        if !failed.is_empty() {
            out.failed.insert(i.instance_id.clone(), failed.join(", "));
        } else if !why.is_empty() {
            out.waiting.insert(i.instance_id.clone(), why.join(", "));
        } else if age < gate.warmup {
            out.waiting.insert(i.instance_id.clone(), "warming up".into());
        } else {
            out.serving.push(i.instance_id.clone());
        }
    }
    Ok(out)
}

fn listed(m: &BTreeMap<String, String>) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = m.iter().take(SHOWN).map(|(i, why)| format!("{i} {why}")).collect();
    if m.len() > SHOWN {
        parts.push(format!("and {} more", m.len() - SHOWN));
    }
    parts.join("; ")
}

/// Waits until the gate's instances serve: `Ok(Ok(serving ids))`, or `Ok(Err(why))` naming
/// the instances and their states — at once when one failed its checks after its grace
/// period, or when the deadline passed.
pub(super) async fn wait_serving<C: Groups + Machines + LoadBalancing>(
    cloud: &C,
    gate: &Gate<'_>,
    progress: &dyn Progress,
) -> Result<Result<Vec<String>, String>, Error> {
    let each = async || {
        let l = look(cloud, gate).await?;
        if !l.failed.is_empty() {
            return Ok(Look::Done(Err(format!("failed health checks: {}", listed(&l.failed)))));
        }
        if l.serving.len() >= gate.want {
            return Ok(Look::Done(Ok(l.serving)));
        }
        let note = format!("{}: {} of {} serving", gate.group, l.serving.len(), gate.want);
        let standing = format!(
            "{note}; waiting for {}",
            if l.waiting.is_empty() { "instances to launch".into() } else { listed(&l.waiting) }
        );
        Ok(Look::NotYet(standing, note))
    };
    Ok(poll(gate.timeout, fast_poll(gate.poll_interval), progress, each).await?.unwrap_or_else(|standing| {
        Err(format!("not serving after {}: {standing}", crate::time::format_duration(gate.timeout)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_group_names_come_from_their_arns() {
        assert_eq!(short_name("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/abc"), "web");
        assert_eq!(short_name("tg"), "tg");
    }

    #[test]
    fn warm_up_falls_back_to_the_grace_period_only_without_target_groups() {
        let g = GroupDetail { health_check_grace_period: Some(300), ..Default::default() };
        assert_eq!(warmup(&g, None, false), Duration::from_secs(300));
        assert_eq!(warmup(&g, None, true), Duration::ZERO);
        assert_eq!(warmup(&g, Some(30), false), Duration::from_secs(30));
        let g = GroupDetail { default_instance_warmup: Some(60), ..g };
        assert_eq!(warmup(&g, None, true), Duration::from_secs(60));
    }
}
