//! The executor on an in-memory estate: journal, re-checks, resume, failures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use amictl_core::apply::{apply, ApplyOptions};
use amictl_core::aws::collect::collect;
use amictl_core::aws::failure::FailureCloud;
use amictl_core::aws::memory::MemoryCloud;
use amictl_core::config::{Config, SharingScope};
use amictl_core::inventory::*;
use amictl_core::journal::{Journal, StepStatus};
use amictl_core::plan::{plan, ActionKind};
use amictl_core::policy::{RetirePolicy, STAGE_TAG};
use amictl_core::CloudErrorKind;
use chrono::Utc;

fn image(i: usize, days: i64) -> Image {
    Image {
        id: format!("ami-{i:08x}"),
        name: format!("web-1.{i}.0"),
        owner: "123456789012".into(),
        state: "available".into(),
        creation_date: Some(Utc::now() - chrono::Duration::days(days)),
        public: false,
        description: None,
        tags: BTreeMap::from([("Application".to_string(), "web".to_string())]),
        snapshot_ids: vec![format!("snap-{i:08x}")],
        deprecation_time: None,
    }
}

fn estate(n: usize) -> RegionInventory {
    let images: Vec<Image> = (0..n).map(|i| image(i, 400 - i as i64)).collect();
    let snapshots = images
        .iter()
        .map(|i| Snapshot {
            id: i.snapshot_ids[0].clone(),
            description: format!("Created by CreateImage(i-1) for {}", i.id),
            encrypted: false,
            volume_size_gib: 8,
            start_time: None,
            tags: BTreeMap::new(),
        })
        .collect();
    RegionInventory {
        account: "123456789012".into(),
        region: "us-east-1".into(),
        images,
        snapshots,
        ..Default::default()
    }
}

fn immediate() -> RetirePolicy {
    RetirePolicy { keep: 1, min_age: Duration::ZERO, immediate: true, ..RetirePolicy::default() }
}

fn opts() -> ApplyOptions {
    ApplyOptions { concurrency: 4, rate_per_sec: None, paced_per_sec: None, now: Utc::now() }
}

#[tokio::test]
async fn applies_deletes_owned_snapshots_and_journals_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.db")).unwrap();
    let cloud = [MemoryCloud::new(estate(5))];
    let inv = collect(&cloud, SharingScope::Unreferenced, 4).await;
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &immediate(), Utc::now());
    assert_eq!(p.count(ActionKind::Deregister), 4);
    let run = journal.start_run("retire", "{}").unwrap();
    let journal = Mutex::new(journal);
    let report = apply(&p, &cloud, &inv, &journal, run, &opts()).await.unwrap();
    assert!(report.all_done(), "{:?}", report.outcomes);
    let state = cloud[0].state();
    assert_eq!(state.images.len(), 1, "the newest stays");
    assert_eq!(
        state.snapshots.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [state.images[0].snapshot_ids[0].as_str()]
    );
    let steps = journal.lock().unwrap().steps(run).unwrap();
    assert_eq!(steps.len(), 8);
    assert!(steps.values().all(|s| s.status == StepStatus::Done && s.finished_at.is_some()));
}

#[tokio::test]
async fn a_change_after_planning_aborts_that_item_only() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.db")).unwrap();
    let cloud = [FailureCloud::new(MemoryCloud::new(estate(4)))];
    let inv = collect(&cloud, SharingScope::Unreferenced, 4).await;
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &immediate(), Utc::now());
    // Between planning and the call, someone launches an instance from ami-0 and tags ami-1.
    {
        let mem = &cloud[0].inner;
        let mut state = mem.state();
        state.instances.push(Instance {
            id: "i-new".into(),
            image_id: "ami-00000000".into(),
            state: "running".into(),
            name: None,
            launch_time: None,
            tags: BTreeMap::new(),
        });
        state.images[1].tags.insert("amictl:keep".into(), "".into());
        let replaced = MemoryCloud::new(state);
        let cloud2 = [FailureCloud::new(replaced)];
        let run = journal.start_run("retire", "{}").unwrap();
        let journal = Mutex::new(journal);
        let report = apply(&p, &cloud2, &inv, &journal, run, &opts()).await.unwrap();
        let by_target =
            |t: &str, k: ActionKind| report.outcomes.iter().find(|o| o.target == t && o.kind == k).unwrap().clone();
        let a0 = by_target("ami-00000000", ActionKind::Deregister);
        assert_eq!(a0.status, StepStatus::Aborted);
        assert!(a0.detail.contains("instance i-new (running)"), "{}", a0.detail);
        assert_eq!(by_target("snap-00000000", ActionKind::DeleteSnapshot).status, StepStatus::Skipped);
        assert_eq!(by_target("ami-00000001", ActionKind::Deregister).status, StepStatus::Aborted);
        assert_eq!(by_target("ami-00000002", ActionKind::Deregister).status, StepStatus::Done);
        let after = cloud2[0].inner.state();
        assert!(after.images.iter().any(|i| i.id == "ami-00000000"));
        assert!(after.snapshots.iter().any(|s| s.id == "snap-00000000"));
        assert!(!after.images.iter().any(|i| i.id == "ami-00000002"));
    }
}

