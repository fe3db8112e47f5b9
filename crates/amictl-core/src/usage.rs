//! In-use analysis: for every AMI, every reference to it, with evidence.
//!
//! A pure function of a [`RegionInventory`]. "In use" means something could launch the image
//! (a live instance being rebooted or replaced, any launch template version, any launch
//! configuration, any Auto Scaling group) or someone else may depend on it (shared, public).
//! Terminated instances are kept as history: they show what an image ran, not that it runs.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::LazyLock;

use rayon::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::inventory::{AsgSource, Inventory, LaunchPermission, RegionInventory, SharedUse, TemplateRef};

/// The kind of thing that references an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    Instance,
    LaunchTemplate,
    LaunchConfiguration,
    AutoScalingGroup,
    /// An EC2 Fleet, Spot Fleet request or Spot Instance request that may launch it.
    Fleet,
    SharedAccount,
    Public,
    /// An amictl channel (SSM parameter) points at it.
    Channel,
    /// A terminated instance: history, not use.
    TerminatedInstance,
}

/// One reference to an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub kind: RefKind,
    /// The referencing resource: instance id, `lt-…:7`, launch configuration name, ASG name,
    /// account id, or `all` for public.
    #[serde(rename = "resource", alias = "id")]
    pub id: String,
    /// Human-readable evidence, e.g. `asg web-prod via lt-0abc:$Latest (desired 0)`.
    pub evidence: String,
}

impl Reference {
    /// Whether this reference keeps the image in use (terminated instances do not).
    pub fn is_use(&self) -> bool {
        self.kind != RefKind::TerminatedInstance
    }

    /// An instance reference's state as [`analyze`] wrote it (`instance i-… (stopped)`).
    pub fn instance_state(&self) -> Option<&str> {
        if !matches!(self.kind, RefKind::Instance | RefKind::TerminatedInstance) {
            return None;
        }
        self.evidence.rsplit_once(" (").and_then(|(_, s)| s.strip_suffix(')'))
    }

    /// A running (or starting) instance: one that serves now, not a stopped one.
    pub fn is_running_instance(&self) -> bool {
        self.kind == RefKind::Instance && matches!(self.instance_state(), Some("running" | "pending"))
    }
}

/// A reference that points at nothing: an ASG naming a missing template, a template version
/// naming an image that is gone. These are findings, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dangling {
    pub kind: DanglingKind,
    /// The resource holding the broken reference.
    pub resource: String,
    pub evidence: String,
    /// The image it points at, when that is what is missing.
    pub image_id: Option<String>,
    /// Whether something may launch from it now (live instance, ASG), not only a stored definition.
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DanglingKind {
    /// An ASG names a launch template that does not exist.
    MissingLaunchTemplate,
    /// An ASG names a launch template version that does not exist.
    MissingTemplateVersion,
    /// An ASG names a launch configuration that does not exist.
    MissingLaunchConfiguration,
    /// Something references an AMI that is neither owned by this account nor visible to it.
    MissingImage,
    /// A launch template version takes its image from an SSM parameter (`resolve:ssm:`),
    /// which the inventory does not resolve.
    UnresolvedImageParameter,
}

/// The analysis of one account/region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Every reference, by image id (owned, foreign or missing images alike), sorted.
    pub references: BTreeMap<String, Vec<Reference>>,
    pub dangling: Vec<Dangling>,
    /// Image → accounts it is shared with that were read in full and do not use it (see
    /// [`link_accounts`]): what `retire --unshare-unused` may take back.
    #[serde(default)]
    pub unused_shares: BTreeMap<String, Vec<String>>,
}

