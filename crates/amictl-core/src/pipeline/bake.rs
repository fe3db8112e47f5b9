//! `amictl bake`: a patched image of a family, from a base, through a builder instance and
//! Systems Manager. One run of the engine: sweep leftovers → launch the builder → wait for it
//! and its SSM agent → patch (every invocation followed) → create the image → wait until it
//! is available → tag its snapshots → copy and share; the builder is terminated however the
//! run ends. A bake interrupted after CreateImage is continued by the next bake of the same
//! family and base: it adopts the image instead of making a second one.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, CommandRequest, Machines};
use crate::catalog::{self, Bump, FAMILY_TAG, VERSION_TAG};
use crate::engine::{Progress, Run};
use crate::error::Error;
use crate::family::FamilyRules;
use crate::inventory::Image;
use crate::journal::Journal;
use crate::pipeline::{command, ephemeral};
use crate::presets::{self, PatchPreset};

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseChoice {
    Image(String),
    /// The newest validated image of a family.
    Family(String),
    /// The most recent image whose name matches, of these owners.
    Filter {
        name: String,
        owners: Vec<String>,
    },
}

/// How the builder is patched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Patch {
    Preset(PatchPreset),
    Commands(Vec<String>),
    Document { name: String, parameters: BTreeMap<String, Vec<String>> },
}

impl Patch {
    fn request(&self, instance_id: &str, timeout: Duration, run_id: i64) -> CommandRequest {
        let (document, parameters) = match self {
            Patch::Preset(p) => command::shell(presets::patch_commands(*p), timeout),
            Patch::Commands(c) => command::shell(c.clone(), timeout),
            Patch::Document { name, parameters } => (name.clone(), parameters.clone()),
        };
        command::on_instance(instance_id, (document, parameters), format!("amictl bake, run {run_id}"))
    }
}

/// What `amictl bake` was asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BakeRequest {
    pub family: String,
    pub base: BaseChoice,
    pub version: Option<String>,
    pub bump: Bump,
    pub patch: Patch,
    pub cves: Vec<String>,
    pub copy_to: Vec<String>,
    pub share_with: Vec<String>,
    pub instances: ephemeral::InstanceSettings,
    #[serde(with = "crate::time::duration")]
    pub command_timeout: Duration,
    #[serde(with = "crate::time::duration")]
    pub image_timeout: Duration,
}

