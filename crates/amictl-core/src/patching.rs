//! Patch in place, the decisions: which instances are targeted, which batch each goes in so that
//! no Auto Scaling group drops below its minimum healthy share, SSM's rate-control values, and
//! what the results add up to. Pure; `pipeline::patch` sends the commands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aws::Invocation;

/// The outcome of an instance's last `amictl patch`: `Success`, `Failed`, `TimedOut`, `Cancelled`.
pub const STATUS_TAG: &str = "amictl:patch-status";
/// When its last patch succeeded (RFC 3339).
pub const PATCHED_AT_TAG: &str = "amictl:patched-at";
/// The run of its last patch.
pub const RUN_TAG: &str = "amictl:patch-run";

/// SendCommand takes at most 50 instance ids.
pub const IDS_PER_COMMAND: usize = 50;

/// `KEY=VALUE` or `KEY=V1,V2` (any of the values): one `--target`.
pub fn parse_tag_target(text: &str) -> Result<(String, Vec<String>), String> {
    let (key, values) = text
        .split_once('=')
        .ok_or_else(|| format!("--target {text:?} is not KEY=VALUE (e.g. Environment=production or Role=web,api)"))?;
    let key = key.trim();
    let values: Vec<String> = values.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
    if key.is_empty() || values.is_empty() {
        return Err(format!("--target {text:?} needs a tag key and at least one value"));
    }
    if key.starts_with("aws:") && key != "aws:autoscaling:groupName" {
        return Err(format!("--target {text:?}: aws: tag keys are reserved (use --asg for groups)"));
    }
    Ok((key.to_string(), values))
}

/// MaxConcurrency / MaxErrors as SSM takes them: a count or a percentage (0–100 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    Count(usize),
    Percent(u8),
}

impl Threshold {
    /// Parses `--max-concurrency` (at least 1) or `--max-errors` (0 allowed).
    pub fn parse(flag: &str, text: &str, minimum: usize) -> Result<Threshold, String> {
        let t = text.trim();
        let bad = || format!("{flag} {text:?}: expected a count like 10 or a percentage like 10% (0–100%)");
        let value = if let Some(p) = t.strip_suffix('%') {
            let p: u8 = p.parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(format!("{flag} {text:?}: a percentage is at most 100%"));
            }
            Threshold::Percent(p)
        } else {
            Threshold::Count(t.parse().map_err(|_| bad())?)
        };
        let zero = matches!(value, Threshold::Count(0) | Threshold::Percent(0));
        if minimum > 0 && zero {
            return Err(format!("{flag} {text:?}: must be at least 1 (or 1%)"));
        }
        Ok(value)
    }

    /// The absolute number for `targets` targets (percentages rounded down, as SSM does).
    pub fn of(self, targets: usize) -> usize {
        match self {
            Threshold::Count(n) => n,
            Threshold::Percent(p) => targets * p as usize / 100,
        }
    }

    /// As SendCommand takes it.
    pub fn text(self) -> String {
        match self {
            Threshold::Count(n) => n.to_string(),
            Threshold::Percent(p) => format!("{p}%"),
        }
    }
}

/// One targeted instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub instance_id: String,
    /// The Auto Scaling group it belongs to, if any.
    pub group: Option<String>,
    pub managed: bool,
}

/// A group's health as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHealth {
    pub name: String,
    /// Instances InService and Healthy.
    pub in_service: usize,
    /// How many of them may be patched at once without going below the minimum healthy share.
    pub at_once: usize,
}

/// Instances patched together, their commands sent at once and waited for together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub number: usize,
    pub instance_ids: Vec<String>,
    /// How many of each group's instances the batch takes.
    pub groups: BTreeMap<String, usize>,
}

/// The batches, and the targets that get no command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchPlan {
    pub batches: Vec<Batch>,
    pub not_managed: Vec<String>,
    pub groups: Vec<GroupHealth>,
    /// The error budget over the whole run (MaxErrors of the managed targets).
    pub max_errors: usize,
}

/// How many of `in_service` may be out at once while `min_healthy` percent stay.
pub fn at_once(in_service: usize, min_healthy: u8) -> usize {
    let keep = (in_service * min_healthy as usize).div_ceil(100);
    in_service.saturating_sub(keep)
}