impl Usage {
    pub fn refs(&self, image_id: &str) -> &[Reference] {
        self.references.get(image_id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn in_use(&self, image_id: &str) -> bool {
        self.refs(image_id).iter().any(Reference::is_use)
    }
}

/// Every reference to every image in `inv`, and the references that lead nowhere.
pub fn analyze(inv: &RegionInventory) -> Usage {
    let mut refs: BTreeMap<String, Vec<Reference>> = BTreeMap::new();
    let mut dangling = Vec::new();
    let mut add = |image: &str, kind, id: String, evidence: String| {
        refs.entry(image.to_string()).or_default().push(Reference { kind, id, evidence });
    };

    for i in &inv.instances {
        let kind = if i.is_live() { RefKind::Instance } else { RefKind::TerminatedInstance };
        add(&i.image_id, kind, i.id.clone(), format!("instance {} ({})", i.id, i.state));
    }

    for c in &inv.channels {
        add(
            &c.image_id,
            RefKind::Channel,
            format!("{}/{}", c.family, c.name),
            format!("channel {}/{}", c.family, c.name),
        );
    }
    for lt in &inv.launch_templates {
        for v in &lt.versions {
            let Some(image) = v.image_id.as_deref() else { continue };
            let mut roles = Vec::new();
            if v.number == lt.default_version {
                roles.push("$Default");
            }
            if v.number == lt.latest_version {
                roles.push("$Latest");
            }
            let role = if roles.is_empty() { String::new() } else { format!(" ({})", roles.join(", ")) };
            let id = format!("{}:{}", lt.id, v.number);
            match resolve_image(inv, image) {
                Some((image, via)) => {
                    add(image, RefKind::LaunchTemplate, id.clone(), format!("launch template {id}{role}{via}"))
                }
                None => dangling.push(Dangling {
                    kind: DanglingKind::UnresolvedImageParameter,
                    resource: id.clone(),
                    evidence: format!("launch template {id} ({}) takes its image from {image}", lt.name),
                    image_id: None,
                    active: false,
                }),
            }
        }
    }

    let attached: HashMap<&str, Vec<&str>> = inv.auto_scaling_groups.iter().fold(HashMap::default(), |mut m, g| {
        if let AsgSource::LaunchConfiguration { name } = &g.source {
            m.entry(name.as_str()).or_default().push(g.name.as_str());
        }
        m
    });
    for lc in &inv.launch_configurations {
        let how = match attached.get(lc.name.as_str()) {
            Some(groups) => format!("attached to {}", groups.join(", ")),
            None => "unattached".to_string(),
        };
        add(
            &lc.image_id,
            RefKind::LaunchConfiguration,
            lc.name.clone(),
            format!("launch configuration {} ({how})", lc.name),
        );
    }

    for g in &inv.auto_scaling_groups {
        let desired = g.desired_capacity;
        let owner = |via: &'static str| Launcher {
            kind: RefKind::AutoScalingGroup,
            id: g.name.clone(),
            label: format!("asg {}", g.name),
            via,
            suffix: format!(" (desired {desired})"),
        };
        match &g.source {
            AsgSource::LaunchTemplate { template } => {
                resolve_template(inv, &owner(""), template, &mut add, &mut dangling);
            }
            AsgSource::MixedInstancesPolicy { template, overrides } => {
                resolve_template(inv, &owner("mixed instances policy "), template, &mut add, &mut dangling);
                for o in overrides {
                    resolve_template(inv, &owner("mixed instances override "), o, &mut add, &mut dangling);
                }
            }
            AsgSource::LaunchConfiguration { name } => {
                match inv.launch_configurations.iter().find(|lc| &lc.name == name) {
                    Some(lc) => add(
                        &lc.image_id,
                        RefKind::AutoScalingGroup,
                        g.name.clone(),
                        format!("asg {} via launch configuration {name} (desired {desired})", g.name),
                    ),
                    None => dangling.push(Dangling {
                        kind: DanglingKind::MissingLaunchConfiguration,
                        resource: g.name.clone(),
                        evidence: format!("asg {} names launch configuration {name}, which does not exist", g.name),
                        image_id: None,
                        active: true,
                    }),
                }
            }
            AsgSource::Unknown => {}
        }
    }

    for f in inv.fleets.iter().filter(|f| f.may_launch()) {
        let label = format!("{} {} ({})", f.kind.label(), f.fleet_id, f.state);
        for image in &f.image_ids {
            match resolve_image(inv, image) {
                Some((image, via)) => add(image, RefKind::Fleet, f.fleet_id.clone(), format!("{label}{via}")),
                None => dangling.push(Dangling {
                    kind: DanglingKind::UnresolvedImageParameter,
                    resource: f.fleet_id.clone(),
                    evidence: format!("{label} takes its image from {image}"),
                    image_id: None,
                    active: true,
                }),
            }
        }
        for t in &f.templates {
            let owner = Launcher {
                kind: RefKind::Fleet,
                id: f.fleet_id.clone(),
                label: label.clone(),
                via: "",
                suffix: "".into(),
            };
            resolve_template(inv, &owner, t, &mut add, &mut dangling);
        }
    }

    let mut unused_shares: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in &inv.images {
        if image.public {
            add(&image.id, RefKind::Public, "all".into(), "public".into());
        }
        for p in inv.launch_permissions.get(&image.id).into_iter().flatten() {
            let (id, evidence) = match p {
                LaunchPermission::Account(a) => (a.clone(), format!("shared with {a}")),
                LaunchPermission::Group(g) if g == "all" => continue, // already `public`
                LaunchPermission::Group(g) => (g.clone(), format!("shared with group {g}")),
                LaunchPermission::Organization(o) => (o.clone(), format!("shared with organization {o}")),
                LaunchPermission::OrganizationalUnit(o) => (o.clone(), format!("shared with organizational unit {o}")),
            };
            match (p, inv.shared_use.get(&image.id).and_then(|m| m.get(&id))) {
                (LaunchPermission::Account(a), Some(SharedUse::Used(uses))) => {
                    for u in uses {
                        add(&image.id, RefKind::SharedAccount, id.clone(), format!("used in {a} by {u}"));
                    }
                }
                (LaunchPermission::Account(a), Some(SharedUse::Unused)) => {
                    add(&image.id, RefKind::SharedAccount, id.clone(), format!("shared with {a}, unused there"));
                    unused_shares.entry(image.id.clone()).or_default().push(a.clone());
                }
                (LaunchPermission::Account(a), Some(SharedUse::Unreachable(why))) => add(
                    &image.id,
                    RefKind::SharedAccount,
                    id.clone(),
                    format!("shared with {a}, which amictl cannot reach ({why})"),
                ),
                _ => add(&image.id, RefKind::SharedAccount, id, evidence),
            }
        }
    }

    // References to images that exist nowhere we can see. Deregistered images still listed
    // count as gone: nothing can launch them. Only referenced images are looked up (an estate
    // has far more images than references).
    let referenced: HashSet<&str> = refs.keys().map(String::as_str).collect();
    // One pass over the images, the scope's largest list: (referenced and owned, and live).
    let owned: Vec<(&str, bool)> = inv
        .images
        .par_iter()
        .filter(|i| referenced.contains(i.id.as_str()))
        .map(|i| (i.id.as_str(), i.state != "deregistered"))
        .collect();
    let foreign = inv.foreign_images.iter().filter(|i| i.state != "deregistered" && referenced.contains(i.id.as_str()));
    let live: HashSet<&str> =
        owned.iter().filter(|(_, live)| *live).map(|(id, _)| *id).chain(foreign.map(|i| i.id.as_str())).collect();
    let owned: HashSet<&str> = owned.into_iter().map(|(id, _)| id).collect();
    for (image, rs) in &refs {
        if live.contains(image.as_str()) {
            continue;
        }
        for r in rs.iter().filter(|r| r.is_use()) {
            let active = matches!(r.kind, RefKind::Instance | RefKind::AutoScalingGroup);
            let whose = if owned.contains(image.as_str()) { "deregistered" } else { "not found" };
            dangling.push(Dangling {
                kind: DanglingKind::MissingImage,
                resource: r.id.clone(),
                evidence: format!("{} uses {image}, which is {whose}", r.evidence),
                image_id: Some(image.clone()),
                active,
            });
        }
    }

    for rs in refs.values_mut() {
        rs.sort();
        rs.dedup();
    }
    Usage { references: refs, dangling, unused_shares }
}

/// What launches from a template: an Auto Scaling group or a fleet, for evidence.
struct Launcher {
    kind: RefKind,
    id: String,
    /// `asg web-prod`, `spot fleet sfr-… (active)`.
    label: String,
    /// How it names the template (`mixed instances override `).
    via: &'static str,
    /// After the template (` (desired 4)`).
    suffix: String,
}

/// The image a launch template version (or a fleet) names, with `resolve:ssm:` references
/// resolved through the parameters read for this scope, or channels: `(image, " via …")`.
/// None when it names a parameter that was not resolved.
fn resolve_image<'a>(inv: &'a RegionInventory, image: &'a str) -> Option<(&'a str, String)> {
    let Some(reference) = image.strip_prefix("resolve:ssm:") else { return Some((image, String::new())) };
    if let Some(p) = inv.parameters.get(reference) {
        return Some((p.value.as_str(), format!(" via {image} (version {})", p.version)));
    }
    // A channel read with its history (`/amictl/<family>/<channel>`, no selector).
    inv.channels.iter().find(|c| c.parameter == reference).map(|c| (c.image_id.as_str(), format!(" via {image}")))
}

