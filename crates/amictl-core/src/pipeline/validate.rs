//! `amictl validate AMI`: a throw-away validator from the image, the configured checks
//! (commands through SSM, EC2 status checks, an HTTP check from where amictl runs), the verdict
//! tagged on the image (`amictl:validation=passed|failed`, `amictl:validated-at`), and the
//! validator terminated however the run ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, Machine, Machines};
use crate::catalog::VALIDATION_TAG;
use crate::engine::{poll, Look, Progress, Run, SLOW_POLL};
use crate::error::Error;
use crate::pipeline::{command, ephemeral};

pub const VALIDATED_AT_TAG: &str = "amictl:validated-at";

/// An HTTP check from where amictl runs (`[validate.http]`, or `--http-url` and friends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// May use `{private_ip}`, `{public_ip}` and `{instance_id}`.
    pub url: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// A substring the body must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    #[serde(default = "default_http_timeout", with = "crate::time::duration")]
    pub timeout: Duration,
    /// Attempts after the first, a few seconds apart (the service may still be starting).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_status() -> u16 {
    200
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    5
}

/// What a validation checks (`[validate]` in amictl.toml, or flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Shell commands run on the validator through SSM; each must exit 0.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Whether EC2's system and instance status checks must pass.
    #[serde(default = "yes")]
    pub status_checks: bool,
    #[serde(default)]
    pub http: Option<HttpCheck>,
}

fn yes() -> bool {
    true
}

impl Default for Checks {
    fn default() -> Self {
        Checks { commands: vec![], status_checks: true, http: None }
    }
}

