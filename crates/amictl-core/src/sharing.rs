//! Sharing evidence that costs only what changed: launch-permission readings kept in the journal
//! with the time they were read, and validated by CloudTrail's event history on the next run.
//!
//! No list call returns who may launch an image: a plan of 10,000 AMIs needs thousands of
//! `DescribeImageAttribute` calls, at EC2's 20 a second. Sharing changes through two calls only,
//! `ModifyImageAttribute` and `ResetImageAttribute`, and CloudTrail's event history records every
//! one of them for 90 days, with no trail to set up. So a reading taken by an earlier run still
//! stands when the event history, looked up from the oldest reading (minus [`MARGIN`] for clocks
//! that differ) to now, names no change to that image. Read again are: the images an event names,
//! those never read, those read within the delivery delay (CloudTrail delivers an event minutes
//! after the call — [`DEFAULT_DELIVERY_DELAY`], `[sharing] delivery_delay` — so a change right
//! after a reading may not be in the history yet), and those read longer ago than the history
//! goes back.
//!
//! What a cached reading is never used for: the re-check right before a change. Whatever changes
//! the estate reads every image it is about to change right before the call, as
//! [`crate::apply`] does; [`Evidence`] only serves plans, audits and usage, where sharing can only
//! keep an image or add a finding.
//!
//! Without `cloudtrail:LookupEvents` permission, or when the event history cannot be read, the
//! scope's images are read afresh, and that is said once per run (not an error).
//!
//! createVolumePermission (who may build volumes from a snapshot) is read only in the re-check
//! right before a snapshot is deleted, which no cache may stand in for, so nothing of it is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::aws::Cloud;
use crate::error::Error;
use crate::inventory::{LaunchPermission, Scope};
use crate::journal::Journal;

/// CloudTrail "typically delivers logs within an average of about 5 minutes of an API call. This
/// time is not guaranteed" (CloudTrail User Guide): 15 minutes is three times that.
pub const DEFAULT_DELIVERY_DELAY: Duration = Duration::from_secs(15 * 60);

/// Events are looked up from this long before the oldest reading: amictl's clock and
/// CloudTrail's (which timestamps the call) may differ.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

/// "CloudTrail event history provides a viewable, searchable, downloadable, and immutable record
/// of the past 90 days of recorded management events in an AWS Region" (CloudTrail User Guide).
pub const HISTORY: Duration = Duration::from_secs(90 * 86_400);

/// The events that change who may launch an image.
pub const IMAGE_SHARING_EVENTS: [&str; 2] = ["ModifyImageAttribute", "ResetImageAttribute"];

/// One image's launch permissions, as read at `read_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub image_id: String,
    pub permissions: Vec<LaunchPermission>,
    pub read_at: DateTime<Utc>,
}

/// What the event history says changed since a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Images named by a sharing event.
    pub images: BTreeSet<String>,
    /// An event named no image: every reading is doubtful.
    pub unnamed: bool,
}

/// How old the sharing evidence of one scope is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Age {
    pub scope: Scope,
    /// Readings taken from the journal, and read now.
    pub cached: usize,
    pub read: usize,
    /// The oldest reading in use (cached or not).
    pub as_of: Option<DateTime<Utc>>,
    /// The event history was looked up to here (the lookup's time less the delivery delay);
    /// None: no cached reading was used.
    pub validated_to: Option<DateTime<Utc>>,
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |t: DateTime<Utc>| crate::time::rfc3339(t);
        match (self.as_of, self.validated_to) {
            (Some(a), Some(v)) => write!(
                f,
                "{}: sharing as of {}, validated by event history to {} ({} reading(s) from the journal, {} read now)",
                self.scope,
                t(a),
                t(v),
                self.cached,
                self.read
            ),
            (Some(a), None) => write!(f, "{}: sharing as of {} ({} read now)", self.scope, t(a), self.read),
            (None, _) => write!(f, "{}: no sharing read", self.scope),
        }
    }
}

enum State {
    /// The journal's readings, not looked at yet.
    Stored(Vec<Reading>),
    /// Validated: the readings that stand, up to when.
    Checked { standing: HashMap<String, Reading>, validated_to: Option<DateTime<Utc>> },
}

struct Inner {
    delivery_delay: Duration,
    /// Whether readings are kept at all (a journal, and the cache not switched off).
    keep: bool,
    scopes: Mutex<HashMap<Scope, State>>,
    /// Readings taken by this run, to store.
    fresh: Mutex<HashMap<Scope, Vec<Reading>>>,
    /// Used, by scope: (cached, read now, oldest reading).
    used: Mutex<HashMap<Scope, (usize, usize, Option<DateTime<Utc>>)>>,
    /// Scopes whose event history could not be read, with why.
    unreadable: Mutex<BTreeMap<Scope, String>>,
}