/// The image a bake made.
#[derive(Debug, Clone, Serialize)]
pub struct Baked {
    pub image_id: String,
    pub name: String,
    pub family: String,
    pub version: String,
    pub source_ami: String,
    /// The image and its copies, home region first.
    pub regions: Vec<RegionImage>,
    pub shared_with: Vec<String>,
    pub cves: Vec<String>,
    pub run_id: i64,
    /// The run an interrupted bake left the image in, when this bake continued it.
    pub adopted_from_run: Option<i64>,
    pub builder: Option<String>,
    pub swept: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionImage {
    pub region: String,
    pub image_id: String,
}

/// What the bake will do, decided before anything is launched.
struct Prepared {
    base: Image,
    version: semver::Version,
    name: String,
    /// An image an interrupted bake of the same family and base made: `(image id, run id)`.
    adopt: Option<(String, i64)>,
}

/// Picks the base image, or says what was looked for.
pub async fn resolve_base<C: Cloud + Machines>(
    cloud: &C,
    base: &BaseChoice,
    rules: &FamilyRules,
    scan_tag: &str,
    scan_passed: &[String],
) -> Result<Image, Error> {
    let scope = cloud.scope().to_string();
    match base {
        BaseChoice::Image(id) => {
            let image = cloud
                .image_now(id)
                .await?
                .ok_or_else(|| Error::NotFound { what: format!("base AMI {id}"), looked_in: scope })?;
            if image.state != "available" {
                return Err(Error::Usage(format!("base AMI {id} is {}, not available", image.state)));
            }
            Ok(image)
        }
        BaseChoice::Family(f) => {
            let images = cloud.owned_images().await?;
            if catalog::family_versions(&images, f, rules).is_empty() {
                return Err(Error::NotFound {
                    what: format!("family {f} (no AMI the family rules put in it)"),
                    looked_in: scope,
                });
            }
            catalog::newest_validated(&images, f, rules, scan_tag, scan_passed).cloned().ok_or_else(|| {
                Error::Usage(format!(
                    "family {f} has no validated image to bake from (available, not revoked, amictl:validation=passed): \
                     validate one with `amictl validate`, or pass --base ami-…"
                ))
            })
        }
        BaseChoice::Filter { name, owners } => {
            let found = cloud.images_matching(name, owners).await?;
            catalog::most_recent(&found).cloned().ok_or_else(|| Error::NotFound {
                what: format!("an available AMI named {name:?} owned by {}", owners_text(owners)),
                looked_in: scope,
            })
        }
    }
}

fn owners_text(owners: &[String]) -> String {
    if owners.is_empty() {
        "anyone".into()
    } else {
        owners.join(", ")
    }
}

/// Checks the request against the estate: base, version, name, instance type; finds an image
/// an interrupted bake left to adopt.
async fn prepare<C: Cloud + Machines>(
    cloud: &C,
    journal: &Journal,
    req: &BakeRequest,
    rules: &FamilyRules,
    scan: (&str, &[String]),
) -> Result<Prepared, Error> {
    catalog::check_name("family", &req.family).map_err(Error::Usage)?;
    for c in &req.cves {
        check_cve(c)?;
    }
    let base = resolve_base(cloud, &req.base, rules, scan.0, scan.1).await?;
    let images = cloud.owned_images().await?;
    if let Some((image, run)) = adoptable(&images, journal, &req.family, &base.id)? {
        let version = catalog::version_of(&image).unwrap_or_else(|| semver::Version::new(0, 0, 0));
        let name = image.name.clone();
        return Ok(Prepared { base, version, name, adopt: Some((image.id, run)) });
    }
    let existing = catalog::family_versions(&images, &req.family, rules);
    let version = catalog::next_version(&existing, req.version.as_deref(), req.bump).map_err(Error::Usage)?;
    let name = catalog::image_name(&req.family, &version);
    if let Some(other) = images.iter().find(|i| i.name == name) {
        return Err(Error::Usage(format!(
            "an image named {name} exists already ({}): choose another --version",
            other.id
        )));
    }
    Ok(Prepared { base, version, name, adopt: None })
}

/// An image of `family` from `base` that a bake made and did not finish (interrupted or
/// failed after CreateImage), with that run's id.
fn adoptable(images: &[Image], journal: &Journal, family: &str, base: &str) -> Result<Option<(Image, i64)>, Error> {
    for i in images.iter().filter(|i| {
        i.tags.get("BuiltBy").is_some_and(|b| b == "amictl")
            && i.tags.get(FAMILY_TAG).is_some_and(|f| f == family)
            && i.tags.get("SourceAMI").is_some_and(|s| s == base)
            && !matches!(i.state.as_str(), "deregistered" | "failed" | "error")
    }) {
        let Some(run) = i.tags.get(ephemeral::RUN_TAG).and_then(|r| r.parse::<i64>().ok()) else { continue };
        let Some((status, plan)) = journal.run_plan(run)? else { continue };
        // Only a bake of this family that did not finish made it (run ids are per journal).
        let same_bake = serde_json::from_str::<BakeRequest>(&plan).is_ok_and(|r| r.family == family);
        if same_bake && matches!(status.as_str(), "interrupted" | "failed") {
            return Ok(Some((i.clone(), run)));
        }
    }
    Ok(None)
}

fn check_cve(id: &str) -> Result<(), Error> {
    let ok = id.strip_prefix("CVE-").and_then(|r| r.split_once('-')).is_some_and(|(y, n)| {
        y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) && n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("--cve {id:?} is not a CVE id like CVE-2024-3094")))
    }
}

