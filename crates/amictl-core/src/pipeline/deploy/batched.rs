//! Batched: the group is pinned to the new version, then replaced a batch at a time without
//! going below its desired capacity — it grows by a batch, the new instances serve (in service,
//! healthy in every target group that carries traffic), then as many old ones go, as AWS does
//! with a MaxHealthyPercentage above 100. Only a group that cannot grow is replaced in place,
//! above `--min-healthy`. A batch that does not serve stops the deployment and the previous
//! version comes back the same way.

use super::health::{self, Gate};
use super::{current_group, firing, once, CapacityPlan, DeployRequest, Outcome, Prepared};
use crate::aws::{Alarms, Cloud, GroupDetail, Groups, LoadBalancing, Machines};
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;

pub(super) async fn batched<C: Cloud + Groups + Machines + Alarms + LoadBalancing>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let g = current_group(cloud, &p.group).await?;
    let plan = p.capacity.unwrap_or(CapacityPlan {
        desired: g.desired_capacity,
        batch: 1,
        surge: !req.no_surge && g.max_size > g.desired_capacity,
    });
    let serving_groups = routed_target_groups(cloud, &g).await?;
    let ctx = Ctx { cloud, run, req, p, plan, target_groups: &serving_groups, progress };
    let why = match run.recorded("rollback-pin")? {
        Recorded::Done(detail) => detail.split_once(": ").map(|(_, w)| w.to_string()).unwrap_or(detail),
        _ => {
            let pin = async {
                cloud.pin_group(&p.group, &p.template_id, version).await?;
                Ok(format!("{} pinned to version {version}", p.group))
            };
            once(run, "pin-new", progress, pin).await?;
            let Some(why) = ctx.replace(&p.image_id, "batch").await? else { return Ok(Outcome::deployed()) };
            let back = async {
                cloud.pin_group(&p.group, &p.template_id, p.previous_version).await?;
                Ok(format!("{} back on version {}: {why}", p.group, p.previous_version))
            };
            once(run, "rollback-pin", progress, back).await?;
            why
        }
    };
    let previous = previous_image(cloud, p).await?;
    match ctx.replace(&previous, "rollback-batch").await? {
        None => Ok(Outcome::rolled_back(why)),
        Some(again) => Err(Error::Other(format!("{why}; and rolling back failed too: {again}"))),
    }
}

/// The image the previous version launches (a `resolve:ssm:` reference read now).
async fn previous_image<C: Cloud>(cloud: &C, p: &Prepared) -> Result<String, Error> {
    let named = p.previous_image.clone().unwrap_or_default();
    let Some(reference) = named.strip_prefix("resolve:ssm:") else { return Ok(named) };
    let read = cloud.parameter_values(&[reference.to_string()]).await;
    read.found.get(reference).map(|v| v.value.clone()).ok_or_else(|| {
        Error::Other(format!("cannot read {named}, the image of version {} to roll back to", p.previous_version))
    })
}

/// The group's target groups that carry traffic (a load balancer routes to them): the others'
/// targets are `unused` whatever they run.
async fn routed_target_groups<C: LoadBalancing>(cloud: &C, g: &GroupDetail) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for arn in &g.target_group_arns {
        if cloud.target_group(arn).await?.is_some_and(|t| !t.load_balancer_arns.is_empty()) {
            out.push(arn.clone());
        }
    }
    Ok(out)
}

struct Ctx<'a, C> {
    cloud: &'a C,
    run: &'a Run,
    req: &'a DeployRequest,
    p: &'a Prepared,
    plan: CapacityPlan,
    target_groups: &'a [String],
    progress: &'a dyn Progress,
}

/// The group now, split by what its members run.
struct Standing {
    group: GroupDetail,
    /// Members that run the image being rolled out, newest first.
    on: Vec<String>,
    /// Members that run another image (to replace), those not serving first.
    others: Vec<String>,
    /// Members not running yet (their image is not known).
    launching: usize,
    /// How far above the plan's desired capacity the group is (a surge in flight).
    surplus: usize,
}