#[tokio::test]
async fn a_failed_deregistration_keeps_its_snapshots_and_a_resume_finishes_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let cloud = [FailureCloud::new(MemoryCloud::new(estate(6))).fail("DeregisterImage", 2, CloudErrorKind::Throttled)];
    let inv = collect(&cloud, SharingScope::Unreferenced, 4).await;
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &immediate(), Utc::now());
    let journal = Mutex::new(Journal::open(&path).unwrap());
    let run = journal.lock().unwrap().start_run("retire", "{}").unwrap();
    let o = ApplyOptions { concurrency: 1, ..opts() };
    let first = apply(&p, &cloud, &inv, &journal, run, &o).await.unwrap();
    assert_eq!(first.count(StepStatus::Failed), 2);
    assert_eq!(first.count(StepStatus::Skipped), 2, "their snapshots wait");
    let calls_before = cloud[0].calls();

    // Resume the same run: only the failed and skipped steps run again.
    let inv = collect(&cloud, SharingScope::Unreferenced, 4).await;
    let second = apply(&p, &cloud, &inv, &journal, run, &o).await.unwrap();
    assert!(second.all_done(), "{:?}", second.outcomes);
    assert_eq!(second.outcomes.iter().filter(|o| o.earlier).count(), 6);
    let calls_after = cloud[0].calls();
    let n = |calls: &std::collections::BTreeMap<&str, u64>, op: &str| calls.get(op).copied().unwrap_or(0);
    assert_eq!(
        n(&calls_after, "DeregisterImage") - n(&calls_before, "DeregisterImage"),
        2,
        "done ones are not repeated"
    );
    // The two images' snapshots went with them (DeleteAssociatedSnapshots): no call of their own.
    assert_eq!(n(&calls_after, "DeleteSnapshot"), n(&calls_before, "DeleteSnapshot"));
    let state = cloud[0].inner.state();
    assert_eq!(state.images.len(), 1);
    let mapped: Vec<&String> = state.images.iter().flat_map(|i| &i.snapshot_ids).collect();
    assert!(state.snapshots.iter().all(|s| mapped.contains(&&s.id)), "no snapshot of a retired image is left");
}

#[tokio::test]
async fn staged_first_run_deprecates_with_tags() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Mutex::new(Journal::open(&dir.path().join("j.db")).unwrap());
    let cloud = [MemoryCloud::new(estate(3))];
    let inv = collect(&cloud, SharingScope::Unreferenced, 4).await;
    let pol = RetirePolicy { immediate: false, ..immediate() };
    let p = plan(&inv, &Config::default().family_rules().unwrap(), &pol, Utc::now());
    assert_eq!(p.count(ActionKind::Deprecate), 2);
    let run = journal.lock().unwrap().start_run("retire", "{}").unwrap();
    let report = apply(&p, &cloud, &inv, &journal, run, &opts()).await.unwrap();
    assert!(report.all_done());
    let state = cloud[0].state();
    let deprecated: Vec<&Image> =
        state.images.iter().filter(|i| i.tags.get(STAGE_TAG).map(String::as_str) == Some("deprecated")).collect();
    assert_eq!(deprecated.len(), 2);
    assert!(deprecated.iter().all(|i| i.deprecation_time.is_some()));
}
