//! Batched: the group is pinned to the new version, then replaced a batch at a time without
//! going below its desired capacity — it grows by a batch, the new instances serve (in service,
//! healthy in every target group that carries traffic), then as many old ones go, as AWS does
//! with a MaxHealthyPercentage above 100. Only a group that cannot grow is replaced in place,
//! above `--min-healthy`. A batch that does not serve stops the deployment: its new instances go,
//! and the previous version comes back the same way.
//!
//! Each batch is journaled before its change (`batch-L-N`: the desired capacity and the members
//! it started from), so a resumed run knows which instances the batch launched and how far the
//! group is above its size — whatever scaling did meanwhile.

use std::collections::BTreeSet;

use super::health::{self, Wanted};
use super::{current_group, firing, once, template, CapacityPlan, DeployRequest, Outcome, Prepared};
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
    let previous = template::image_of(cloud, p.previous_image.as_deref(), p.previous_version).await?;
    match ctx.replace(&previous, "rollback-batch").await? {
        None => Ok(Outcome::rolled_back(why)),
        Some(again) => Err(Error::Other(format!("{why}; and rolling back failed too: {again}"))),
    }
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

/// One batch, as journaled before its change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    /// The group's desired capacity before the batch.
    before: i32,
    /// The group's members before the batch: the batch's new instances are the others.
    members: BTreeSet<String>,
    /// Grow by this many (a surge), or replace these in place.
    change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Surge(usize),
    InPlace(Vec<String>),
}

impl Batch {
    fn new_instances(&self) -> usize {
        match &self.change {
            Change::Surge(n) => *n,
            Change::InPlace(ids) => ids.len(),
        }
    }

    /// `surge 6 +2; members i-a i-b …` or `in place 6 i-x i-y; members i-a i-b …`.
    fn detail(&self) -> String {
        let members = self.members.iter().cloned().collect::<Vec<_>>().join(" ");
        match &self.change {
            Change::Surge(n) => format!("surge {} +{n}; members {members}", self.before),
            Change::InPlace(ids) => format!("in place {} {}; members {members}", self.before, ids.join(" ")),
        }
    }

    fn parse(detail: &str) -> Option<Batch> {
        let (head, members) = detail.split_once("; members")?;
        let members = members.split_whitespace().map(str::to_string).collect();
        let words: Vec<&str> = head.split_whitespace().collect();
        let (before, change) = match words.as_slice() {
            ["surge", before, n] => (before, Change::Surge(n.strip_prefix('+')?.parse().ok()?)),
            ["in", "place", before, ids @ ..] => (before, Change::InPlace(ids.iter().map(|s| s.to_string()).collect())),
            _ => return None,
        };
        Some(Batch { before: before.parse().ok()?, members, change })
    }
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
    members: BTreeSet<String>,
    /// Members that run another image than the one rolled out (to replace), those not serving
    /// first.
    others: Vec<String>,
}

