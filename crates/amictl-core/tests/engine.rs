//! The run engine, on an in-memory cloud: capture and channel changes are journaled runs that
//! end `completed` or `failed`, one at a time per scope.

use std::collections::BTreeMap;

use amictl_core::aws::failure::FailureCloud;
use amictl_core::aws::memory::MemoryCloud;
use amictl_core::aws::Cloud;
use amictl_core::catalog::Bump;
use amictl_core::config::Config;
use amictl_core::engine::{Engine, Quiet};
use amictl_core::inventory::*;
use amictl_core::journal::Journal;
use amictl_core::pipeline::catalog::{capture, promote, CaptureRequest};
use amictl_core::CloudErrorKind;
use chrono::Utc;

fn estate() -> RegionInventory {
    RegionInventory {
        account: "123456789012".into(),
        region: "us-east-1".into(),
        instances: vec![Instance {
            id: "i-1".into(),
            image_id: "ami-base".into(),
            state: "running".into(),
            name: None,
            launch_time: None,
            tags: BTreeMap::new(),
        }],
        ..Default::default()
    }
}

fn request(version: Option<&str>) -> CaptureRequest {
    CaptureRequest {
        instance_id: "i-1".into(),
        family: "web".into(),
        version: version.map(str::to_string),
        bump: Bump::Patch,
        no_reboot: true,
        timeout: std::time::Duration::from_secs(1),
    }
}

fn journal(dir: &tempfile::TempDir) -> Journal {
    Journal::open(&dir.path().join("j.db")).unwrap()
}

#[tokio::test]
async fn a_capture_is_a_journaled_run_and_a_retry_finds_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Config::default().family_rules().unwrap();
    let cloud = FailureCloud::new(MemoryCloud::new(estate()));
    let first = capture(&cloud, journal(&dir), &request(Some("1.0.0")), &rules, &Quiet, Utc::now()).await.unwrap();
    assert_eq!(first.name, "web-1.0.0");
    assert!(!first.reused);
    let runs = journal(&dir).runs(10).unwrap();
    assert_eq!((runs[0].status.as_str(), runs[0].actions, runs[0].done), ("completed", 3, 3));

    let again = capture(&cloud, journal(&dir), &request(Some("1.0.0")), &rules, &Quiet, Utc::now()).await.unwrap();
    assert!(again.reused);
    assert_eq!(again.image_id, first.image_id);
    assert_eq!(cloud.calls().get("CreateImage"), Some(&1), "no second image");
}

#[tokio::test]
async fn a_capture_that_fails_is_marked_failed_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Config::default().family_rules().unwrap();
    let cloud = FailureCloud::new(MemoryCloud::new(estate())).fail("CreateImage", 1, CloudErrorKind::Service);
    let e = capture(&cloud, journal(&dir), &request(None), &rules, &Quiet, Utc::now()).await.unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    let runs = journal(&dir).runs(10).unwrap();
    assert_eq!(runs[0].status, "failed");
    assert_eq!(runs[0].failed, 1);
}

#[tokio::test]
async fn a_channel_change_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Config::default().family_rules().unwrap();
    let cloud = MemoryCloud::new(estate());
    let img = capture(&cloud, journal(&dir), &request(None), &rules, &Quiet, Utc::now()).await.unwrap();
    let verdicts = [("amictl:validation".into(), "passed".into()), ("amictl:scan".into(), "passed".into())];
    cloud.tag(&[img.image_id.clone()], &verdicts).await.unwrap();
    let change = promote(
        &cloud,
        journal(&dir),
        "web",
        "prod",
        &img.image_id,
        &rules,
        "amictl:scan",
        &["passed".to_string()],
        false,
        "me",
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(change.version, 1);
    let runs = journal(&dir).runs(10).unwrap();
    assert_eq!((runs[0].command.as_str(), runs[0].status.as_str(), runs[0].done), ("channel promote", "completed", 1));
}

#[test]
fn the_engine_takes_one_run_at_a_time_per_scope() {
    let dir = tempfile::tempdir().unwrap();
    let scopes = [("123456789012".to_string(), "us-east-1".to_string())];
    let begin = |cmd| {
        Engine::new(journal(&dir), cmd)
            .guard(&[], false)
            .unwrap()
            .confirm(|| Ok(()))
            .unwrap()
            .begin("{}", &scopes, None)
    };
    let (first, _) = begin("retire").unwrap();
    let e = begin("retire").err().expect("the scope is held");
    assert!(e.to_string().contains(&format!("held by run {}", first.id())), "{e}");
    first.finish("completed").unwrap();
    let (third, dead) = begin("retire").unwrap();
    assert!(dead.is_empty());
    third.finish("completed").unwrap();
    let statuses: Vec<String> = journal(&dir).runs(10).unwrap().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["completed", "refused", "completed"]);
}

#[test]
fn guards_refuse_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::new(journal(&dir), "retire").guard(&["0 instances".into()], false).err().unwrap();
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(Engine::new(journal(&dir), "retire").guard(&["0 instances".into()], true).is_ok());
}

#[tokio::test]
async fn poll_returns_what_is_done_or_the_last_state_when_time_runs_out() {
    use amictl_core::engine::{poll, Look};
    use std::time::Duration;
    let mut looks = 0;
    let done = poll(Duration::from_secs(5), (Duration::from_millis(1), Duration::from_millis(2)), &Quiet, async || {
        looks += 1;
        Ok(if looks == 3 { Look::Done(looks) } else { Look::NotYet(looks, String::new()) })
    })
    .await
    .unwrap();
    assert_eq!(done, Ok(3));
    let late: Result<(), i32> =
        poll(Duration::from_millis(20), (Duration::from_millis(5), Duration::from_millis(5)), &Quiet, async || {
            Ok(Look::NotYet(7, String::new()))
        })
        .await
        .unwrap();
    assert_eq!(late, Err(7));
}
