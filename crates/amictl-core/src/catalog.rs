//! The image catalog: versions, channels, lineage and revocation, as pure functions over
//! images and channel records. The AWS side (CreateImage, SSM parameters) is in [`crate::aws`];
//! [`crate::pipeline::catalog`] strings the two together.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::family::FamilyRules;
use crate::inventory::Image;
pub use crate::inventory::{ChangeNote, Channel, ChannelEntry};

/// The tag holding an image's semantic version.
pub const VERSION_TAG: &str = "Version";
/// The tag naming an image's family (application).
pub const FAMILY_TAG: &str = "Application";
/// The tag a validation run writes its verdict to (`passed` / `failed`).
pub const VALIDATION_TAG: &str = "amictl:validation";
/// When an image was revoked (RFC 3339); its presence means revoked.
pub const REVOKED_TAG: &str = "amictl:revoked";
pub const REVOKED_REASON_TAG: &str = "amictl:revoked-reason";
/// The SSM parameter path under which channels live: `/amictl/<family>/<channel>`.
pub const CHANNEL_PREFIX: &str = "/amictl/";

pub fn is_revoked(image: &Image) -> bool {
    image.tags.contains_key(REVOKED_TAG)
}

pub fn version_of(image: &Image) -> Option<Version> {
    image.tags.get(VERSION_TAG).and_then(|v| Version::parse(v.trim_start_matches('v')).ok())
}

/// Images of `family` (as `rules` group them, like every other command), newest first: by
/// version, then creation date.
pub fn family_versions<'a>(images: &'a [Image], family: &str, rules: &FamilyRules) -> Vec<&'a Image> {
    let mut out: Vec<&Image> = images.iter().filter(|i| rules.name_of(i).as_deref() == Some(family)).collect();
    out.sort_by(|a, b| {
        version_of(b)
            .cmp(&version_of(a))
            .then_with(|| b.creation_date.cmp(&a.creation_date))
            .then_with(|| b.id.cmp(&a.id))
    });
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bump {
    Major,
    Minor,
    #[default]
    Patch,
}

/// The version a new image of the family gets: `requested` (must be semver and new), or the
/// newest existing version bumped (1.0.0 for a new family).
pub fn next_version(existing: &[&Image], requested: Option<&str>, bump: Bump) -> Result<Version, String> {
    let versions: Vec<Version> = existing.iter().filter_map(|i| version_of(i)).collect();
    if let Some(r) = requested {
        let v = Version::parse(r.trim_start_matches('v'))
            .map_err(|e| format!("version {r:?} is not a semantic version like 2.1.0: {e}"))?;
        if let Some(i) = existing.iter().find(|i| version_of(i).as_ref() == Some(&v)) {
            return Err(format!("version {v} already exists: {} ({})", i.id, i.name));
        }
        return Ok(v);
    }
    Ok(match versions.iter().max() {
        None => Version::new(1, 0, 0),
        Some(v) => match bump {
            Bump::Major => Version::new(v.major + 1, 0, 0),
            Bump::Minor => Version::new(v.major, v.minor + 1, 0),
            Bump::Patch => Version::new(v.major, v.minor, v.patch + 1),
        },
    })
}

/// The newest image of `family` that may serve as a base: available, not revoked, validated
/// (`amictl:validation=passed`) and not failed by a scan.
pub fn newest_validated<'a>(
    images: &'a [Image],
    family: &str,
    rules: &FamilyRules,
    scan_tag: &str,
    scan_passed: &[String],
) -> Option<&'a Image> {
    family_versions(images, family, rules).into_iter().find(|i| {
        i.state == "available"
            && !is_revoked(i)
            && i.tags.get(VALIDATION_TAG).is_some_and(|v| v == "passed")
            && i.tags.get(scan_tag).is_none_or(|v| scan_passed.contains(v))
    })
}

/// The newest available image by creation date (Packer's `most_recent`).
pub fn most_recent(images: &[Image]) -> Option<&Image> {
    images
        .iter()
        .filter(|i| i.state == "available")
        .max_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)))
}

/// `{family}-{version}`: unique per family version (as AMI names must be per account and
/// region), and the same on a retry, so a retried capture finds what the first attempt made.
pub fn image_name(family: &str, version: &Version) -> String {
    format!("{family}-{version}")
}

/// Every image whose lineage (`lineage_tag`, transitively) leads to `root`.
pub fn descendants(images: &[Image], root: &str, lineage_tag: &str) -> Vec<String> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for i in images {
        if let Some(p) = i.tags.get(lineage_tag) {
            children.entry(p.as_str()).or_default().push(i.id.as_str());
        }
    }
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::from([root]);
    let mut work = vec![root];
    while let Some(id) = work.pop() {
        for c in children.get(id).into_iter().flatten() {
            if seen.insert(c) {
                out.push(c.to_string());
                work.push(c);
            }
        }
    }
    out.sort();
    out
}