fn resolve_template(
    inv: &RegionInventory,
    owner: &Launcher,
    t: &TemplateRef,
    add: &mut impl FnMut(&str, RefKind, String, String),
    dangling: &mut Vec<Dangling>,
) {
    let (asg, via) = (owner.label.as_str(), owner.via);
    let found = inv.launch_templates.iter().find(|lt| {
        t.id.as_deref().is_some_and(|id| id == lt.id) || (t.id.is_none() && t.name.as_deref() == Some(lt.name.as_str()))
    });
    let Some(lt) = found else {
        dangling.push(Dangling {
            kind: DanglingKind::MissingLaunchTemplate,
            resource: owner.id.clone(),
            evidence: format!("{asg} names launch template {}, which does not exist", t.label()),
            image_id: None,
            active: true,
        });
        return;
    };
    let label = format!("{}:{}", lt.id, t.version.as_deref().unwrap_or("$Default"));
    match lt.resolve(t.version.as_deref()) {
        Some(v) => match v.image_id.as_deref().and_then(|i| resolve_image(inv, i)) {
            Some((image, param)) => {
                add(image, owner.kind, owner.id.clone(), format!("{asg} via {via}{label}{param}{}", owner.suffix))
            }
            None => {} // no image, or an unresolved parameter: reported on the template version
        },
        None => dangling.push(Dangling {
            kind: DanglingKind::MissingTemplateVersion,
            resource: owner.id.clone(),
            evidence: format!("{asg} names launch template version {label}, which does not exist"),
            image_id: None,
            active: true,
        }),
    }
}

