//! Builds the [`Inventory`] through [`Cloud`]: list calls per page, per-image calls only where
//! a decision needs them.

use std::collections::HashSet;

use futures::{stream, StreamExt, TryStreamExt};

use super::Cloud;
use crate::config::SharingScope;
use crate::error::CloudError;
use crate::inventory::{Inventory, RegionInventory, ScopeFailure};
use crate::usage;

/// How many per-item calls (template versions, launch permissions) run at once in one scope.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Collects every scope concurrently. A scope that fails is recorded in `failures`, never
/// silently dropped.
pub async fn collect<C: Cloud>(clouds: &[C], sharing: SharingScope, concurrency: usize) -> Inventory {
    let results = futures::future::join_all(clouds.iter().map(|c| collect_scope(c, sharing, concurrency))).await;
    let mut inv = Inventory::default();
    for (c, r) in clouds.iter().zip(results) {
        match r {
            Ok(scope) => inv.scopes.push(scope),
            Err(e) => inv.failures.push(ScopeFailure { scope: c.scope().clone(), error: e.to_string() }),
        }
    }
    inv
}

/// Everything in one account and region.
pub async fn collect_scope<C: Cloud>(
    c: &C,
    sharing: SharingScope,
    concurrency: usize,
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
        channels,
    };

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

    let need = usage::images_needing_launch_permissions(&inv, sharing == SharingScope::All);
    let perms: Vec<_> = stream::iter(
        need.iter().map(|id| async move { Ok::<_, CloudError>((id.clone(), c.launch_permissions(id).await?)) }),
    )
    .buffer_unordered(concurrency)
    .try_collect()
    .await?;
    inv.launch_permissions = perms.into_iter().collect();
    Ok(inv)
}

/// Every image id named by an instance, template version or launch configuration.
fn referenced_image_ids(inv: &RegionInventory) -> Vec<String> {
    let mut ids: Vec<String> = inv.instances.iter().map(|i| i.image_id.clone()).collect();
    ids.extend(inv.launch_templates.iter().flat_map(|t| t.versions.iter().filter_map(|v| v.image_id.clone())));
    ids.extend(inv.launch_configurations.iter().map(|l| l.image_id.clone()));
    // ASGs reach images only through templates and launch configurations, listed above.
    ids
}