/// Batches the managed targets: instances outside groups all in the first batch (SSM's own
/// MaxConcurrency paces them); each group's instances spread over batches, at most `at_once`
/// of a group in a batch. A group that cannot spare one instance is an error that says so.
/// `disruptive` is false for a scan, which takes nothing out of service: one batch then.
pub fn plan(
    targets: &[Target],
    in_service: &BTreeMap<String, usize>,
    min_healthy: u8,
    disruptive: bool,
    max_errors: Threshold,
) -> Result<PatchPlan, String> {
    let managed: Vec<&Target> = targets.iter().filter(|t| t.managed).collect();
    let not_managed = targets.iter().filter(|t| !t.managed).map(|t| t.instance_id.clone()).collect();
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut loose = Vec::new();
    for t in &managed {
        match (&t.group, disruptive) {
            (Some(g), true) => by_group.entry(g.as_str()).or_default().push(&t.instance_id),
            _ => loose.push(t.instance_id.clone()),
        }
    }
    let mut groups = Vec::new();
    for name in by_group.keys() {
        let serving = in_service.get(*name).copied().unwrap_or(0);
        let n = at_once(serving, min_healthy);
        if n == 0 {
            return Err(format!(
                "group {name} has {serving} instance(s) in service: patching even one would take it below \
                 --min-healthy {min_healthy}% (lower it, or replace the group's instances with `deploy`)"
            ));
        }
        groups.push(GroupHealth { name: name.to_string(), in_service: serving, at_once: n });
    }
    let mut batches: Vec<Batch> = Vec::new();
    if !loose.is_empty() {
        batches.push(Batch { number: 1, instance_ids: loose, groups: BTreeMap::new() });
    }
    let rounds = groups.iter().map(|g| by_group[g.name.as_str()].len().div_ceil(g.at_once)).max().unwrap_or(0);
    for round in 0..rounds {
        let mut batch = Batch { number: 0, instance_ids: vec![], groups: BTreeMap::new() };
        for g in &groups {
            let ids = &by_group[g.name.as_str()];
            let part: Vec<String> = ids.iter().skip(round * g.at_once).take(g.at_once).map(|s| s.to_string()).collect();
            if !part.is_empty() {
                batch.groups.insert(g.name.clone(), part.len());
                batch.instance_ids.extend(part);
            }
        }
        // The instances outside groups ride along with the first group batch.
        if round == 0 && !batches.is_empty() {
            let first = batches.pop().unwrap();
            batch.instance_ids.splice(0..0, first.instance_ids);
        }
        batches.push(batch);
    }
    // A SendCommand takes 50 instance ids; several commands at once would each apply the whole
    // MaxConcurrency and error budget. Batches of at most 50 keep SSM's limits exact.
    let mut batches: Vec<Batch> = batches.into_iter().flat_map(|b| split(b, group_of(&managed))).collect();
    for (i, b) in batches.iter_mut().enumerate() {
        b.number = i + 1;
    }
    Ok(PatchPlan { batches, not_managed, groups, max_errors: max_errors.of(managed.len()) })
}

fn group_of<'a>(managed: &[&'a Target]) -> BTreeMap<&'a str, &'a str> {
    managed.iter().filter_map(|t| Some((t.instance_id.as_str(), t.group.as_deref()?))).collect()
}

/// A batch cut into batches of at most [`IDS_PER_COMMAND`] instances, sent one after another.
fn split(b: Batch, group_of: BTreeMap<&str, &str>) -> Vec<Batch> {
    b.instance_ids
        .chunks(IDS_PER_COMMAND)
        .map(|ids| {
            let mut groups = BTreeMap::new();
            for id in ids {
                if let Some(g) = group_of.get(id.as_str()) {
                    *groups.entry(g.to_string()).or_insert(0) += 1;
                }
            }
            Batch { number: 0, instance_ids: ids.to_vec(), groups }
        })
        .collect()
}

/// One instance's result, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceResult {
    pub instance_id: String,
    pub group: Option<String>,
    pub batch: Option<usize>,
    /// `Success`, `Failed`, `TimedOut`, `Cancelled`, `NotManaged`, or `NotSent` (the error
    /// threshold was crossed before its batch).
    pub status: String,
    pub status_details: String,
    pub exit_code: Option<i64>,
    pub output: String,
}

/// Counts per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub targeted: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub not_managed: usize,
    /// Not run: cancelled by SSM or never sent by amictl once the error threshold was crossed.
    pub not_run: usize,
}

impl Summary {
    pub fn of(results: &[InstanceResult]) -> Summary {
        let count = |f: &dyn Fn(&str) -> bool| results.iter().filter(|r| f(&r.status)).count();
        Summary {
            targeted: results.len(),
            succeeded: count(&|s| s == "Success"),
            failed: count(&|s| s == "Failed"),
            timed_out: count(&|s| s == "TimedOut"),
            not_managed: count(&|s| s == "NotManaged"),
            not_run: count(&|s| matches!(s, "Cancelled" | "NotSent")),
        }
    }

    pub fn all_succeeded(&self) -> bool {
        self.targeted > 0 && self.succeeded == self.targeted
    }
}

