//! Builds the [`Inventory`] through [`Cloud`]: list calls per page, per-image calls only where
//! a decision needs them.

use std::collections::{BTreeMap, HashSet};

use futures::{stream, StreamExt, TryStreamExt};

use super::Cloud;
use crate::config::SharingScope;
use crate::error::CloudError;
use crate::inventory::{Fleet, Inventory, LaunchPermission, RegionInventory, ScopeFailure};
use crate::sharing::{Evidence, Reading};
use crate::usage;

/// How many per-item calls (template versions, launch permissions) run at once in one scope.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How many regions of one account are read at once: API rate limits are per account and
/// region, and one account's many regions must not starve the others' requests.
pub const REGIONS_PER_ACCOUNT: usize = 4;

/// Collects every scope: every account concurrently, at most [`REGIONS_PER_ACCOUNT`] regions
/// of each at a time, so the wall time is the slowest account's, not the sum. A scope that
/// fails is recorded in `failures`, never silently dropped.
pub async fn collect<C: Cloud>(clouds: &[C], sharing: SharingScope, concurrency: usize) -> Inventory {
    collect_with(clouds, sharing, concurrency, &Evidence::fresh_only()).await
}

/// [`collect`], with launch-permission readings from `evidence` where they still stand.
pub async fn collect_with<C: Cloud>(
    clouds: &[C],
    sharing: SharingScope,
    concurrency: usize,
    evidence: &Evidence,
) -> Inventory {
    let mut by_account: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (n, c) in clouds.iter().enumerate() {
        by_account.entry(c.scope().account.as_str()).or_default().push(n);
    }
    let per_account = by_account.into_values().map(|ns| {
        stream::iter(
            ns.into_iter()
                .map(|n| async move { (n, collect_scope_with(&clouds[n], sharing, concurrency, evidence).await) }),
        )
        .buffer_unordered(REGIONS_PER_ACCOUNT)
        .collect::<Vec<_>>()
    });
    let mut results: Vec<_> = futures::future::join_all(per_account).await.into_iter().flatten().collect();
    results.sort_by_key(|(n, _)| *n);
    let mut inv = Inventory::default();
    for (c, (_, r)) in clouds.iter().zip(results) {
        match r {
            Ok(scope) => inv.scopes.push(scope),
            Err(e) => inv.failures.push(ScopeFailure { scope: c.scope().clone(), error: e.to_string() }),
        }
    }
    crate::usage::link_accounts(&mut inv);
    inv
}

/// Everything in one account and region.
pub async fn collect_scope<C: Cloud>(
    c: &C,
    sharing: SharingScope,
    concurrency: usize,
) -> Result<RegionInventory, CloudError> {
    collect_scope_with(c, sharing, concurrency, &Evidence::fresh_only()).await
}