impl<C: Cloud + Groups + Machines + Alarms + LoadBalancing> Ctx<'_, C> {
    async fn standing(&self, image: &str) -> Result<Standing, Error> {
        let g = current_group(self.cloud, &self.p.group).await?;
        let members = health::members(&g);
        let ids: Vec<String> = members.iter().map(|i| i.instance_id.clone()).collect();
        let running = health::machines(self.cloud, &ids).await?;
        let mut others: Vec<(bool, String)> = members
            .iter()
            .filter(|i| running.get(&i.instance_id).is_some_and(|m| m.image_id != image))
            .map(|i| (i.serving(), i.instance_id.clone()))
            .collect();
        others.sort();
        Ok(Standing {
            members: ids.into_iter().collect(),
            others: others.into_iter().map(|(_, i)| i).collect(),
            group: g,
        })
    }

    /// Replaces the group's instances that run another image than `image`; `Some(why)` when a
    /// batch did not serve (its new instances are gone again, the group at its size).
    async fn replace(&self, image: &str, label: &str) -> Result<Option<String>, Error> {
        let mut n = self.batches_started(label)?;
        // A batch an earlier attempt started and did not finish is finished first.
        if n > 0 {
            if let Some(b) = self.unfinished(label, n)? {
                if let Some(why) = self.finish(&b, image, label, n).await? {
                    return Ok(Some(why));
                }
            }
        }
        loop {
            let s = self.standing(image).await?;
            if s.others.is_empty() {
                return Ok(None);
            }
            n += 1;
            if n > 2 * self.plan.desired.max(1) as usize + 2 {
                return Ok(Some(format!("replacements in {} keep launching another image than {image}", self.p.group)));
            }
            let batch = match self.next(&s) {
                Ok(b) => b,
                Err(why) => return Ok(Some(why)),
            };
            let detail = batch.detail();
            once(self.run, &format!("batch-{label}-{n}"), self.progress, async { Ok(detail) }).await?;
            if let Some(why) = self.finish(&batch, image, label, n).await? {
                return Ok(Some(why));
            }
        }
    }

    /// The next batch (pure but for the group it reads): a surge when the group can grow, else
    /// a replacement in place above the floor; `Err(why)` when neither is possible.
    fn next(&self, s: &Standing) -> Result<Batch, String> {
        let g = &s.group;
        let room = (g.max_size - g.desired_capacity).max(0) as usize;
        let surge = if self.plan.surge { self.plan.batch.min(s.others.len()).min(room) } else { 0 };
        let change =
            if surge > 0 { Change::Surge(surge) } else { Change::InPlace(next_batch(g, &s.others, self.req)?) };
        Ok(Batch { before: g.desired_capacity, members: s.members.clone(), change })
    }

    /// Batch `n`'s change, its health gate, then the old instances it made room for.
    async fn finish(&self, b: &Batch, image: &str, label: &str, n: usize) -> Result<Option<String>, Error> {
        let change = async {
            match &b.change {
                Change::Surge(k) => {
                    let to = b.before + *k as i32;
                    self.cloud.set_desired(&self.p.group, to).await?;
                    Ok(format!("desired capacity {} -> {to}", b.before))
                }
                Change::InPlace(ids) => {
                    let g = current_group(self.cloud, &self.p.group).await?;
                    for id in ids.iter().filter(|id| g.instances.iter().any(|i| &i.instance_id == *id)) {
                        self.cloud.terminate_in_group(id, false).await?;
                    }
                    Ok(format!("replaced {}", ids.join(", ")))
                }
            }
        };
        let verb = if matches!(b.change, Change::Surge(_)) { "launch" } else { "replace" };
        once(self.run, &format!("{verb}-{label}-{n}"), self.progress, change).await?;
        if let Some(why) = self.gate(b, image, label, n).await? {
            if matches!(b.change, Change::Surge(_)) {
                self.discard(b, label, n).await?;
            }
            return Ok(Some(format!("batch {n} of {} did not serve: {why}", self.p.group)));
        }
        if matches!(b.change, Change::Surge(_)) {
            self.retire(b, image, label, n).await?;
        }
        let alarms = firing(self.cloud, self.req).await?;
        if !alarms.is_empty() {
            return Ok(Some(format!("batch {n} failed its alarm gate: {} firing", alarms.join(", "))));
        }
        Ok(None)
    }

    /// The batch's new instances must serve; journaled once (`passed …` or `failed: why`).
    async fn gate(&self, b: &Batch, image: &str, label: &str, n: usize) -> Result<Option<String>, Error> {
        let members: Vec<String> = b.members.iter().cloned().collect();
        let wanted = Wanted {
            group: &self.p.group,
            image,
            want: Some(b.new_instances()),
            exclude: &members,
            target_groups: self.target_groups,
            // The alarms are the batch's gate once its old instances are gone (below).
            alarms: false,
        };
        let check = health::verdict(self.cloud, self.req, &wanted, self.progress);
        let verdict = once(self.run, &format!("wait-{label}-{n}"), self.progress, check).await?;
        Ok(verdict.strip_prefix("failed: ").map(str::to_string))
    }

    /// After a surge served: as many old instances as the group is above its size go, chosen
    /// from the group as it is now (those not serving first), the desired capacity decremented.
    async fn retire(&self, b: &Batch, image: &str, label: &str, n: usize) -> Result<(), Error> {
        let retire = async {
            let s = self.standing(image).await?;
            let above = (s.group.desired_capacity - b.before).max(0) as usize;
            let old: Vec<String> = s.others.iter().take(above).cloned().collect();
            for id in &old {
                self.cloud.terminate_in_group(id, true).await?;
            }
            Ok(format!("terminated {} (desired capacity back down)", old.join(", ")))
        };
        once(self.run, &format!("retire-{label}-{n}"), self.progress, retire).await.map(drop)
    }

    /// A surge that did not serve: the instances it launched go (never one that was there
    /// before), and the group returns to the size it had.
    async fn discard(&self, b: &Batch, label: &str, n: usize) -> Result<(), Error> {
        let discard = async {
            let g = current_group(self.cloud, &self.p.group).await?;
            let new: Vec<String> = health::members(&g)
                .iter()
                .map(|i| i.instance_id.clone())
                .filter(|id| !b.members.contains(id))
                .take((g.desired_capacity - b.before).max(0) as usize)
                .collect();
            for id in &new {
                self.cloud.terminate_in_group(id, true).await?;
            }
            // A surge that launched fewer than it asked for: the rest of the capacity goes too.
            let now = current_group(self.cloud, &self.p.group).await?.desired_capacity;
            if now > b.before {
                self.cloud.set_desired(&self.p.group, b.before).await?;
            }
            Ok(format!("terminated {}; desired capacity back to {}", new.join(", "), b.before))
        };
        once(self.run, &format!("discard-{label}-{n}"), self.progress, discard).await.map(drop)
    }

    /// How many batches of `label` this run journaled (a resumed run numbers on from there).
    fn batches_started(&self, label: &str) -> Result<usize, Error> {
        let steps = self.journal_steps()?;
        let prefix = format!("batch-{label}-");
        Ok(steps.iter().filter_map(|k| k.strip_prefix(&prefix)?.parse::<usize>().ok()).max().unwrap_or(0))
    }

    /// Batch `n` of `label` as journaled, when an earlier attempt did not finish it.
    fn unfinished(&self, label: &str, n: usize) -> Result<Option<Batch>, Error> {
        let Recorded::Done(detail) = self.run.recorded(&format!("batch-{label}-{n}"))? else { return Ok(None) };
        let batch = Batch::parse(&detail)
            .ok_or_else(|| Error::Other(format!("run {}: batch {n} journaled as {detail:?}", self.run.id())))?;
        let finished = ["retire", "discard"]
            .iter()
            .any(|s| matches!(self.run.recorded(&format!("{s}-{label}-{n}")), Ok(Recorded::Done(_))))
            || (matches!(batch.change, Change::InPlace(_))
                && matches!(self.run.recorded(&format!("wait-{label}-{n}"))?, Recorded::Done(_)));
        Ok((!finished).then_some(batch))
    }

    fn journal_steps(&self) -> Result<Vec<String>, Error> {
        let journal = self.run.journal().lock().map_err(|_| Error::Other("the journal's lock is poisoned".into()))?;
        Ok(journal.steps(self.run.id())?.into_keys().collect())
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

    #[test]
    fn a_batch_reads_back_as_it_was_journaled() {
        let members: BTreeSet<String> = ["i-a", "i-b"].iter().map(|s| s.to_string()).collect();
        for change in [Change::Surge(2), Change::InPlace(vec!["i-a".into()])] {
            let b = Batch { before: 6, members: members.clone(), change };
            assert_eq!(Batch::parse(&b.detail()), Some(b.clone()), "{}", b.detail());
        }
        assert_eq!(Batch::parse("surge x"), None);
    }
}