impl<C: Cloud + Groups + Machines + Alarms + LoadBalancing> Ctx<'_, C> {
    async fn standing(&self, image: &str) -> Result<Standing, Error> {
        let g = current_group(self.cloud, &self.p.group).await?;
        let members = health::members(&g);
        let ids: Vec<String> = members.iter().map(|i| i.instance_id.clone()).collect();
        let running = health::machines(self.cloud, &ids).await?;
        let mut on: Vec<(&str, Option<chrono::DateTime<chrono::Utc>>)> = Vec::new();
        let mut others: Vec<(bool, String)> = Vec::new();
        let mut launching = 0;
        for i in &members {
            match running.get(&i.instance_id) {
                None => launching += 1,
                Some(m) if m.image_id == image => on.push((&i.instance_id, m.launch_time)),
                Some(_) => others.push((i.serving(), i.instance_id.clone())),
            }
        }
        on.sort_by(|a, b| b.1.cmp(&a.1));
        others.sort();
        let surplus = (g.desired_capacity - self.plan.desired).max(0) as usize;
        let on = on.into_iter().map(|(i, _)| i.to_string()).collect();
        Ok(Standing { on, others: others.into_iter().map(|(_, i)| i).collect(), launching, surplus, group: g })
    }

    /// Replaces the group's instances that run another image than `image`; `Some(why)` when a
    /// batch did not serve (its new instances are gone again, the group at its desired size).
    async fn replace(&self, image: &str, label: &str) -> Result<Option<String>, Error> {
        let mut n = self.batches_recorded(label)?;
        // A resumed run may find a batch in flight: it is waited for before anything else.
        let mut settle = true;
        loop {
            let s = self.standing(image).await?;
            if settle && (s.surplus > 0 || s.launching > 0 || !s.on.is_empty()) {
                if let Some(why) = self.settle(&s, image, label, n).await? {
                    return Ok(Some(why));
                }
                settle = false;
                continue;
            }
            if s.others.is_empty() && s.surplus == 0 {
                return Ok(None);
            }
            n += 1;
            if n > 2 * self.plan.desired.max(1) as usize + 2 {
                return Ok(Some(format!("replacements in {} keep launching another image than {image}", self.p.group)));
            }
            self.next(&s, label, n).await?;
            settle = true;
        }
    }

    /// Waits for the batch in flight to serve, then retires as many old instances as it added.
    async fn settle(&self, s: &Standing, image: &str, label: &str, n: usize) -> Result<Option<String>, Error> {
        let g = &s.group;
        let want = (g.desired_capacity.max(0) as usize).saturating_sub(s.others.len());
        let has_targets = !self.target_groups.is_empty();
        let gate = Gate {
            group: &self.p.group,
            image,
            want,
            target_groups: self.target_groups,
            warmup: health::warmup(g, self.req.warmup_seconds, has_targets),
            grace: health::grace(g),
            timeout: self.req.health_timeout,
            poll_interval: self.req.poll_interval,
        };
        let wait = async { health::wait_serving(self.cloud, &gate, self.progress).await };
        let served = self
            .run
            .step(&format!("wait-{label}-{n}"), self.progress, wait, |r| match r {
                Ok(ids) => format!("{} of {want} serving", ids.len()),
                Err(why) => format!("failed: {why}"),
            })
            .await?;
        if let Err(why) = served {
            self.discard(image, label, n).await?;
            return Ok(Some(format!("batch {n} of {} did not serve: {why}", self.p.group)));
        }
        if s.surplus > 0 && !s.others.is_empty() {
            let old: Vec<String> = s.others.iter().take(s.surplus).cloned().collect();
            let retire = async {
                for id in &old {
                    self.cloud.terminate_in_group(id, true).await?;
                }
                Ok(format!("terminated {} (desired capacity back down)", old.join(", ")))
            };
            once(self.run, &format!("retire-{label}-{n}"), self.progress, retire).await?;
        } else if s.surplus > 0 {
            // Nothing old is left to make room for: the group goes back to its size.
            let down = async {
                self.cloud.set_desired(&self.p.group, self.plan.desired).await?;
                Ok(format!("desired capacity back to {}", self.plan.desired))
            };
            once(self.run, &format!("resize-{label}-{n}"), self.progress, down).await?;
        }
        let alarms = firing(self.cloud, self.req).await?;
        if !alarms.is_empty() {
            return Ok(Some(format!("batch {n} failed its alarm gate: {} firing", alarms.join(", "))));
        }
        Ok(None)
    }

    /// A batch that did not serve: its new instances (the newest on `image`, as many as the
    /// group is above its size) go, the group back to its desired size.
    async fn discard(&self, image: &str, label: &str, n: usize) -> Result<(), Error> {
        let now = self.standing(image).await?;
        let sick: Vec<String> = now.on.iter().take(now.surplus).cloned().collect();
        if sick.is_empty() {
            return Ok(());
        }
        let discard = async {
            for id in &sick {
                self.cloud.terminate_in_group(id, true).await?;
            }
            Ok(format!("terminated {} (desired capacity back down)", sick.join(", ")))
        };
        once(self.run, &format!("discard-{label}-{n}"), self.progress, discard).await.map(drop)
    }

    /// Starts batch `n`: grows the group by a batch, or (when it cannot grow) replaces old
    /// instances in place above the floor.
    async fn next(&self, s: &Standing, label: &str, n: usize) -> Result<(), Error> {
        let g = &s.group;
        let room = (g.max_size - g.desired_capacity).max(0) as usize;
        let b = if self.plan.surge { self.plan.batch.min(s.others.len()).min(room) } else { 0 };
        if b > 0 {
            let to = g.desired_capacity + b as i32;
            let grow = async {
                self.cloud.set_desired(&self.p.group, to).await?;
                Ok(format!("desired capacity {} -> {to}", g.desired_capacity))
            };
            return self
                .run
                .step(&format!("launch-{label}-{n}"), self.progress, grow, |d: &String| d.clone())
                .await
                .map(drop);
        }
        let batch = next_batch(g, &s.others, self.req).map_err(Error::Usage)?;
        let replace = async {
            for id in &batch {
                self.cloud.terminate_in_group(id, false).await?;
            }
            Ok(format!("replaced {}", batch.join(", ")))
        };
        self.run.step(&format!("replace-{label}-{n}"), self.progress, replace, |d: &String| d.clone()).await.map(drop)
    }

    /// How many batches of `label` earlier attempts of this run started (a resumed run numbers
    /// on from there).
    fn batches_recorded(&self, label: &str) -> Result<usize, Error> {
        let steps = self.run.journal().lock().unwrap().steps(self.run.id())?;
        let started = |prefix: String| {
            steps.keys().filter(|k| k.strip_prefix(&prefix).is_some_and(|n| n.parse::<usize>().is_ok())).count()
        };
        Ok(started(format!("launch-{label}-")) + started(format!("replace-{label}-")))
    }
}

