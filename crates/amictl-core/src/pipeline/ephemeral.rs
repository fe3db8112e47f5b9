//! The one ephemeral-instance helper every pipeline uses: launch a tagged, IMDSv2-only
//! instance with an idempotency token, wait for it (and for Systems Manager), and always
//! terminate it. A run killed before it could clean up leaves instances behind; the next
//! launching run [`sweep`]s them, by tag, after saying so.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, LaunchSpec, Machine, Machines};
use crate::engine::{poll, Look, Progress, Run, SLOW_POLL};
use crate::error::Error;
use crate::inventory::Image;
use crate::journal::Journal;

/// The run that launched an instance (its journal id).
pub const RUN_TAG: &str = "amictl:run-id";
/// `builder`, `validator` or `scanner`.
pub const ROLE_TAG: &str = "amictl:role";
/// `host/pid` of the amictl process that launched it: a sweep knows whether that is alive.
pub const OWNER_TAG: &str = "amictl:owner";
/// Instances whose owner cannot be checked (another machine) are swept once this old.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Builder,
    Validator,
    Scanner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Builder => "builder",
            Role::Validator => "validator",
            Role::Scanner => "scanner",
        }
    }
}

/// How pipeline instances are launched (`[instances]` in amictl.toml, or flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Name or ARN; it must let the SSM agent register (AmazonSSMManagedInstanceCore).
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// How long an instance may take to run and pass its status checks.
    #[serde(default = "default_boot_timeout", with = "crate::time::duration")]
    pub boot_timeout: Duration,
    /// How long its SSM agent may take to register.
    #[serde(default = "default_ssm_timeout", with = "crate::time::duration")]
    pub ssm_timeout: Duration,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        InstanceSettings {
            instance_type: default_instance_type(),
            subnet_id: None,
            security_group_ids: vec![],
            instance_profile: None,
            boot_timeout: default_boot_timeout(),
            ssm_timeout: default_ssm_timeout(),
        }
    }
}

fn default_instance_type() -> String {
    "t3.micro".into()
}
fn default_boot_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_ssm_timeout() -> Duration {
    Duration::from_secs(600)
}

/// This process, as the owner tag writes it: `HOST:PIDNS/PID`. The pid namespace tells two
/// containers with one host name apart: a process of another namespace cannot be checked.
pub fn this_owner() -> String {
    format!("{}/{}", this_host(), std::process::id())
}

/// `HOST:PIDNS`, what a sweep compares to know it can check an owner's pid.
fn this_host() -> String {
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| p.to_str().map(|s| s.trim_start_matches("pid:[").trim_end_matches(']').to_string()))
        .unwrap_or_else(|| "0".into());
    format!("{}:{ns}", crate::host::name())
}

/// Unique to this process: run ids are per journal, so two machines (or two CI jobs with fresh
/// journals) both have a run 1; the nonce keeps their tokens apart.
pub fn process_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mixed = (nanos as u64) ^ ((std::process::id() as u64) << 32) ^ (nanos >> 64) as u64;
        format!("{:016x}", mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    })
}

/// Refuses settings the region cannot launch, before anything is launched.
pub async fn check_settings<M: Machines>(m: &M, s: &InstanceSettings, region: &str) -> Result<(), Error> {
    if !m.instance_type_offered(&s.instance_type).await? {
        return Err(Error::Usage(format!(
            "instance type {} is not offered in {region}: choose another with --instance-type",
            s.instance_type
        )));
    }
    Ok(())
}

/// Launches a `role` instance of `image_id` for `run` and waits until it runs (journaled as
/// `launch-<role>` and `wait-<role>-running`). The client token makes a retried launch in the
/// same run return the same instance.
pub async fn launch<M: Machines>(
    m: &M,
    run: &Run,
    role: Role,
    image_id: &str,
    s: &InstanceSettings,
    progress: &dyn Progress,
) -> Result<Machine, Error> {
    let owner = this_owner();
    let spec = LaunchSpec {
        image_id: image_id.into(),
        instance_type: s.instance_type.clone(),
        subnet_id: s.subnet_id.clone(),
        security_group_ids: s.security_group_ids.clone(),
        instance_profile: s.instance_profile.clone(),
        client_token: client_token(run.id(), role),
        tags: vec![
            ("Name".into(), format!("amictl-{}-run-{}", role.as_str(), run.id())),
            (RUN_TAG.into(), run.id().to_string()),
            (ROLE_TAG.into(), role.as_str().into()),
            (OWNER_TAG.into(), owner),
        ],
    };
    let step = format!("launch-{}", role.as_str());
    let id = run
        .step(&step, progress, async { Ok(m.launch(&spec).await?) }, |id| format!("launched {id} from {image_id}"))
        .await?;
    let wait = async { Ok(m.wait_running(&id, s.boot_timeout).await?) };
    run.step(&format!("wait-{}-running", role.as_str()), progress, wait, |m: &Machine| {
        format!("{} is {}", m.instance_id, m.state)
    })
    .await
}