/// Bakes one image. `copies` are the clouds of the `--copy-to` regions, in that order.
#[allow(clippy::too_many_arguments)]
pub async fn bake<C: Cloud + Machines>(
    cloud: &C,
    copies: &[C],
    journal: Journal,
    req: &BakeRequest,
    rules: &FamilyRules,
    scan: (&str, &[String]),
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<Baked, Error> {
    let prepared = prepare(cloud, &journal, req, rules, scan).await?;
    let request = serde_json::to_string(req).unwrap_or_default();
    let builder = std::sync::Mutex::new(None);
    let work = async |run: &Run| {
        let image_id = match &prepared.adopt {
            Some((id, from)) => adopt(cloud, run, id, *from, progress).await?,
            None => build(cloud, run, req, &prepared, &builder, progress, now).await?,
        };
        let image = finish_image(cloud, run, req, &image_id, &prepared, progress).await?;
        let regions = copy(cloud, copies, run, req, &image, progress).await?;
        share(cloud, copies, run, req, &regions, progress).await?;
        Ok(regions)
    };
    let done = ephemeral::run_launching(cloud, journal, "bake", &request, &req.instances, now, work).await?;
    let regions = done.result;
    Ok(Baked {
        image_id: regions[0].1.clone(),
        name: prepared.name,
        family: req.family.clone(),
        version: prepared.version.to_string(),
        source_ami: prepared.base.id,
        regions: regions.into_iter().map(|(region, image_id)| RegionImage { region, image_id }).collect(),
        shared_with: req.share_with.clone(),
        cves: req.cves.clone(),
        run_id: done.run_id,
        adopted_from_run: prepared.adopt.map(|(_, r)| r),
        builder: builder.into_inner().unwrap(),
        swept: done.swept,
    })
}

/// Takes over the image an interrupted bake made: its run tag names this run from now on, so
/// once this run completes no later bake adopts it again.
async fn adopt<C: Cloud>(
    cloud: &C,
    run: &Run,
    image_id: &str,
    from: i64,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let tag = async {
        let tags = [(ephemeral::RUN_TAG.to_string(), run.id().to_string())];
        Ok(cloud.tag(&[image_id.to_string()], &tags).await?)
    };
    run.step("adopt-image", progress, tag, |_| format!("{image_id}, made by run {from}, finished by this run")).await?;
    Ok(image_id.to_string())
}

/// Builder → patch → CreateImage; returns the new image's id.
async fn build<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &BakeRequest,
    p: &Prepared,
    builder: &std::sync::Mutex<Option<String>>,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    let machine = ephemeral::launch(cloud, run, ephemeral::Role::Builder, &p.base.id, &req.instances, progress).await?;
    let id = machine.instance_id.clone();
    *builder.lock().unwrap() = Some(id.clone());
    let ssm = ephemeral::wait_managed(cloud, &id, req.instances.ssm_timeout, progress);
    run.step("wait-builder-ssm", progress, ssm, |_| format!("{id} is managed by Systems Manager")).await?;
    let patch = async {
        let request = req.patch.request(&id, req.command_timeout, run.id());
        let outcome = command::run(cloud, &request, req.command_timeout + request.delivery_timeout, progress).await?;
        if !outcome.all_succeeded() {
            return Err(Error::Other(format!("patching the builder failed: {}", outcome.failure_summary())));
        }
        Ok(outcome)
    };
    run.step("patch", progress, patch, |o| format!("command {} succeeded on {id}", o.command_ids.join(", "))).await?;
    let tags = image_tags(req, p, run.id(), now);
    let description = format!("{} {} baked from {} by amictl (run {})", req.family, p.version, p.base.id, run.id());
    let create = async { Ok(cloud.create_image(&id, &p.name, &description, false, &tags).await?) };
    run.step("create-image", progress, create, |image| format!("created {image} ({})", p.name)).await
}

fn image_tags(req: &BakeRequest, p: &Prepared, run_id: i64, now: DateTime<Utc>) -> Vec<(String, String)> {
    let mut tags = vec![
        (FAMILY_TAG.to_string(), req.family.clone()),
        (VERSION_TAG.to_string(), p.version.to_string()),
        ("SourceAMI".to_string(), p.base.id.clone()),
        ("PatchDate".to_string(), now.format("%Y-%m-%d").to_string()),
        ("CreatedDate".to_string(), crate::time::rfc3339(now)),
        ("BuiltBy".to_string(), "amictl".to_string()),
        (ephemeral::RUN_TAG.to_string(), run_id.to_string()),
    ];
    if !req.cves.is_empty() {
        // Tag values hold at most 256 characters.
        let cves: String = req.cves.join(",").chars().take(256).collect();
        tags.push(("CVE".to_string(), cves));
    }
    tags
}