/// The next instances to replace in place (pure): `old` are the members on another image, those
/// not serving first. Unhealthy ones go first (replacing them costs nothing); else as many as
/// the batch size and the floor (`--min-healthy` of the desired capacity) allow.
fn next_batch(g: &GroupDetail, old: &[String], req: &DeployRequest) -> Result<Vec<String>, String> {
    let unhealthy = |id: &String| g.instances.iter().any(|i| &i.instance_id == id && !i.serving());
    let sick: Vec<String> = old.iter().filter(|id| unhealthy(id)).cloned().collect();
    if !sick.is_empty() {
        return Ok(sick);
    }
    let desired = g.desired_capacity.max(0) as usize;
    let serving = g.instances.iter().filter(|i| i.serving()).count();
    let floor = (desired * req.min_healthy as usize).div_ceil(100);
    let spare = serving.saturating_sub(floor);
    if spare == 0 {
        return Err(format!(
            "group {} has {serving} of {desired} in service: replacing one more would go below --min-healthy {}%",
            g.name, req.min_healthy
        ));
    }
    let size = req.batch_size.of(desired).max(1).min(spare);
    Ok(old.iter().take(size).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::GroupInstance;
    use crate::patching::Threshold;
    use crate::pipeline::deploy::tests::request;

    fn group(serving: usize, sick: usize) -> GroupDetail {
        let instance = |i: usize, health: &str| GroupInstance {
            instance_id: format!("i-{i}"),
            lifecycle_state: "InService".into(),
            health_status: health.into(),
        };
        GroupDetail {
            name: "web".into(),
            template_id: Some("lt-1".into()),
            min_size: 10,
            max_size: 10,
            desired_capacity: 10,
            instances: (0..serving)
                .map(|i| instance(i, "Healthy"))
                .chain((serving..serving + sick).map(|i| instance(i, "Unhealthy")))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_in_place_batch_never_takes_the_group_below_its_floor() {
        let old: Vec<String> = (0..10).map(|i| format!("i-{i}")).collect();
        assert_eq!(next_batch(&group(10, 0), &old, &request(80, Threshold::Percent(50))).unwrap().len(), 2);
        assert_eq!(next_batch(&group(10, 0), &old, &request(0, Threshold::Count(5))).unwrap().len(), 5);
        // One already out of service: it goes first, alone, whatever the floor.
        assert_eq!(next_batch(&group(9, 1), &old, &request(90, Threshold::Count(1))).unwrap(), vec!["i-9".to_string()]);
        // Nine of ten serving at a floor of 90 %: nothing healthy can go.
        let e = next_batch(&group(9, 0), &old[..9], &request(90, Threshold::Count(1))).unwrap_err();
        assert!(e.contains("9 of 10 in service"), "{e}");
    }
}