impl Checks {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && !self.status_checks && self.http.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateRequest {
    pub image_id: String,
    pub checks: Checks,
    pub instances: ephemeral::InstanceSettings,
    #[serde(with = "crate::time::duration")]
    pub command_timeout: Duration,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `command`, `status-checks` or `http`.
    pub kind: String,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub image_id: String,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    pub validator: Option<String>,
    pub run_id: i64,
    pub swept: Vec<(String, String)>,
}

/// `url` with `{placeholder}`s filled from the instance; an unknown or unset placeholder is an
/// error that names it.
pub fn render_url(url: &str, machine: &Machine) -> Result<String, String> {
    let values = ephemeral::placeholders(machine);
    let mut out = String::new();
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').ok_or_else(|| format!("unclosed {{ in {url:?}"))? + start;
        let key = &rest[start + 1..end];
        let value = values.get(key).ok_or_else(|| match key {
            "private_ip" | "public_ip" => format!("{} has no {key} for {url:?}", machine.instance_id),
            _ => format!("unknown placeholder {{{key}}} in {url:?} (known: private_ip, public_ip, instance_id)"),
        })?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Refuses checks that cannot work before anything is launched.
pub fn check_request(req: &ValidateRequest) -> Result<(), Error> {
    if req.checks.is_empty() {
        return Err(Error::Usage(
            "nothing to validate: give --check-command, --http-url or status checks (or [validate] in amictl.toml)"
                .into(),
        ));
    }
    if let Some(h) = &req.checks.http {
        let probe = Machine {
            instance_id: "i-0".into(),
            image_id: String::new(),
            state: "running".into(),
            private_ip: Some("10.0.0.1".into()),
            public_ip: Some("203.0.113.1".into()),
            launch_time: None,
            tags: Default::default(),
        };
        let url = render_url(&h.url, &probe).map_err(Error::Usage)?;
        reqwest::Url::parse(&url)
            .map_err(|e| Error::Usage(format!("--http-url {:?} is not a URL: {e}", h.url)))
            .and_then(|u| match u.scheme() {
                "http" | "https" => Ok(()),
                s => Err(Error::Usage(format!("--http-url {:?}: scheme {s} is neither http nor https", h.url))),
            })?;
    }
    Ok(())
}

/// Validates one image.
pub async fn validate<C: Cloud + Machines>(
    cloud: &C,
    journal: crate::journal::Journal,
    req: &ValidateRequest,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<Validation, Error> {
    check_request(req)?;
    let image = ephemeral::launchable_image(cloud, &req.image_id).await?;
    let request = serde_json::to_string(req).unwrap_or_default();
    let validator = std::sync::Mutex::new(None);
    let work = async |run: &Run| {
        let machine =
            ephemeral::launch(cloud, run, ephemeral::Role::Validator, &image.id, &req.instances, progress).await?;
        *validator.lock().unwrap() = Some(machine.instance_id.clone());
        let checks = run_checks(cloud, run, req, &machine, progress).await?;
        let verdict = if checks.iter().all(|c| c.passed) { "passed" } else { "failed" };
        let tags = [
            (VALIDATION_TAG.to_string(), verdict.to_string()),
            (VALIDATED_AT_TAG.to_string(), crate::time::rfc3339(now)),
        ];
        let tag = async { Ok(cloud.tag(std::slice::from_ref(&image.id), &tags).await?) };
        run.step("record-verdict", progress, tag, |_| format!("{} {VALIDATION_TAG}={verdict}", image.id)).await?;
        Ok(checks)
    };
    let done = ephemeral::run_launching(cloud, journal, "validate", &request, &req.instances, now, work).await?;
    Ok(Validation {
        image_id: image.id,
        passed: done.result.iter().all(|c| c.passed),
        checks: done.result,
        validator: validator.into_inner().unwrap(),
        run_id: done.run_id,
        swept: done.swept,
    })
}

/// Every configured check, in order: status checks, commands, HTTP. A check that fails is a
/// result; one that cannot be carried out (SSM never registers, the URL cannot be reached)
/// is an error.
async fn run_checks<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &ValidateRequest,
    machine: &Machine,
    progress: &dyn Progress,
) -> Result<Vec<CheckResult>, Error> {
    let id = &machine.instance_id;
    let mut results = Vec::new();
    if req.checks.status_checks {
        let wait = status_checks(cloud, id, req.instances.boot_timeout, progress);
        results.push(run.step("status-checks", progress, wait, |r: &CheckResult| r.detail.clone()).await?);
    }
    if !req.checks.commands.is_empty() {
        let ssm = ephemeral::wait_managed(cloud, id, req.instances.ssm_timeout, progress);
        run.step("wait-validator-ssm", progress, ssm, |_| format!("{id} is managed by Systems Manager")).await?;
    }
    for (n, c) in req.checks.commands.iter().enumerate() {
        let check = command_check(cloud, id, c, req.command_timeout, run.id(), progress);
        results.push(
            run.step(&format!("check-command-{}", n + 1), progress, check, |r: &CheckResult| r.detail.clone()).await?,
        );
    }
    if let Some(h) = &req.checks.http {
        let check = http_check(h, machine, progress);
        results.push(run.step("check-http", progress, check, |r: &CheckResult| r.detail.clone()).await?);
    }
    Ok(results)
}

/// Waits until both status checks are `ok` (passed) or one is `impaired` (failed).
async fn status_checks<M: Machines>(
    m: &M,
    id: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<CheckResult, Error> {
    let result = |passed: bool, detail: String| CheckResult {
        kind: "status-checks".into(),
        name: "EC2 status checks".into(),
        passed,
        detail,
    };
    let look = async || {
        let s = m.status_checks(id).await?;
        if let Some(s) = &s {
            if s.system == "ok" && s.instance == "ok" {
                return Ok(Look::Done(result(true, format!("{id}: system ok, instance ok"))));
            }
            if s.system == "impaired" || s.instance == "impaired" {
                return Ok(Look::Done(result(false, format!("{id}: system {}, instance {}", s.system, s.instance))));
            }
        }
        Ok(Look::NotYet(s, format!("status checks of {id}")))
    };
    Ok(poll(timeout, SLOW_POLL, progress, look).await?.unwrap_or_else(|s| {
        let now = s
            .map(|s| format!("system {}, instance {}", s.system, s.instance))
            .unwrap_or_else(|| "no status yet".into());
        result(false, format!("{id}: status checks not ok within {} ({now})", crate::time::format_duration(timeout)))
    }))
}

async fn command_check<M: Machines>(
    m: &M,
    id: &str,
    script: &str,
    timeout: Duration,
    run_id: i64,
    progress: &dyn Progress,
) -> Result<CheckResult, Error> {
    let shell = command::shell(vec![script.to_string()], timeout);
    let request = command::on_instance(id, shell, format!("amictl validate, run {run_id}"));
    let outcome = command::run(m, &request, timeout + request.delivery_timeout, progress).await?;
    let passed = outcome.all_succeeded();
    let detail = if passed { format!("{id}: exit 0") } else { outcome.failure_summary() };
    Ok(CheckResult { kind: "command".into(), name: script.to_string(), passed, detail })
}

/// GET the URL, up to `retries` more times while it cannot be reached or answers wrong. A URL
/// never reached is an error (exit 2: nothing was checked), a wrong answer a failed check.
async fn http_check(h: &HttpCheck, machine: &Machine, progress: &dyn Progress) -> Result<CheckResult, Error> {
    let url = render_url(&h.url, machine).map_err(Error::Usage)?;
    let client = reqwest::Client::builder()
        .timeout(h.timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| Error::Other(format!("cannot make an HTTP client: {e}")))?;
    let mut last_wrong: Option<String> = None;
    let mut last_unreachable = String::new();
    for attempt in 0..=h.retries {
        if attempt > 0 {
            progress.note(&format!("GET {url}, attempt {}", attempt + 1));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        match get(&client, &url).await {
            Ok((status, body)) => match judge(h, status, &body) {
                Ok(()) => return Ok(http_result(&url, true, format!("GET {url}: {status}"))),
                Err(why) => last_wrong = Some(why),
            },
            Err(e) => last_unreachable = e,
        }
    }
    match last_wrong {
        Some(why) => Ok(http_result(&url, false, format!("GET {url}: {why}"))),
        None => Err(Error::Other(format!(
            "cannot reach the check URL {url} after {} attempts: {last_unreachable}",
            h.retries + 1
        ))),
    }
}

fn http_result(url: &str, passed: bool, detail: String) -> CheckResult {
    CheckResult { kind: "http".into(), name: url.to_string(), passed, detail }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| one_line(&e))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| one_line(&e))?;
    Ok((status, body))
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// Whether an answer is the expected one; why not otherwise.
pub fn judge(h: &HttpCheck, status: u16, body: &str) -> Result<(), String> {
    if status != h.expect_status {
        return Err(format!("status {status}, expected {}", h.expect_status));
    }
    if let Some(want) = &h.expect_body {
        if !body.contains(want.as_str()) {
            let start: String = body.chars().take(80).collect();
            return Err(format!("status {status} but the body lacks {want:?} (it begins {start:?})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            instance_id: "i-9".into(),
            image_id: "ami-1".into(),
            state: "running".into(),
            private_ip: Some("10.1.2.3".into()),
            public_ip: None,
            launch_time: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn urls_are_filled_from_the_instance() {
        assert_eq!(
            render_url("http://{private_ip}:8080/health?i={instance_id}", &machine()).unwrap(),
            "http://10.1.2.3:8080/health?i=i-9"
        );
        assert_eq!(render_url("http://127.0.0.1:9/x", &machine()).unwrap(), "http://127.0.0.1:9/x");
        assert!(render_url("http://{public_ip}/", &machine()).unwrap_err().contains("no public_ip"));
        assert!(render_url("http://{host}/", &machine()).unwrap_err().contains("unknown placeholder {host}"));
        assert!(render_url("http://{private_ip/", &machine()).is_err());
    }

    #[test]
    fn an_answer_must_have_the_status_and_the_body() {
        let h = HttpCheck {
            url: "http://x/".into(),
            expect_status: 200,
            expect_body: Some("ok".into()),
            timeout: Duration::from_secs(1),
            retries: 0,
        };
        assert!(judge(&h, 200, "all ok").is_ok());
        assert!(judge(&h, 503, "ok").unwrap_err().contains("status 503, expected 200"));
        assert!(judge(&h, 200, "degraded").unwrap_err().contains("lacks \"ok\""));
    }
}