/// RunInstances takes a token of at most 64 ASCII characters, unique per request: the same for
/// a retry in this run, different for every other run anywhere.
fn client_token(run_id: i64, role: Role) -> String {
    let mut token = format!("amictl-{run_id}-{}-{}", role.as_str(), process_nonce());
    token.truncate(64);
    token
}

/// Waits until Systems Manager reports `instance_id` online, polling with backoff; an agent that
/// never registers is an error that says what to check, not a wait forever.
pub async fn wait_managed<M: Machines>(
    m: &M,
    instance_id: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let look = async || {
        Ok(if m.managed(&[instance_id.to_string()]).await?.iter().any(|i| i == instance_id) {
            Look::Done(())
        } else {
            Look::NotYet((), format!("waiting for the SSM agent of {instance_id}"))
        })
    };
    poll(timeout, SLOW_POLL, progress, look).await?.map_err(|()| {
        Error::Other(format!(
            "{instance_id} never registered with Systems Manager within {}: give it an instance profile that \
             allows SSM (AmazonSSMManagedInstanceCore, --instance-profile) and a route to the SSM endpoints",
            crate::time::format_duration(timeout)
        ))
    })
}

/// Terminates every instance `run` launched: those its launch steps recorded, and those tagged
/// with it from this process (so one whose launch answer never arrived is found too). Returns
/// what it terminated.
pub async fn terminate_run<M: Machines>(m: &M, run: &Run) -> Result<Vec<String>, Error> {
    let owner = this_owner();
    let mut ids: Vec<String> = launched_in(run)?;
    ids.extend(
        m.instances_tagged(RUN_TAG)
            .await?
            .into_iter()
            .filter(|i| i.tags.get(RUN_TAG) == Some(&run.id().to_string()) && i.tags.get(OWNER_TAG) == Some(&owner))
            .map(|i| i.instance_id),
    );
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        m.terminate(&ids).await?;
    }
    Ok(ids)
}

/// The instances the run's `launch-*` steps recorded (a listing may not show an instance
/// launched a moment ago).
fn launched_in(run: &Run) -> Result<Vec<String>, Error> {
    let steps = run.journal().lock().unwrap().steps(run.id())?;
    Ok(steps
        .iter()
        .filter(|(id, s)| id.starts_with("launch-") && s.status == crate::journal::StepStatus::Done)
        .filter_map(|(_, s)| {
            s.detail.as_deref()?.strip_prefix("launched ")?.split_whitespace().next().map(String::from)
        })
        .collect())
}

/// Why a leftover pipeline instance is to be terminated, or `None` to leave it (its run may be
/// alive). Pure: `alive` says whether a process of this host lives.
pub fn leftover_reason(
    i: &Machine,
    this_host: &str,
    alive: &dyn Fn(i64) -> bool,
    now: DateTime<Utc>,
) -> Option<String> {
    let run = i.tags.get(RUN_TAG).map(String::as_str).unwrap_or("?");
    let role = i.tags.get(ROLE_TAG).map(String::as_str).unwrap_or("pipeline");
    let owner = i.tags.get(OWNER_TAG)?;
    let (host, pid) = owner.rsplit_once('/')?;
    let pid: i64 = pid.parse().ok()?;
    if host == this_host && !alive(pid) {
        return Some(format!("{role} of run {run}, whose amictl process ({owner}) is gone"));
    }
    // Another host or pid namespace cannot be checked; a pid may have been reused: a day is
    // longer than any pipeline step waits.
    let age = i.launch_time.map(|t| now - t).and_then(|d| d.to_std().ok())?;
    (age > ABANDONED_AFTER).then(|| {
        format!("{role} of run {run} ({owner}), running for {} (over a day)", crate::time::format_duration(age))
    })
}

/// Finds instances that killed runs left behind and terminates them; returns `(id, why)` for
/// each. Called by every command that launches, before it launches.
pub async fn sweep<M: Machines>(m: &M, now: DateTime<Utc>) -> Result<Vec<(String, String)>, Error> {
    let host = this_host();
    let me = std::process::id() as i64;
    let alive = |pid: i64| pid == me || crate::host::process_alive(pid);
    let leftovers: Vec<(String, String)> = m
        .instances_tagged(RUN_TAG)
        .await?
        .iter()
        .filter_map(|i| leftover_reason(i, &host, &alive, now).map(|why| (i.instance_id.clone(), why)))
        .collect();
    for (id, why) in &leftovers {
        tracing::warn!("terminating {id}: {why}");
    }
    let ids: Vec<String> = leftovers.iter().map(|(id, _)| id.clone()).collect();
    if !ids.is_empty() {
        m.terminate(&ids).await?;
    }
    Ok(leftovers)
}