/// Images whose launch permissions must be fetched: the self-owned, non-public, not
/// deregistered ones, and unless `all`, only those nothing else keeps in use (for them,
/// sharing decides whether they are in use; for the rest it only adds evidence).
pub fn images_needing_launch_permissions(inv: &RegionInventory, all: bool) -> Vec<String> {
    let usage = if all { None } else { Some(analyze(inv)) };
    inv.images
        .iter()
        .filter(|i| !i.public && i.state != "deregistered" && i.owner == inv.account)
        .filter(|i| usage.as_ref().is_none_or(|u| !u.in_use(&i.id)))
        .map(|i| i.id.clone())
        .collect()
}

/// How a snapshot came to be, read from the description EC2 gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotOrigin {
    CreateImage,
    CopyImage,
}

static CREATE_IMAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Created by CreateImage\((i-[0-9a-f]+)\) for (ami-[0-9a-f]+)").unwrap());
static COPY_IMAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Copied for DestinationAmi (ami-[0-9a-f]+) from SourceAmi (ami-[0-9a-f]+)").unwrap());

/// The AMI a snapshot was made for, if EC2 made it for one (CreateImage or CopyImage).
pub fn ami_snapshot_origin(description: &str) -> Option<(SnapshotOrigin, String)> {
    if let Some(c) = CREATE_IMAGE.captures(description) {
        return Some((SnapshotOrigin::CreateImage, c[2].to_string()));
    }
    COPY_IMAGE.captures(description).map(|c| (SnapshotOrigin::CopyImage, c[1].to_string()))
}

