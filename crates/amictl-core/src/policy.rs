//! The retirement policy: which AMIs may go, and how fast.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The tag that always keeps an image, whatever its value.
pub const BUILTIN_KEEP_TAG: &str = "amictl:keep";
/// Marks an image as the last-known-good rollback target of a deployment.
pub const LAST_KNOWN_GOOD_TAG: &str = "amictl:last-known-good";
/// The retirement stage an image (or, after deregistration, a snapshot) is in.
pub const STAGE_TAG: &str = "amictl:retire-stage";
/// When the next stage may run (RFC 3339).
pub const AFTER_TAG: &str = "amictl:retire-after";
/// On an image amictl took back from accounts that did not use it (`retire --unshare-unused`):
/// those accounts. With [`AFTER_TAG`], when retirement may go on.
pub const UNSHARED_TAG: &str = "amictl:unshared-from";
/// On a snapshot whose image amictl deregistered: that image's id.
pub const RETIRED_IMAGE_TAG: &str = "amictl:retired-image";

/// `[retire]` in amictl.toml; every field has a flag on `amictl retire`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetirePolicy {
    /// Keep the newest N images of each family (per account and region).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Never retire an image younger than this.
    #[serde(default = "default_min_age", with = "crate::time::duration")]
    pub min_age: Duration,
    /// Images carrying any of these tags (any value) are kept; `amictl:keep` always is.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Refuse to apply a plan that would take more than this many destructive steps (images
    /// disabled or deregistered, snapshots deleted). Default 500; `--force` overrides.
    #[serde(default = "default_max_deletions")]
    pub max_deletions: Option<usize>,
    /// The tag naming the image an image was built from (lineage).
    #[serde(default = "default_lineage_tag")]
    pub lineage_tag: String,
    /// What happens to images that match no family.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Also delete orphaned AMI snapshots (their AMI is gone).
    #[serde(default)]
    pub orphans: bool,
    /// Collapse the stages: deregister and delete snapshots in one run.
    #[serde(default)]
    pub immediate: bool,
    /// Take an image back from accounts it is shared with that amictl read in full and that
    /// do not use it (`--unshare-unused`), then retire it after the deprecation grace period.
    /// Off: a shared image is kept.
    #[serde(default)]
    pub unshare_unused: bool,
    #[serde(default)]
    pub grace: Grace,
    /// Images a channel pointed at within this window are kept (rollback targets).
    #[serde(default = "default_channel_window", with = "crate::time::duration")]
    pub channel_window: Duration,
}

/// How long an image stays in each stage before the next one may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grace {
    /// deprecated → disabled
    #[serde(default = "default_grace", with = "crate::time::duration")]
    pub deprecated: Duration,
    /// disabled → deregistered
    #[serde(default = "default_grace", with = "crate::time::duration")]
    pub disabled: Duration,
    /// deregistered → snapshots deleted
    #[serde(default, with = "crate::time::duration")]
    pub deregistered: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace { deprecated: default_grace(), disabled: default_grace(), deregistered: Duration::ZERO }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmatched {
    /// Each image that matches no family is a family of its own (so `keep >= 1` keeps it).
    #[default]
    OwnFamily,
    /// Never retire images that match no family.
    Keep,
}

impl Default for RetirePolicy {
    fn default() -> Self {
        RetirePolicy {
            keep: default_keep(),
            min_age: default_min_age(),
            keep_tags: Vec::new(),
            max_deletions: default_max_deletions(),
            lineage_tag: default_lineage_tag(),
            unmatched: Unmatched::default(),
            orphans: false,
            immediate: false,
            unshare_unused: false,
            grace: Grace::default(),
            channel_window: default_channel_window(),
        }
    }
}

/// Enough for a large estate's weekly run; a plan over it is more likely a wrong listing.
pub const DEFAULT_MAX_DELETIONS: usize = 500;

fn default_max_deletions() -> Option<usize> {
    Some(DEFAULT_MAX_DELETIONS)
}

fn default_keep() -> usize {
    3
}
fn default_min_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_grace() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_channel_window() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_lineage_tag() -> String {
    "SourceAMI".into()
}

/// What is wrong with an image's retirement tags, if anything: a stage amictl does not know or
/// a `retire-after` time that does not parse. Such an image is kept (never "due") and audited.
pub fn malformed_retire_tags(tags: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if let Some(s) = tags.get(STAGE_TAG) {
        if !matches!(s.as_str(), "deprecated" | "disabled" | "deregistered") {
            return Some(format!("tag {STAGE_TAG}={s:?} is not deprecated, disabled or deregistered"));
        }
    }
    if let Some(t) = tags.get(AFTER_TAG) {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return Some(format!("tag {AFTER_TAG}={t:?} is not an RFC 3339 time like 2026-12-06T00:00:00Z"));
        }
    }
    None
}

impl RetirePolicy {
    /// Whichever of the two is stricter, rule by rule: a saved plan's policy tightened by the
    /// current configuration and flags (or the other way round). A hand-edited plan file can
    /// therefore never loosen what amictl would do now.
    pub fn stricter(&self, other: &RetirePolicy) -> RetirePolicy {
        let mut keep_tags = self.keep_tags.clone();
        keep_tags.extend(other.keep_tags.iter().filter(|t| !self.keep_tags.contains(t)).cloned());
        let cap = match (self.max_deletions, other.max_deletions) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        RetirePolicy {
            keep: self.keep.max(other.keep),
            min_age: self.min_age.max(other.min_age),
            keep_tags,
            max_deletions: cap,
            lineage_tag: self.lineage_tag.clone(),
            unmatched: if self.unmatched == Unmatched::Keep || other.unmatched == Unmatched::Keep {
                Unmatched::Keep
            } else {
                Unmatched::OwnFamily
            },
            orphans: self.orphans && other.orphans,
            immediate: self.immediate && other.immediate,
            unshare_unused: self.unshare_unused && other.unshare_unused,
            grace: Grace {
                deprecated: self.grace.deprecated.max(other.grace.deprecated),
                disabled: self.grace.disabled.max(other.grace.disabled),
                deregistered: self.grace.deregistered.max(other.grace.deregistered),
            },
            channel_window: self.channel_window.max(other.channel_window),
        }
    }

    /// The keep tags in force, the built-in one included.
    pub fn all_keep_tags(&self) -> impl Iterator<Item = &str> {
        std::iter::once(BUILTIN_KEEP_TAG).chain(self.keep_tags.iter().map(String::as_str))
    }
}
