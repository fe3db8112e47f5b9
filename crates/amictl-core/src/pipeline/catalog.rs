//! Capture, promote, roll back and revoke images.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::Cloud;
use crate::catalog::{self, Bump, ChangeNote, Channel, FAMILY_TAG, REVOKED_REASON_TAG, REVOKED_TAG, VERSION_TAG};
use crate::engine::{Progress, Quiet, Run};
use crate::error::Error;
use crate::family::FamilyRules;
use crate::inventory::Image;
use crate::journal::Journal;

/// What `image create` was asked for.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureRequest {
    pub instance_id: String,
    pub family: String,
    pub version: Option<String>,
    pub bump: Bump,
    pub no_reboot: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Captured {
    pub image_id: String,
    pub name: String,
    pub version: String,
    pub family: String,
    pub source_instance: String,
    pub source_ami: String,
    pub snapshot_ids: Vec<String>,
    pub run_id: i64,
    /// True when an image of this name already existed (a retried capture) and was reused.
    pub reused: bool,
}

/// Captures an image from a running or stopped instance: versioned name, lineage tags, waits
/// until available, tags its snapshots. A run of the engine: every step journaled, the run
/// ends `completed` or `failed`. Retried with the same version, it finds the image it made
/// (the name is `{family}-{version}`) instead of making a second one.
pub async fn capture<C: Cloud>(
    cloud: &C,
    journal: Journal,
    req: &CaptureRequest,
    rules: &FamilyRules,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<Captured, Error> {
    catalog::check_name("family", &req.family).map_err(Error::Usage)?;
    let scope = cloud.scope().clone();
    let instance = cloud.instance(&req.instance_id).await?.ok_or_else(|| Error::NotFound {
        what: format!("instance {}", req.instance_id),
        looked_in: scope.to_string(),
    })?;
    if !instance.is_live() {
        return Err(Error::Usage(format!(
            "instance {} is {}: there is nothing left to capture",
            instance.id, instance.state
        )));
    }
    let images = cloud.owned_images().await?;
    let existing = catalog::family_versions(&images, &req.family, rules);
    // A retry of the same version finds the image an earlier attempt made from this instance
    // (by name, and by the tags it gave it): the version is not "new" then.
    let made_by_us = |i: &Image, name: &str| {
        i.name == name
            && i.tags.get("SourceInstance") == Some(&instance.id)
            && i.tags.get("BuiltBy").is_some_and(|b| b == "amictl")
    };
    let retried = req.version.as_deref().and_then(|v| {
        let v = semver::Version::parse(v.trim_start_matches('v')).ok()?;
        let name = catalog::image_name(&req.family, &v);
        images.iter().any(|i| made_by_us(i, &name)).then_some(v)
    });
    let is_retry = retried.is_some();
    let version = match retried {
        Some(v) => v,
        None => catalog::next_version(&existing, req.version.as_deref(), req.bump).map_err(Error::Usage)?,
    };
    let name = catalog::image_name(&req.family, &version);
    if !is_retry {
        if let Some(other) = images.iter().find(|i| i.name == name) {
            return Err(Error::Usage(format!(
                "an image named {name} exists already ({}), not captured from {}: choose another --version",
                other.id, instance.id
            )));
        }
    }
    let found = images.iter().find(|i| made_by_us(i, &name)).map(|i| i.id.clone());
    let request = serde_json::to_string(req).unwrap_or_default();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let steps = async |run: &Run| {
        let tags: Vec<(String, String)> = vec![
            (FAMILY_TAG.into(), req.family.clone()),
            (VERSION_TAG.into(), version.to_string()),
            ("CreatedDate".into(), crate::time::rfc3339(now)),
            ("SourceInstance".into(), instance.id.clone()),
            ("SourceAMI".into(), instance.image_id.clone()),
            ("BuiltBy".into(), "amictl".into()),
        ];
        let description = format!("{} {} captured from {} by amictl", req.family, version, instance.id);
        // CreateImage takes no idempotency token; a name is unique per account and region, so
        // a retried capture finds its image by name instead of making a second one.
        let create = async {
            match &found {
                Some(id) => Ok(id.clone()),
                None => Ok(cloud.create_image(&instance.id, &name, &description, req.no_reboot, &tags).await?),
            }
        };
        let image_id = run.step("create-image", progress, create, |id| format!("created {id} ({name})")).await?;
        let wait = async { Ok(cloud.wait_image_available(&image_id, req.timeout).await?) };
        let image = run.step("wait-available", progress, wait, |i: &Image| format!("{} is {}", i.id, i.state)).await?;
        // The emulator (and some accounts' policies) reject snapshot tags inside CreateImage:
        // tag them once they exist.
        let snapshot_tags = vec![
            (FAMILY_TAG.to_string(), req.family.clone()),
            (VERSION_TAG.to_string(), version.to_string()),
            ("SourceImage".to_string(), image_id.clone()),
            ("BuiltBy".to_string(), "amictl".to_string()),
        ];
        let tag = async {
            if !image.snapshot_ids.is_empty() {
                cloud.tag(&image.snapshot_ids, &snapshot_tags).await?;
            }
            Ok(())
        };
        run.step("tag-snapshots", progress, tag, |_| format!("tagged {}", image.snapshot_ids.join(", "))).await?;
        Ok((image_id, image.snapshot_ids))
    };
    let (run_id, (image_id, snapshot_ids)) =
        crate::engine::run_steps(journal, "image create", &request, &scopes, steps).await?;
    Ok(Captured {
        image_id,
        name,
        version: version.to_string(),
        family: req.family.clone(),
        source_instance: instance.id,
        source_ami: instance.image_id,
        snapshot_ids,
        run_id,
        reused: found.is_some(),
    })
}

/// The outcome of a promotion or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelChange {
    pub family: String,
    pub channel: String,
    pub parameter: String,
    pub previous: Option<String>,
    pub image_id: String,
    pub version: i64,
    pub overridden: Vec<String>,
}