/// One node of a lineage tree.
#[derive(Debug, Clone, Serialize)]
pub struct LineageNode {
    pub image_id: String,
    pub name: String,
    pub family: Option<String>,
    pub version: Option<String>,
    pub revoked: bool,
    /// Set when a newer image of this image's base family exists: the image should be rebuilt.
    pub outdated_by: Option<String>,
    pub children: Vec<LineageNode>,
}

/// The lineage forest of `images`: roots are images whose base is not among them.
/// `family_of` names each image's family (for "outdated": a newer image of the base's family).
pub fn lineage(images: &[Image], lineage_tag: &str, family_of: &dyn Fn(&Image) -> Option<String>) -> Vec<LineageNode> {
    let by_id: HashMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut children: BTreeMap<&str, Vec<&Image>> = BTreeMap::new();
    let mut roots = Vec::new();
    for i in images {
        match i.tags.get(lineage_tag).map(String::as_str).filter(|p| by_id.contains_key(p) && *p != i.id) {
            Some(p) => children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    // Newest image per family, to tell which bases moved on.
    let mut newest: HashMap<String, &Image> = HashMap::new();
    for i in images.iter().filter(|i| i.state == "available" && !is_revoked(i)) {
        if let Some(f) = family_of(i) {
            let e = newest.entry(f).or_insert(i);
            if (version_of(i), i.creation_date) > (version_of(e), e.creation_date) {
                *e = i;
            }
        }
    }
    fn build(
        i: &Image,
        children: &BTreeMap<&str, Vec<&Image>>,
        by_id: &HashMap<&str, &Image>,
        newest: &HashMap<String, &Image>,
        lineage_tag: &str,
        family_of: &dyn Fn(&Image) -> Option<String>,
        depth: usize,
    ) -> LineageNode {
        let outdated_by = i.tags.get(lineage_tag).and_then(|p| by_id.get(p.as_str())).and_then(|base| {
            let f = family_of(base)?;
            // A newer version of the image's own family is a successor, not a newer base.
            if family_of(i).as_deref() == Some(f.as_str()) {
                return None;
            }
            let n = newest.get(&f)?;
            (n.id != base.id && n.id != i.id)
                .then(|| format!("{} ({}) is newer than its base {}", n.id, n.name, base.id))
        });
        let mut kids: Vec<&Image> = children.get(i.id.as_str()).cloned().unwrap_or_default();
        kids.sort_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)));
        LineageNode {
            image_id: i.id.clone(),
            name: i.name.clone(),
            family: family_of(i),
            version: i.tags.get(VERSION_TAG).cloned(),
            revoked: is_revoked(i),
            outdated_by,
            // A cycle in hand-edited tags cannot recurse forever.
            children: if depth > 64 {
                vec![]
            } else {
                kids.into_iter().map(|k| build(k, children, by_id, newest, lineage_tag, family_of, depth + 1)).collect()
            },
        }
    }
    roots.sort_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)));
    roots.into_iter().map(|r| build(r, &children, &by_id, &newest, lineage_tag, family_of, 0)).collect()
}

pub fn channel_parameter(family: &str, channel: &str) -> String {
    format!("{CHANNEL_PREFIX}{family}/{channel}")
}

/// `(family, channel)` of a parameter name under [`CHANNEL_PREFIX`].
pub fn parse_channel_parameter(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix(CHANNEL_PREFIX)?;
    let (family, channel) = rest.split_once('/')?;
    (!family.is_empty() && !channel.is_empty() && !channel.contains('/'))
        .then(|| (family.to_string(), channel.to_string()))
}

/// Family and channel names become SSM path segments: keep them to safe characters.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("{what} {s:?} must be letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

/// Why `image` may not be released to anything that launches it (a channel, a deployment):
/// revoked, not validated, not passed by a scan, not available. One rule for promotion and
/// deployment. `scan_passed` lists the passing values of `scan_tag`.
pub fn release_objections(image: &Image, scan_tag: &str, scan_passed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if is_revoked(image) {
        let why = image.tags.get(REVOKED_REASON_TAG).map(String::as_str).unwrap_or("no reason given");
        out.push(format!("{} is revoked ({why})", image.id));
    }
    match image.tags.get(VALIDATION_TAG).map(String::as_str) {
        Some("passed") => {}
        Some(v) => out.push(format!("{} failed validation ({VALIDATION_TAG}={v})", image.id)),
        None => out.push(format!("{} has not been validated (no {VALIDATION_TAG} tag)", image.id)),
    }
    match image.tags.get(scan_tag) {
        Some(v) if scan_passed.contains(v) => {}
        Some(v) => out.push(format!("{} failed its security scan ({scan_tag}={v})", image.id)),
        None => out.push(format!("{} has not been scanned (no {scan_tag} tag)", image.id)),
    }
    if image.state != "available" {
        out.push(format!("{} is {}, not available", image.id, image.state));
    }
    out
}