/// The sharing evidence of one run: the journal's readings, validated scope by scope on first
/// use, and the readings this run takes. Clones share it.
#[derive(Clone)]
pub struct Evidence(Arc<Inner>);

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence").field("keep", &self.0.keep).finish_non_exhaustive()
    }
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Evidence {
    /// No cache: everything is read afresh and nothing is kept.
    pub fn fresh_only() -> Evidence {
        Evidence::with(false, DEFAULT_DELIVERY_DELAY, HashMap::new())
    }

    /// The readings `journal` keeps for `scopes`.
    pub fn load(journal: &Journal, scopes: &[Scope], delivery_delay: Duration) -> Result<Evidence, Error> {
        let mut stored = HashMap::new();
        for s in scopes {
            stored.insert(s.clone(), State::Stored(journal.sharing_readings(s)?));
        }
        Ok(Evidence::with(true, delivery_delay, stored))
    }

    fn with(keep: bool, delivery_delay: Duration, scopes: HashMap<Scope, State>) -> Evidence {
        Evidence(Arc::new(Inner {
            delivery_delay,
            keep,
            scopes: Mutex::new(scopes),
            fresh: Mutex::default(),
            used: Mutex::default(),
            unreadable: Mutex::default(),
        }))
    }

    /// The readings that stand for `wanted` images of `c`'s scope; the rest must be read. The
    /// scope's event history is looked up the first time one of its stored readings is wanted.
    pub async fn standing<C: Cloud>(&self, c: &C, wanted: &[String]) -> HashMap<String, Reading> {
        let scope = c.scope().clone();
        let stored = {
            let mut scopes = self.0.scopes.lock().unwrap_or_else(|p| p.into_inner());
            match scopes.get_mut(&scope) {
                Some(State::Stored(readings)) if readings.iter().any(|r| wanted.contains(&r.image_id)) => {
                    std::mem::take(readings)
                }
                Some(State::Checked { standing, .. }) => {
                    return wanted.iter().filter_map(|id| standing.get(id).map(|r| (id.clone(), r.clone()))).collect()
                }
                _ => return HashMap::new(),
            }
        };
        let (standing, validated_to) = self.validate(c, stored).await;
        let out = wanted.iter().filter_map(|id| standing.get(id).map(|r| (id.clone(), r.clone()))).collect();
        self.0
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope, State::Checked { standing, validated_to });
        out
    }

    /// The stored readings that the event history confirms.
    async fn validate<C: Cloud>(
        &self,
        c: &C,
        stored: Vec<Reading>,
    ) -> (HashMap<String, Reading>, Option<DateTime<Utc>>) {
        let now = Utc::now();
        let recent = now - std_to_chrono(self.0.delivery_delay);
        // Older than the history reaches (with the margin): nothing can confirm them.
        let horizon = now - std_to_chrono(HISTORY) + std_to_chrono(MARGIN) * 2;
        let candidates: Vec<Reading> =
            stored.into_iter().filter(|r| r.read_at <= recent && r.read_at >= horizon && r.read_at <= now).collect();
        let Some(oldest) = candidates.iter().map(|r| r.read_at).min() else { return (HashMap::new(), None) };
        let since = oldest - std_to_chrono(MARGIN);
        match c.sharing_changes(since, now).await {
            Ok(changes) if changes.unnamed => (HashMap::new(), None),
            Ok(changes) => {
                let standing = candidates
                    .into_iter()
                    .filter(|r| !changes.images.contains(&r.image_id))
                    .map(|r| (r.image_id.clone(), r))
                    .collect();
                (standing, Some(recent))
            }
            Err(e) => {
                let why = format!("{}: {}", e.code.as_deref().unwrap_or("error"), e.message);
                self.0.unreadable.lock().unwrap_or_else(|p| p.into_inner()).insert(c.scope().clone(), why);
                (HashMap::new(), None)
            }
        }
    }

    /// Notes what a scope used: `cached` readings from the journal, `read` now, the oldest.
    pub fn used(&self, scope: &Scope, cached: &HashMap<String, Reading>, read: usize, oldest: Option<DateTime<Utc>>) {
        let cached_oldest = cached.values().map(|r| r.read_at).min();
        let oldest = match (oldest, cached_oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut used = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        let e = used.entry(scope.clone()).or_default();
        e.0 += cached.len();
        e.1 += read;
        e.2 = match (e.2, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Readings this run took, to keep.
    pub fn record(&self, scope: &Scope, readings: Vec<Reading>) {
        if !self.0.keep || readings.is_empty() {
            return;
        }
        self.0.fresh.lock().unwrap_or_else(|p| p.into_inner()).entry(scope.clone()).or_default().extend(readings);
    }

    /// Stores this run's readings in `journal`.
    pub fn save(&self, journal: &Journal) -> Result<(), Error> {
        let fresh = std::mem::take(&mut *self.0.fresh.lock().unwrap_or_else(|p| p.into_inner()));
        for (scope, readings) in fresh {
            journal.record_sharing(&scope, &readings)?;
        }
        Ok(())
    }

    /// How old each scope's sharing evidence is, for the scopes that used any.
    pub fn ages(&self) -> Vec<Age> {
        let used = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        let scopes = self.0.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Age> = used
            .iter()
            .map(|(scope, (cached, read, as_of))| {
                let validated_to = match scopes.get(scope) {
                    Some(State::Checked { validated_to, .. }) if *cached > 0 => *validated_to,
                    _ => None,
                };
                Age { scope: scope.clone(), cached: *cached, read: *read, as_of: *as_of, validated_to }
            })
            .collect();
        out.sort_by(|a, b| a.scope.cmp(&b.scope));
        out
    }

    /// The scopes whose event history could not be read, with why: their sharing was read afresh.
    pub fn unreadable(&self) -> Vec<(Scope, String)> {
        let u = self.0.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        u.iter().map(|(s, w)| (s.clone(), w.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_says_how_old_and_how_validated() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let scope = Scope { account: "111111111111".into(), region: "us-east-1".into() };
        let age = Age {
            scope: scope.clone(),
            cached: 3,
            read: 2,
            as_of: Some(t("2026-11-29T14:05:00Z")),
            validated_to: Some(t("2026-11-29T14:47:00Z")),
        };
        assert_eq!(
            age.to_string(),
            "111111111111/us-east-1: sharing as of 2026-11-29T14:05:00Z, validated by event history to \
             2026-11-29T14:47:00Z (3 reading(s) from the journal, 2 read now)"
        );
    }
}