/// Points `/amictl/<family>/<channel>` at `image_id`; refuses unvalidated, failed-scan,
/// revoked or other-family images unless `force`.
#[allow(clippy::too_many_arguments)]
pub async fn promote<C: Cloud>(
    cloud: &C,
    journal: Journal,
    family: &str,
    channel: &str,
    image_id: &str,
    rules: &FamilyRules,
    scan_tag: &str,
    scan_passed: &[String],
    force: bool,
    who: &str,
    now: DateTime<Utc>,
) -> Result<ChannelChange, Error> {
    catalog::check_name("family", family).map_err(Error::Usage)?;
    catalog::check_name("channel", channel).map_err(Error::Usage)?;
    let image = cloud
        .image_now(image_id)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("AMI {image_id}"), looked_in: cloud.scope().to_string() })?;
    let objections = catalog::promotion_objections(&image, family, rules, scan_tag, scan_passed);
    if !objections.is_empty() && !force {
        return Err(Error::Usage(format!("not promoting: {} (--force overrides)", objections.join("; "))));
    }
    let parameter = catalog::channel_parameter(family, channel);
    let previous = cloud.channel(&parameter).await?.map(|c| c.image_id);
    let note = ChangeNote { action: "promote".into(), by: who.into(), at: now, previous: previous.clone() };
    let version = put_channel(cloud, journal, "channel promote", &parameter, image_id, &note).await?;
    Ok(ChannelChange {
        family: family.into(),
        channel: channel.into(),
        parameter,
        previous,
        image_id: image_id.into(),
        version,
        overridden: if force { objections } else { vec![] },
    })
}

/// One channel change as a run of the engine: journaled, locked, `completed` or `failed`.
async fn put_channel<C: Cloud>(
    cloud: &C,
    journal: Journal,
    command: &str,
    parameter: &str,
    image_id: &str,
    note: &ChangeNote,
) -> Result<i64, Error> {
    let scope = cloud.scope();
    let request = serde_json::json!({"parameter": parameter, "image_id": image_id, "note": note}).to_string();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let change = async |run: &Run| {
        let put = async { Ok(cloud.put_channel(parameter, image_id, note).await?) };
        run.step("put-parameter", &Quiet, put, |v| format!("{parameter} version {v} points at {image_id}")).await
    };
    let (_, version) = crate::engine::run_steps(journal, command, &request, &scopes, change).await?;
    Ok(version)
}