async fn collect_scope_with<C: Cloud>(
    c: &C,
    sharing: SharingScope,
    concurrency: usize,
    evidence: &Evidence,
) -> Result<RegionInventory, CloudError> {
    let concurrency = concurrency.max(1);
    let (images, snapshots, instances, mut templates, launch_configurations, auto_scaling_groups, channels) = futures::try_join!(
        c.owned_images(),
        c.owned_snapshots(),
        c.instances(),
        c.launch_templates(),
        c.launch_configurations(),
        c.auto_scaling_groups(),
        c.channels(),
    )?;
    let (ec2_fleets, spot_fleets, spot_requests) =
        futures::try_join!(c.ec2_fleets(), c.spot_fleet_requests(), c.spot_instance_requests())?;
    let fleets: Vec<Fleet> = ec2_fleets.into_iter().chain(spot_fleets).chain(spot_requests).collect();

    let versions: Vec<_> = stream::iter(templates.iter().map(|t| c.launch_template_versions(&t.id)))
        .buffered(concurrency)
        .try_collect()
        .await?;
    for (t, mut v) in templates.iter_mut().zip(versions) {
        v.sort_by_key(|v| v.number);
        t.versions = v;
    }

    let mut inv = RegionInventory {
        account: c.scope().account.clone(),
        region: c.scope().region.clone(),
        images,
        foreign_images: Vec::new(),
        snapshots,
        instances,
        launch_templates: templates,
        launch_configurations,
        auto_scaling_groups,
        launch_permissions: Default::default(),
        launch_permissions_read_at: None,
        channels,
        fleets,
        parameters: Default::default(),
        retired_snapshots: Default::default(),
        gaps: Vec::new(),
        shared_use: Default::default(),
    };
    resolve_parameters(c, &mut inv).await;

    // Images referenced here but owned by someone else (or gone): one batched lookup.
    let owned: HashSet<&str> = inv.images.iter().map(|i| i.id.as_str()).collect();
    let mut referenced: Vec<String> = referenced_image_ids(&inv)
        .into_iter()
        .filter(|id| !owned.contains(id.as_str()) && id.starts_with("ami-"))
        .collect();
    referenced.sort();
    referenced.dedup();
    if !referenced.is_empty() {
        inv.foreign_images = c.images_by_id(&referenced).await?;
    }

    if sharing == SharingScope::Deferred {
        return Ok(inv);
    }
    let need = usage::images_needing_launch_permissions(&inv, sharing == SharingScope::All);
    let (read, _, _) = launch_permissions(c, &need, concurrency, evidence).await;
    for (id, r) in read {
        inv.launch_permissions.insert(id, r?);
    }
    Ok(inv)
}