/// Waits until the image is available and tags its snapshots like the image.
async fn finish_image<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &BakeRequest,
    image_id: &str,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<Image, Error> {
    let wait = async { Ok(cloud.wait_image_available(image_id, req.image_timeout).await?) };
    let image = run.step("wait-available", progress, wait, |i: &Image| format!("{} is {}", i.id, i.state)).await?;
    let tags = vec![
        (FAMILY_TAG.to_string(), req.family.clone()),
        (VERSION_TAG.to_string(), p.version.to_string()),
        ("SourceImage".to_string(), image.id.clone()),
        ("BuiltBy".to_string(), "amictl".to_string()),
    ];
    let tag = async {
        if !image.snapshot_ids.is_empty() {
            cloud.tag(&image.snapshot_ids, &tags).await?;
        }
        Ok(())
    };
    run.step("tag-snapshots", progress, tag, |_| format!("tagged {}", image.snapshot_ids.join(", "))).await?;
    Ok(image)
}

/// Copies the image into each `--copy-to` region (CopyImage with a client token, so a retry
/// does not copy twice), tags and waits for each copy.
async fn copy<C: Cloud + Machines>(
    cloud: &C,
    copies: &[C],
    run: &Run,
    req: &BakeRequest,
    image: &Image,
    progress: &dyn Progress,
) -> Result<Vec<(String, String)>, Error> {
    let source_region = cloud.scope().region.clone();
    let mut regions = vec![(source_region.clone(), image.id.clone())];
    for dest in copies {
        let region = dest.scope().region.clone();
        // The same source image and region always give the same token: a retried or adopting run
        // gets the copy CopyImage already made instead of a second one.
        let token = format!("amictl-copy-{}-{region}", image.id);
        let step = async {
            let id = dest.copy_image(&source_region, &image.id, &image.name, &token).await?;
            let copied = dest.wait_image_available(&id, req.image_timeout).await?;
            dest.tag(
                std::slice::from_ref(&id),
                &image.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>(),
            )
            .await?;
            if !copied.snapshot_ids.is_empty() {
                dest.tag(
                    &copied.snapshot_ids,
                    &[("SourceImage".into(), id.clone()), ("BuiltBy".into(), "amictl".into())],
                )
                .await?;
            }
            Ok(id)
        };
        let id = run.step(&format!("copy-to-{region}"), progress, step, |id| format!("{id} in {region}")).await?;
        regions.push((region, id));
    }
    Ok(regions)
}

/// Adds launch permissions for `--share-with` accounts to the image and every copy.
async fn share<C: Cloud + Machines>(
    cloud: &C,
    copies: &[C],
    run: &Run,
    req: &BakeRequest,
    regions: &[(String, String)],
    progress: &dyn Progress,
) -> Result<(), Error> {
    if req.share_with.is_empty() {
        return Ok(());
    }
    for (i, (region, id)) in regions.iter().enumerate() {
        let target = if i == 0 { cloud } else { &copies[i - 1] };
        let step = async { Ok(target.share_image(id, &req.share_with).await?) };
        run.step(&format!("share-{region}"), progress, step, |_| {
            format!("{id} shared with {}", req.share_with.join(", "))
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_ids_are_checked() {
        assert!(check_cve("CVE-2024-3094").is_ok());
        assert!(check_cve("CVE-2024-12345").is_ok());
        assert!(check_cve("cve-2024-3094").is_err());
        assert!(check_cve("CVE-24-3094").is_err());
        assert!(check_cve("openssl").is_err());
    }

    #[test]
    fn a_shell_patch_carries_its_execution_timeout() {
        let r = Patch::Commands(vec!["dnf -y upgrade".into()]).request("i-1", Duration::from_secs(900), 3);
        assert_eq!(r.document, "AWS-RunShellScript");
        assert_eq!(r.parameters["executionTimeout"], vec!["900".to_string()]);
        assert_eq!(r.targets, crate::aws::CommandTargets::Instances(vec!["i-1".into()]));
    }
}