/// Counts the errors among invocations (failed or timed out, as SSM counts them).
pub fn errors(invocations: &[Invocation]) -> usize {
    invocations.iter().filter(|i| matches!(i.status.as_str(), "Failed" | "TimedOut")).count()
}

/// The last `lines` lines of an output, for the report.
pub fn tail(output: &str, lines: usize) -> String {
    let all: Vec<&str> = output.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(id: &str, group: Option<&str>, managed: bool) -> Target {
        Target { instance_id: id.into(), group: group.map(String::from), managed }
    }

    #[test]
    fn targets_and_thresholds_are_checked() {
        assert_eq!(parse_tag_target("Role=web,api").unwrap(), ("Role".into(), vec!["web".into(), "api".into()]));
        assert!(parse_tag_target("Role").is_err());
        assert!(parse_tag_target("=web").is_err());
        assert!(parse_tag_target("Role=").is_err());
        assert_eq!(Threshold::parse("--max-errors", "5%", 0).unwrap(), Threshold::Percent(5));
        assert_eq!(Threshold::parse("--max-errors", "0", 0).unwrap(), Threshold::Count(0));
        assert!(Threshold::parse("--max-errors", "120%", 0).unwrap_err().contains("at most 100%"));
        assert!(Threshold::parse("--max-concurrency", "0", 1).is_err());
        assert!(Threshold::parse("--max-errors", "ten", 0).is_err());
        assert_eq!(Threshold::Percent(5).of(200), 10);
        assert_eq!(Threshold::Percent(10).of(15), 1);
    }

    #[test]
    fn a_group_loses_at_most_its_spare_share_per_batch() {
        assert_eq!(at_once(10, 90), 1);
        assert_eq!(at_once(20, 75), 5);
        assert_eq!(at_once(1, 90), 0);
        assert_eq!(at_once(4, 0), 4);
        let targets: Vec<Target> = (0..10)
            .map(|i| t(&format!("i-g{i}"), Some("web"), true))
            .chain((0..3).map(|i| t(&format!("i-s{i}"), None, true)))
            .chain([t("i-x", None, false)])
            .collect();
        let serving = BTreeMap::from([("web".to_string(), 10)]);
        let p = plan(&targets, &serving, 80, true, Threshold::Count(1)).unwrap();
        assert_eq!(p.batches.len(), 5, "two of ten at a time");
        assert_eq!(p.batches[0].instance_ids.len(), 5, "the three outside the group ride with the first");
        assert!(p.batches.iter().all(|b| b.groups.get("web").copied().unwrap_or(0) <= 2));
        assert_eq!(p.not_managed, vec!["i-x".to_string()]);
    }

    #[test]
    fn a_group_that_cannot_spare_an_instance_is_refused_unless_only_scanned() {
        let targets = vec![t("i-1", Some("solo"), true)];
        let serving = BTreeMap::from([("solo".to_string(), 1)]);
        let e = plan(&targets, &serving, 90, true, Threshold::Count(0)).unwrap_err();
        assert!(e.contains("group solo has 1 instance(s) in service"), "{e}");
        let scan = plan(&targets, &serving, 90, false, Threshold::Count(0)).unwrap();
        assert_eq!(scan.batches.len(), 1);
    }

    proptest! {
        #[test]
        fn every_managed_target_is_in_exactly_one_batch_and_no_group_drops_below_its_minimum(
            sizes in prop::collection::vec(1usize..30, 0..4),
            loose in 0usize..20,
            min_healthy in 0u8..=95,
        ) {
            let mut targets = Vec::new();
            let mut serving = BTreeMap::new();
            for (g, n) in sizes.iter().enumerate() {
                serving.insert(format!("g{g}"), *n);
                targets.extend((0..*n).map(|i| t(&format!("i-{g}-{i}"), Some(&format!("g{g}")), true)));
            }
            targets.extend((0..loose).map(|i| t(&format!("i-l{i}"), None, i % 5 != 0)));
            match plan(&targets, &serving, min_healthy, true, Threshold::Percent(10)) {
                Err(_) => prop_assert!(sizes.iter().any(|n| at_once(*n, min_healthy) == 0)),
                Ok(p) => {
                    let mut seen: Vec<&String> = p.batches.iter().flat_map(|b| &b.instance_ids).collect();
                    let total = seen.len();
                    seen.sort();
                    seen.dedup();
                    prop_assert_eq!(seen.len(), total);
                    prop_assert_eq!(total, targets.iter().filter(|t| t.managed).count());
                    prop_assert!(p.batches.iter().all(|b| b.instance_ids.len() <= IDS_PER_COMMAND));
                    for b in &p.batches {
                        for (g, n) in &b.groups {
                            let serving = serving[g];
                            prop_assert!(serving - n >= (serving * min_healthy as usize).div_ceil(100));
                        }
                    }
                }
            }
        }
    }
}
