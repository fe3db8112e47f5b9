//! `amictl status`: what each group runs now, and its last-known-good.

use crate::aws::{Cloud, GroupDetail, Groups, Machines, RefreshState};
use crate::error::Error;
use crate::journal::Journal;

use serde::Serialize;

use super::last_known_good;

/// What a group runs now.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub template_id: Option<String>,
    /// The version the group names (`7`, `$Default`).
    pub named_version: Option<String>,
    pub version: Option<i64>,
    /// Whether the group names a version number (not `$Latest` or `$Default`).
    pub pinned: bool,
    pub image_id: Option<String>,
    /// Image id → how many of the group's instances run it.
    pub instances_by_image: std::collections::BTreeMap<String, usize>,
    pub desired_capacity: i32,
    pub in_service: usize,
    pub refresh: Option<RefreshState>,
    pub last_known_good: Option<LastKnownGood>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastKnownGood {
    pub version: i64,
    pub image_id: Option<String>,
    pub run_id: i64,
}

/// The status of `group`, or of every group.
pub async fn status<C: Cloud + Groups + Machines>(
    cloud: &C,
    journal: &Journal,
    group: Option<&str>,
) -> Result<Vec<GroupStatus>, Error> {
    let names = match group {
        Some(g) => vec![g.to_string()],
        None => cloud.group_names().await?,
    };
    let mut out = Vec::new();
    for name in names {
        let g = cloud.group(&name).await?.ok_or_else(|| Error::NotFound {
            what: format!("Auto Scaling group {name}"),
            looked_in: cloud.scope().to_string(),
        })?;
        out.push(group_status(cloud, journal, g).await?);
    }
    Ok(out)
}

async fn group_status<C: Cloud + Groups + Machines>(
    cloud: &C,
    journal: &Journal,
    g: GroupDetail,
) -> Result<GroupStatus, Error> {
    let resolved = match (&g.template_id, &g.template_version) {
        (Some(t), Some(v)) => cloud.template_version(t, v).await?,
        _ => None,
    };
    let ids: Vec<String> = g.instances.iter().map(|i| i.instance_id.clone()).collect();
    let mut by_image = std::collections::BTreeMap::new();
    if !ids.is_empty() {
        for m in cloud.running_instances(&[("instance-id".into(), ids)]).await? {
            *by_image.entry(m.image_id).or_insert(0) += 1;
        }
    }
    let refresh = cloud.refresh_state(&g.name, None).await?;
    let lkg = last_known_good(journal, &g.name, resolved.as_ref().map(|r| r.0))?
        .map(|(version, image_id, run_id)| LastKnownGood { version, image_id, run_id });
    Ok(GroupStatus {
        pinned: g.template_version.as_deref().is_some_and(|v| v.chars().all(|c| c.is_ascii_digit())),
        group: g.name.clone(),
        template_id: g.template_id.clone(),
        named_version: g.template_version.clone(),
        version: resolved.as_ref().map(|r| r.0),
        image_id: resolved.and_then(|r| r.1),
        instances_by_image: by_image,
        desired_capacity: g.desired_capacity,
        in_service: g.instances.iter().filter(|i| i.serving()).count(),
        refresh,
        last_known_good: lkg,
    })
}