/// The launch permissions of `ids`: the readings `evidence` holds that still stand, the rest
/// read now (and handed to `evidence` to keep). Also when the oldest of them was read, and how
/// many came from `evidence`.
async fn launch_permissions<C: Cloud>(
    c: &C,
    ids: &[String],
    concurrency: usize,
    evidence: &Evidence,
) -> (Vec<(String, Result<Vec<LaunchPermission>, CloudError>)>, Option<chrono::DateTime<chrono::Utc>>, usize) {
    let cached = evidence.standing(c, ids).await;
    let to_read: Vec<&String> = ids.iter().filter(|id| !cached.contains_key(*id)).collect();
    let read: Vec<(String, Result<_, CloudError>, chrono::DateTime<chrono::Utc>)> =
        stream::iter(to_read.into_iter().map(|id| async move {
            let at = chrono::Utc::now();
            (id.clone(), c.launch_permissions(id).await, at)
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let oldest_read = read.iter().map(|(_, _, at)| *at).min();
    evidence.used(c.scope(), &cached, read.len(), oldest_read);
    let kept = read
        .iter()
        .filter_map(|(id, r, at)| {
            let permissions = r.as_ref().ok()?.clone();
            Some(Reading { image_id: id.clone(), permissions, read_at: *at })
        })
        .collect();
    evidence.record(c.scope(), kept);
    let oldest = cached.values().map(|r| r.read_at).chain(oldest_read).min();
    let from_cache = cached.len();
    let mut out: Vec<_> = cached.into_iter().map(|(id, r)| (id, Ok(r.permissions))).collect();
    out.extend(read.into_iter().map(|(id, r, _)| (id, r)));
    (out, oldest, from_cache)
}

/// Fetches the launch permissions of `wanted` images (by scope) into `inv`: the plan-driven
/// way, for the images a plan would retire, since sharing can only keep an image. A scope
/// whose permissions cannot all be read gets a gap, which keeps everything in it.
///
/// Readings `evidence` holds that still stand are used instead of reading again; pass
/// [`Evidence::fresh_only`] where the answer must be read now.
pub async fn add_launch_permissions<C: Cloud>(
    clouds: &[C],
    inv: &mut Inventory,
    wanted: &BTreeMap<crate::inventory::Scope, Vec<String>>,
    concurrency: usize,
    evidence: &Evidence,
) {
    // Scopes side by side: each has its own API budget.
    let per_scope = inv.scopes.iter_mut().filter_map(|scope| {
        let key = scope.scope();
        let (Some(ids), Some(c)) = (wanted.get(&key), clouds.iter().find(|c| c.scope() == &key)) else { return None };
        Some(add_scope_launch_permissions(c, scope, ids, concurrency, evidence))
    });
    futures::future::join_all(per_scope).await;
    crate::usage::link_accounts(inv);
}

/// [`add_launch_permissions`] in one scope.
async fn add_scope_launch_permissions<C: Cloud>(
    c: &C,
    scope: &mut RegionInventory,
    ids: &[String],
    concurrency: usize,
    evidence: &Evidence,
) {
    let ids: Vec<String> = ids.iter().filter(|id| !scope.launch_permissions.contains_key(*id)).cloned().collect();
    if ids.is_empty() {
        return;
    }
    // Timed only when every reading in the scope is: an untimed one must not pass for recent.
    let untimed = scope.launch_permissions_read_at.is_none() && !scope.launch_permissions.is_empty();
    let (read, oldest, cached) = launch_permissions(c, &ids, concurrency, evidence).await;
    if cached > 0 {
        // Untimed from now on: a reading from the journal, however recent, must never stand
        // as the re-check right before a change (see `carry_launch_permissions`).
        scope.launch_permissions_read_at = None;
    } else if let (false, Some(oldest)) = (untimed, oldest) {
        scope.launch_permissions_read_at = Some(scope.launch_permissions_read_at.map_or(oldest, |t| t.min(oldest)));
    }
    for (id, r) in read {
        match r {
            Ok(p) => {
                scope.launch_permissions.insert(id, p);
            }
            // Deregistered since it was listed: nothing left to share (the re-check sees it gone).
            Err(e) if e.kind == crate::error::CloudErrorKind::NotFound => {
                scope.launch_permissions.insert(id, Vec::new());
            }
            Err(e) => scope.gaps.push(format!("the launch permissions of {id} could not be read: {e}")),
        }
    }
}

/// Copies into `to` the launch permissions `from` read at or after `since` (same account and
/// region, images `to` has not read), so that an apply started right after its plan does not
/// read them a second time; the re-check takes readings that recent as its own.
pub fn carry_launch_permissions(from: &Inventory, to: &mut Inventory, since: chrono::DateTime<chrono::Utc>) {
    for scope in &mut to.scopes {
        let Some(old) = from.scopes.iter().find(|s| s.account == scope.account && s.region == scope.region) else {
            continue;
        };
        let Some(read_at) = old.launch_permissions_read_at.filter(|t| *t >= since) else { continue };
        if scope.launch_permissions_read_at.is_none() && !scope.launch_permissions.is_empty() {
            continue; // its own readings are untimed: a timestamp would make them pass for recent
        }
        let mut carried = false;
        for (image, perms) in &old.launch_permissions {
            if !scope.launch_permissions.contains_key(image) {
                scope.launch_permissions.insert(image.clone(), perms.clone());
                carried = true;
            }
        }
        if carried {
            scope.launch_permissions_read_at =
                Some(scope.launch_permissions_read_at.map_or(read_at, |t| t.min(read_at)));
        }
    }
    crate::usage::link_accounts(to);
}

/// Every image id named by an instance, template version, launch configuration, fleet or
/// resolved parameter.
fn referenced_image_ids(inv: &RegionInventory) -> Vec<String> {
    let mut ids: Vec<String> = inv.instances.iter().map(|i| i.image_id.clone()).collect();
    ids.extend(inv.launch_templates.iter().flat_map(|t| t.versions.iter().filter_map(|v| v.image_id.clone())));
    ids.extend(inv.launch_configurations.iter().map(|l| l.image_id.clone()));
    ids.extend(inv.fleets.iter().flat_map(|f| f.image_ids.iter().cloned()));
    ids.extend(inv.parameters.values().map(|p| p.value.clone()));
    // ASGs reach images only through templates and launch configurations, listed above.
    ids
}

/// Who names each `resolve:ssm:` reference (the part after the prefix), for evidence.
pub fn parameter_references(inv: &RegionInventory) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut note = |image: &str, who: String| {
        if let Some(r) = image.strip_prefix("resolve:ssm:") {
            out.entry(r.to_string()).or_default().push(who);
        }
    };
    for t in &inv.launch_templates {
        for v in &t.versions {
            if let Some(i) = &v.image_id {
                note(i, format!("launch template {}:{}", t.id, v.number));
            }
        }
    }
    for f in &inv.fleets {
        for i in &f.image_ids {
            note(i, format!("{} {}", f.kind.label(), f.fleet_id));
        }
    }
    out
}

/// Reads every parameter a template or fleet takes its image from (channels are read with
/// their history already). What cannot be read is a gap: the scope's answer is incomplete.
async fn resolve_parameters<C: Cloud>(c: &C, inv: &mut RegionInventory) {
    let named = parameter_references(inv);
    let wanted: Vec<String> =
        named.keys().filter(|r| !inv.channels.iter().any(|ch| &ch.parameter == *r)).cloned().collect();
    if wanted.is_empty() {
        return;
    }
    let read = c.parameter_values(&wanted).await;
    inv.parameters = read.found;
    for (reference, why) in read.unreadable {
        let by = named.get(&reference).map(|w| w.join(", ")).unwrap_or_default();
        inv.gaps.push(format!("parameter resolve:ssm:{reference} (named by {by}) could not be read: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::LaunchPermission;

    fn scope(read_at: Option<chrono::DateTime<chrono::Utc>>, perms: &[(&str, &[&str])]) -> RegionInventory {
        RegionInventory {
            account: "111111111111".into(),
            region: "r".into(),
            launch_permissions: perms
                .iter()
                .map(|(i, a)| (i.to_string(), a.iter().map(|x| LaunchPermission::Account(x.to_string())).collect()))
                .collect(),
            launch_permissions_read_at: read_at,
            ..Default::default()
        }
    }

    #[test]
    fn only_recent_readings_are_carried_and_never_over_newer_ones() {
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::seconds(60);
        let plan = Inventory {
            scopes: vec![scope(Some(now - chrono::Duration::seconds(5)), &[("ami-1", &["222"]), ("ami-2", &[])])],
            failures: vec![],
        };
        let mut fresh = Inventory { scopes: vec![scope(Some(now), &[("ami-2", &["333"])])], failures: vec![] };
        carry_launch_permissions(&plan, &mut fresh, since);
        let s = &fresh.scopes[0];
        assert_eq!(s.launch_permissions["ami-1"], vec![LaunchPermission::Account("222".into())]);
        assert_eq!(
            s.launch_permissions["ami-2"],
            vec![LaunchPermission::Account("333".into())],
            "a newer reading stays"
        );
        assert_eq!(s.launch_permissions_read_at, plan.scopes[0].launch_permissions_read_at, "timed as the oldest");

        // Untimed readings of its own: nothing is carried, nothing gets a time.
        let mut untimed = Inventory { scopes: vec![scope(None, &[("ami-2", &["333"])])], failures: vec![] };
        carry_launch_permissions(&plan, &mut untimed, since);
        assert!(!untimed.scopes[0].launch_permissions.contains_key("ami-1"));
        assert!(untimed.scopes[0].launch_permissions_read_at.is_none());

        let stale = Inventory {
            scopes: vec![scope(Some(since - chrono::Duration::seconds(1)), &[("ami-1", &[])])],
            failures: vec![],
        };
        let mut fresh = Inventory { scopes: vec![scope(None, &[])], failures: vec![] };
        carry_launch_permissions(&stale, &mut fresh, since);
        assert!(fresh.scopes[0].launch_permissions.is_empty() && fresh.scopes[0].launch_permissions_read_at.is_none());
    }
}