/// A channel that must exist: a clear error naming the parameter otherwise.
pub async fn existing_channel<C: Cloud>(cloud: &C, family: &str, channel: &str) -> Result<Channel, Error> {
    let parameter = catalog::channel_parameter(family, channel);
    cloud.channel(&parameter).await?.ok_or_else(|| Error::NotFound {
        what: format!("channel {channel} of family {family} (SSM parameter {parameter})"),
        looked_in: cloud.scope().to_string(),
    })
}

/// Restores the channel's previous value (refusing a revoked or vanished target unless `force`).
pub async fn rollback<C: Cloud>(
    cloud: &C,
    journal: Journal,
    family: &str,
    channel: &str,
    force: bool,
    who: &str,
    now: DateTime<Utc>,
) -> Result<ChannelChange, Error> {
    let c = existing_channel(cloud, family, channel).await?;
    let target = catalog::rollback_target(&c)
        .ok_or_else(|| Error::Usage(format!("channel {family}/{channel} has no earlier value to roll back to")))?
        .image_id
        .clone();
    let mut objections = Vec::new();
    match cloud.image_now(&target).await? {
        None => objections.push(format!("{target} no longer exists")),
        Some(i) if catalog::is_revoked(&i) => objections.push(format!("{target} is revoked")),
        Some(i) if i.state != "available" => objections.push(format!("{target} is {}", i.state)),
        Some(_) => {}
    }
    if !objections.is_empty() && !force {
        return Err(Error::Usage(format!("not rolling back: {} (--force overrides)", objections.join("; "))));
    }
    let note = ChangeNote { action: "rollback".into(), by: who.into(), at: now, previous: Some(c.image_id.clone()) };
    let version = put_channel(cloud, journal, "channel rollback", &c.parameter, &target, &note).await?;
    Ok(ChannelChange {
        family: family.into(),
        channel: channel.into(),
        parameter: c.parameter,
        previous: Some(c.image_id),
        image_id: target,
        version,
        overridden: if force { objections } else { vec![] },
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    pub image_ids: Vec<String>,
    pub deprecated: Vec<String>,
    pub reason: String,
}

/// Tags `image_id` (and, with `descendants`, every image built from it) revoked; optionally
/// deprecates them. Only the owner can revoke.
pub async fn revoke<C: Cloud>(
    cloud: &C,
    image_id: &str,
    descendants: bool,
    reason: &str,
    deprecate: bool,
    lineage_tag: &str,
    now: DateTime<Utc>,
) -> Result<Revoked, Error> {
    if reason.trim().is_empty() {
        return Err(Error::Usage("--reason must say why the image is revoked".into()));
    }
    let account = cloud.scope().account.clone();
    let image = cloud
        .image_now(image_id)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("AMI {image_id}"), looked_in: cloud.scope().to_string() })?;
    if image.owner != account {
        return Err(Error::Usage(format!(
            "{image_id} is owned by account {}, not by {account}: only its owner can revoke it",
            image.owner
        )));
    }
    let mut ids = vec![image_id.to_string()];
    if descendants {
        ids.extend(catalog::descendants(&cloud.owned_images().await?, image_id, lineage_tag));
    }
    // Tag values are at most 256 characters.
    let reason_tag: String = reason.chars().take(256).collect();
    cloud
        .tag(&ids, &[(REVOKED_TAG.into(), crate::time::rfc3339(now)), (REVOKED_REASON_TAG.into(), reason_tag)])
        .await?;
    let mut deprecated = Vec::new();
    if deprecate {
        for id in &ids {
            if cloud.deprecate_image(id, now + chrono::Duration::minutes(1)).await? {
                deprecated.push(id.clone());
            }
        }
    }
    Ok(Revoked { image_ids: ids, deprecated, reason: reason.into() })
}