/// The image a throw-away instance is to be launched from: it must exist and be available.
pub async fn launchable_image<C: Cloud>(cloud: &C, image_id: &str) -> Result<Image, Error> {
    let image = cloud
        .image_now(image_id)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("AMI {image_id}"), looked_in: cloud.scope().to_string() })?;
    if image.state != "available" {
        return Err(Error::Usage(format!("{} is {}, not available: nothing to launch", image.id, image.state)));
    }
    Ok(image)
}

/// What a launching run did besides its work: the leftovers it swept first.
pub struct Launched<T> {
    pub run_id: i64,
    pub result: T,
    pub swept: Vec<(String, String)>,
}

/// Runs `work` as one journaled run of `command` that launches instances: the settings are
/// checked and leftovers of killed runs swept first, and every instance the run launched is
/// terminated when it ends (the step `cleanup`), however it ends.
pub async fn run_launching<C: Cloud + Machines, T>(
    cloud: &C,
    journal: Journal,
    command: &str,
    request_json: &str,
    settings: &InstanceSettings,
    now: DateTime<Utc>,
    work: impl AsyncFnOnce(&Run) -> Result<T, Error>,
) -> Result<Launched<T>, Error> {
    let scope = cloud.scope().clone();
    check_settings(cloud, settings, &scope.region).await?;
    let swept = sweep(cloud, now).await?;
    let cleanup = async |run: &Run| {
        let ids = terminate_run(cloud, run).await?;
        Ok(if ids.is_empty() { "nothing to terminate".into() } else { format!("terminated {}", ids.join(", ")) })
    };
    let scopes = [(scope.account, scope.region)];
    let (run_id, result) =
        crate::engine::run_steps_with_cleanup(journal, command, request_json, &scopes, work, cleanup).await?;
    Ok(Launched { run_id, result, swept })
}

/// The placeholders an HTTP check's URL may use, from the instance it checks.
pub fn placeholders(machine: &Machine) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::from([("instance_id", machine.instance_id.clone())]);
    if let Some(ip) = &machine.private_ip {
        out.insert("private_ip", ip.clone());
    }
    if let Some(ip) = &machine.public_ip {
        out.insert("public_ip", ip.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftover(owner: &str, hours_ago: i64) -> Machine {
        let now = crate::fixtures::now();
        Machine {
            instance_id: "i-1".into(),
            image_id: "ami-1".into(),
            state: "running".into(),
            private_ip: None,
            public_ip: None,
            launch_time: Some(now - chrono::Duration::hours(hours_ago)),
            tags: BTreeMap::from([
                (RUN_TAG.to_string(), "7".to_string()),
                (ROLE_TAG.to_string(), "builder".to_string()),
                (OWNER_TAG.to_string(), owner.to_string()),
            ]),
        }
    }

    #[test]
    fn a_leftover_of_a_dead_local_process_is_swept_a_live_one_is_not() {
        let now = crate::fixtures::now();
        let dead = |_: i64| false;
        let alive = |_: i64| true;
        let why = leftover_reason(&leftover("box:1/42", 0), "box:1", &dead, now).unwrap();
        assert!(why.contains("run 7") && why.contains("box:1/42"), "{why}");
        assert_eq!(leftover_reason(&leftover("box:1/42", 0), "box:1", &alive, now), None);
        // Another pid namespace on the same host cannot be checked: only its age counts.
        assert_eq!(leftover_reason(&leftover("box:2/42", 2), "box:1", &dead, now), None);
        // A live pid on this host for over a day is a reused pid, not a pipeline.
        assert!(leftover_reason(&leftover("box:1/42", 25), "box:1", &alive, now).is_some());
    }

    #[test]
    fn another_hosts_leftover_is_swept_only_after_a_day() {
        let now = crate::fixtures::now();
        let dead = |_: i64| false;
        assert_eq!(leftover_reason(&leftover("other/42", 2), "box", &dead, now), None);
        assert!(leftover_reason(&leftover("other/42", 25), "box", &dead, now).is_some());
    }

    #[test]
    fn an_instance_without_an_owner_tag_is_never_swept() {
        let mut i = leftover("box/1", 100);
        i.tags.remove(OWNER_TAG);
        assert_eq!(leftover_reason(&i, "box", &|_| false, crate::fixtures::now()), None);
    }

    #[test]
    fn client_tokens_fit_the_api_limit() {
        let t = client_token(12, Role::Scanner);
        assert!(t.len() <= 64 && t.starts_with("amictl-12-scanner-"), "{t}");
        assert_eq!(t, client_token(12, Role::Scanner), "a retry in this process sends the same token");
    }
}