/// An AMI snapshot whose AMI is gone and that no remaining image uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanSnapshot {
    pub snapshot_id: String,
    pub image_id: String,
    pub origin: SnapshotOrigin,
    pub volume_size_gib: i32,
}

/// Snapshots made for an AMI (CreateImage/CopyImage) whose AMI no longer exists and which no
/// remaining image maps. Manual snapshots are never orphans.
pub fn orphaned_snapshots(inv: &RegionInventory) -> Vec<OrphanSnapshot> {
    let images: HashSet<&str> =
        inv.images.iter().filter(|i| i.state != "deregistered").map(|i| i.id.as_str()).collect();
    let mapped: BTreeSet<&str> = inv
        .images
        .iter()
        .filter(|i| i.state != "deregistered")
        .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
        .collect();
    inv.snapshots
        .iter()
        .filter(|s| !mapped.contains(s.id.as_str()))
        .filter_map(|s| {
            let (origin, image_id) = ami_snapshot_origin(&s.description)?;
            (!images.contains(image_id.as_str())).then(|| OrphanSnapshot {
                snapshot_id: s.id.clone(),
                image_id,
                origin,
                volume_size_gib: s.volume_size_gib,
            })
        })
        .collect()
}

/// For every image shared with another account, how that account uses it, from that account's
/// own inventory in the same region: its instances, launch template versions, launch
/// configurations, groups, fleets and channels that name the image. An account amictl does
/// not read, or whose inventory failed or is incomplete, is `Unreachable`: what it does with
/// the image is unknown, so the image stays. When amictl reads a single account there is
/// nothing to link: its shares stay plain `shared with`. Recomputed from scratch on every call.
pub fn link_accounts(inv: &mut Inventory) {
    let index: HashMap<(&str, &str), usize> =
        inv.scopes.iter().enumerate().map(|(n, s)| ((s.account.as_str(), s.region.as_str()), n)).collect();
    let failed: HashMap<(&str, &str), &str> =
        inv.failures.iter().map(|f| ((f.scope.account.as_str(), f.scope.region.as_str()), f.error.as_str())).collect();
    let accounts: BTreeSet<&str> = inv
        .scopes
        .iter()
        .map(|s| s.account.as_str())
        .chain(inv.failures.iter().map(|f| f.scope.account.as_str()))
        .collect();
    if accounts.len() <= 1 {
        // Reading one account, nothing else was ever going to be read: plain `shared with`.
        for scope in &mut inv.scopes {
            scope.shared_use.clear();
        }
        return;
    }
    // Analysed only for the accounts an image is shared with, once each.
    let mut uses: HashMap<usize, Usage> = HashMap::default();
    let mut linked: Vec<BTreeMap<String, BTreeMap<String, SharedUse>>> = Vec::with_capacity(inv.scopes.len());
    for scope in &inv.scopes {
        let mut out: BTreeMap<String, BTreeMap<String, SharedUse>> = BTreeMap::new();
        for (image, perms) in &scope.launch_permissions {
            for p in perms {
                let LaunchPermission::Account(account) = p else { continue };
                if *account == scope.account {
                    continue;
                }
                let key = (account.as_str(), scope.region.as_str());
                let state = match (index.get(&key), failed.get(&key)) {
                    (Some(&n), _) if !inv.scopes[n].gaps.is_empty() => SharedUse::Unreachable(format!(
                        "its inventory is incomplete: {}",
                        inv.scopes[n].gaps.join("; ")
                    )),
                    (Some(&n), _) => {
                        let there: Vec<String> = uses
                            .entry(n)
                            .or_insert_with(|| analyze(&inv.scopes[n]))
                            .refs(image)
                            .iter()
                            .filter(|r| r.is_use())
                            .map(|r| r.evidence.clone())
                            .collect();
                        if there.is_empty() {
                            SharedUse::Unused
                        } else {
                            SharedUse::Used(there)
                        }
                    }
                    (None, Some(e)) => SharedUse::Unreachable(format!("its inventory failed: {e}")),
                    (None, None) => SharedUse::Unreachable("not among the accounts amictl reads".into()),
                };
                out.entry(image.clone()).or_default().insert(account.clone(), state);
            }
        }
        linked.push(out);
    }
    for (scope, l) in inv.scopes.iter_mut().zip(linked) {
        scope.shared_use = l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Instance, Scope, ScopeFailure};

    #[test]
    fn shared_images_are_linked_to_what_the_other_accounts_do_with_them() {
        let mut owner = RegionInventory { account: "111111111111".into(), region: "r".into(), ..Default::default() };
        owner.images = vec![crate::fixtures::image("ami-1", 9, &[])];
        owner.launch_permissions.insert(
            "ami-1".into(),
            ["222222222222", "333333333333", "444444444444", "555555555555"]
                .iter()
                .map(|a| LaunchPermission::Account(a.to_string()))
                .collect(),
        );
        let mut user = RegionInventory { account: "222222222222".into(), region: "r".into(), ..Default::default() };
        user.instances = vec![Instance {
            id: "i-9".into(),
            image_id: "ami-1".into(),
            state: "running".into(),
            name: None,
            launch_time: None,
            tags: Default::default(),
        }];
        let idle = RegionInventory { account: "333333333333".into(), region: "r".into(), ..Default::default() };
        let mut inv = Inventory { scopes: vec![owner, user, idle], ..Default::default() };
        inv.failures.push(ScopeFailure {
            scope: Scope { account: "444444444444".into(), region: "r".into() },
            error: "AccessDenied".into(),
        });
        link_accounts(&mut inv);
        let linked = &inv.scopes[0].shared_use["ami-1"];
        assert_eq!(linked["222222222222"], SharedUse::Used(vec!["instance i-9 (running)".into()]));
        assert_eq!(linked["333333333333"], SharedUse::Unused);
        assert!(matches!(&linked["444444444444"], SharedUse::Unreachable(w) if w.contains("AccessDenied")));
        assert!(matches!(&linked["555555555555"], SharedUse::Unreachable(w) if w.contains("not among")));
        let u = analyze(&inv.scopes[0]);
        let evidence: Vec<&str> = u.refs("ami-1").iter().map(|r| r.evidence.as_str()).collect();
        assert!(evidence.contains(&"used in 222222222222 by instance i-9 (running)"), "{evidence:?}");
        assert_eq!(u.unused_shares["ami-1"], vec!["333333333333"]);

        // One account read: nothing to link, the shares stay plain.
        let mut alone = Inventory { scopes: vec![inv.scopes[0].clone()], ..Default::default() };
        link_accounts(&mut alone);
        assert!(alone.scopes[0].shared_use.is_empty());
        let evidence: Vec<String> =
            analyze(&alone.scopes[0]).refs("ami-1").iter().map(|r| r.evidence.clone()).collect();
        assert!(evidence.contains(&"shared with 222222222222".to_string()), "{evidence:?}");
    }
}