/// Why `image` may not be promoted (empty: it may): [`release_objections`], and it must be of
/// `family`.
pub fn promotion_objections(
    image: &Image,
    family: &str,
    rules: &FamilyRules,
    scan_tag: &str,
    scan_passed: &[String],
) -> Vec<String> {
    let mut out = release_objections(image, scan_tag, scan_passed);
    match rules.name_of(image) {
        Some(f) if f == family => {}
        Some(f) => out.push(format!("{} belongs to family {f}, not {family}", image.id)),
        None => out.push(format!("{} matches no family rule, so it is not of family {family}", image.id)),
    }
    out
}

/// The value a rollback restores: the one before the current value that is not the current
/// value itself.
pub fn rollback_target(channel: &Channel) -> Option<&ChannelEntry> {
    let current = channel.history.last()?;
    channel.history.iter().rev().skip(1).find(|e| e.image_id != current.image_id)
}

/// Images a channel points at, or pointed at since `since`: kept from retirement.
pub fn channel_protected(channels: &[Channel], since: DateTime<Utc>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in channels {
        out.insert(c.image_id.clone(), format!("channel {}/{} points at it", c.family, c.name));
        // An entry was current from its own time until the next entry's.
        for pair in c.history.windows(2) {
            let (old, next) = (&pair[0], &pair[1]);
            if next.modified.is_none_or(|t| t >= since) && old.image_id != c.image_id {
                out.entry(old.image_id.clone()).or_insert_with(|| {
                    format!(
                        "channel {}/{} pointed at it until {}",
                        c.family,
                        c.name,
                        next.modified.map(crate::time::rfc3339).unwrap_or_default()
                    )
                });
            }
        }
    }
    out
}

/// One line of `amictl image list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListedImage {
    pub image_id: String,
    pub account: String,
    pub region: String,
    pub family: String,
    pub name: String,
    pub version: Option<String>,
    pub age_days: Option<i64>,
    pub state: String,
    pub in_use: bool,
    /// e.g. `2 instance(s), 1 auto scaling group(s)`.
    pub in_use_summary: String,
    /// `passed`, `failed`, or `none`.
    pub validation: String,
    pub scan: String,
    pub channels: Vec<String>,
    pub revoked: bool,
}

/// The catalog view of a scope: images with a family tag, newest version first per family.
pub fn listing(
    scope: &crate::inventory::RegionInventory,
    family: Option<&str>,
    rules: &FamilyRules,
    scan_tag: &str,
    scan_passed: &[String],
    now: DateTime<Utc>,
) -> Vec<ListedImage> {
    let usage = crate::usage::analyze(scope);
    let mut families: Vec<String> =
        scope.images.iter().filter_map(|i| rules.name_of(i)).filter(|f| family.is_none_or(|want| want == f)).collect();
    families.sort();
    families.dedup();
    let mut out = Vec::new();
    for f in &families {
        for i in family_versions(&scope.images, f, rules) {
            let refs: Vec<&crate::usage::Reference> = usage.refs(&i.id).iter().filter(|r| r.is_use()).collect();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &refs {
                let k = match r.kind {
                    crate::usage::RefKind::Instance => "instance(s)",
                    crate::usage::RefKind::LaunchTemplate => "template version(s)",
                    crate::usage::RefKind::LaunchConfiguration => "launch configuration(s)",
                    crate::usage::RefKind::AutoScalingGroup => "auto scaling group(s)",
                    crate::usage::RefKind::Fleet => "fleet(s)",
                    crate::usage::RefKind::SharedAccount => "share(s)",
                    crate::usage::RefKind::Public => "public",
                    crate::usage::RefKind::Channel => "channel(s)",
                    crate::usage::RefKind::TerminatedInstance => continue,
                };
                *kinds.entry(k).or_default() += 1;
            }
            let scan = match i.tags.get(scan_tag) {
                None => "none".to_string(),
                Some(v) if scan_passed.contains(v) => "passed".to_string(),
                Some(_) => "failed".to_string(),
            };
            out.push(ListedImage {
                image_id: i.id.clone(),
                account: scope.account.clone(),
                region: scope.region.clone(),
                family: f.clone(),
                name: i.name.clone(),
                version: i.tags.get(VERSION_TAG).cloned(),
                age_days: i.creation_date.map(|c| (now - c).num_days()),
                state: i.state.clone(),
                in_use: !refs.is_empty(),
                in_use_summary: kinds
                    .iter()
                    .map(|(k, n)| if *k == "public" { k.to_string() } else { format!("{n} {k}") })
                    .collect::<Vec<_>>()
                    .join(", "),
                validation: i.tags.get(VALIDATION_TAG).cloned().unwrap_or_else(|| "none".into()),
                scan,
                channels: scope
                    .channels
                    .iter()
                    .filter(|c| c.image_id == i.id)
                    .map(|c| format!("{}/{}", c.family, c.name))
                    .collect(),
                revoked: is_revoked(i),
            });
        }
    }
    out
}
