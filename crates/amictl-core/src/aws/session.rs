//! From profile, endpoint, roles and regions to one [`SdkCloud`] per account and region.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_types::SdkConfig;

use super::pacing::{Pacer, DEFAULT_API_SHARE};
use super::sdk::{cloud_error, RequestCounter, SdkCloud};
use crate::config::AccountConfig;
use crate::error::{CloudErrorKind, Error};
use crate::inventory::{Scope, ScopeFailure};

/// What to connect to; every field mirrors an AWS CLI option or an `amictl.toml` setting.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// Empty: the profile's/environment's default region.
    pub regions: Vec<String>,
    /// Empty: the caller's own account.
    pub accounts: Vec<AccountConfig>,
    /// Also every active account of the organization, through this role.
    pub organization: Option<crate::config::OrganizationConfig>,
    /// How long one attempt of one call may take before it is abandoned (and retried).
    pub call_timeout: Duration,
    /// The share of each AWS API's per-account budget amictl takes (0 means the default,
    /// [`super::pacing::DEFAULT_API_SHARE`]).
    pub api_share: f64,
}

/// Attempts per call, the first included. Throttling is weather: a region that answers 30 % of
/// requests with RequestLimitExceeded still completes every call (0.3^10 fails one in 170,000).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// The SDK's standard retry: exponential backoff with full jitter, from 100 ms up to 5 s per
/// wait, so one call waits at most about 30 s in all. Not adaptive mode: its client-side rate
/// limiter slows every later call after a few throttles, and a run crawls.
fn retry_policy(attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts.max(1))
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// The SDK's retry quota for one client, refilled with time. The default quota (500 tokens,
/// 5 a throttled retry, refilled only by successful calls) is spent for good by a long run in
/// bad weather — 30 % of requests throttled drain it in about 600 requests — and the run then
/// gives up calls it could finish. Refilled at 10 tokens a second it never allows more than two
/// throttled retries a second once spent, however long the weather lasts.
pub(crate) fn retry_partition(service: &'static str) -> aws_smithy_runtime::client::retries::RetryPartition {
    use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
    let bucket = TokenBucket::builder().capacity(500).refill_rate(10.0).build();
    RetryPartition::custom(service).token_bucket(bucket).build()
}

/// Per attempt of a call: long enough for a 1,000-image page from a busy region, short enough
/// that a stalled connection cannot hang a cron run.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// One call, all its attempts and backoffs together, may take this many attempt timeouts: room
/// for a throttled call's retries (their waits add up to about 30 s at most), while an endpoint
/// that never answers fails after a minute by default, not after every attempt timed out.
const ATTEMPTS_PER_CALL_BUDGET: u32 = 3;

/// Clients for every requested account × region, sharing one request counter.
#[derive(Debug, Clone)]
pub struct Connection {
    pub clouds: Vec<SdkCloud>,
    pub counter: RequestCounter,
    /// The token buckets every client of this connection draws on.
    pub pacer: Pacer,
    /// Per account: the SDK config (home region) its clients were made from.
    pub accounts: Vec<(String, SdkConfig)>,
    /// Per account, in the same order: the caller's ARN (who made a change).
    pub callers: Vec<String>,
    /// Every region of each configured account whose role could not be assumed (or whose
    /// identity could not be read), with why: reported with the inventory's failures, so a
    /// destructive command refuses and nothing is silently skipped.
    pub unreachable: Vec<ScopeFailure>,
}

impl Connection {
    /// Adds the accounts that could not be reached to `inv`'s failures.
    pub fn report_unreachable(&self, inv: &mut crate::inventory::Inventory) {
        if self.unreachable.is_empty() {
            return;
        }
        inv.failures.extend(self.unreachable.iter().cloned());
        crate::usage::link_accounts(inv);
    }
}

/// What AWS said, without the SDK's layers around it: `AccessDenied: User … is not authorized …`.
fn short_reason(e: &Error) -> String {
    let text = e.to_string();
    let quoted = |key: &str| text.split(&format!("{key}: \"")).nth(1).and_then(|m| m.split('"').next());
    let code = match e {
        Error::Cloud(c) => c.code.as_deref().or_else(|| quoted("code")),
        _ => quoted("code"),
    };
    match (code, quoted("message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => text.clone(),
    }
}

/// The account id in a role ARN (`arn:aws:iam::210987654321:role/amictl-read`).
pub fn account_of_role(role_arn: &str) -> Option<&str> {
    role_arn.split(':').nth(4).filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// Every request counter of this process, for the summary `--verbose` prints at the end.
static COUNTERS: std::sync::Mutex<Vec<RequestCounter>> = std::sync::Mutex::new(Vec::new());

fn register(counter: &RequestCounter) {
    if let Ok(mut c) = COUNTERS.lock() {
        c.push(counter.clone());
    }
}

/// Requests sent and throttled answers by `Service.Operation`, over every connection this
/// process made.
pub fn requests_so_far() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for c in COUNTERS.lock().map(|c| c.clone()).unwrap_or_default() {
        for (k, n) in c.snapshot() {
            out.entry(k).or_default().0 += n;
        }
        for (k, n) in c.throttled() {
            out.entry(k).or_default().1 += n;
        }
    }
    out
}

/// Loads the base SDK config: profile, endpoint, region, the retry policy (unless the
/// environment chose a retry mode), a short connect timeout so a wrong endpoint fails fast.
pub async fn base_config(opts: &ConnectOptions, region: Option<&str>) -> SdkConfig {
    let call_timeout = if opts.call_timeout.is_zero() { DEFAULT_CALL_TIMEOUT } else { opts.call_timeout };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(call_timeout)
        .operation_attempt_timeout(call_timeout)
        .operation_timeout(call_timeout * ATTEMPTS_PER_CALL_BUDGET)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if std::env::var_os("AWS_RETRY_MODE").is_none() {
        let attempts =
            std::env::var("AWS_MAX_ATTEMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_ATTEMPTS);
        loader = loader.retry_config(retry_policy(attempts));
    }
    if let Some(p) = &opts.profile {
        // Like the AWS CLI, an explicit profile wins over credentials in the environment.
        let creds = aws_config::profile::ProfileFileCredentialsProvider::builder().profile_name(p).build();
        loader = loader.profile_name(p).credentials_provider(creds);
    }
    if let Some(u) = &opts.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    loader.load().await
}

/// Connects to every account and region in `opts`: checks the credentials (STS
/// GetCallerIdentity), checks that the regions exist and are enabled (EC2 DescribeRegions),
/// and makes the clients.
pub async fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
    connect_inner(opts).await.map_err(|e| e.located(&endpoint_label(opts)))
}

/// Where calls go, for errors about calls that got no answer.
pub fn endpoint_label(opts: &ConnectOptions) -> String {
    match &opts.endpoint_url {
        Some(u) => u.clone(),
        None => match opts.regions.as_slice() {
            [] => "the AWS endpoints of the default region".into(),
            [r] => format!("the AWS endpoints of {r}"),
            rs => format!("the AWS endpoints of {}", rs.join(", ")),
        },
    }
}

async fn connect_inner(opts: &ConnectOptions) -> Result<Connection, Error> {
    let counter = RequestCounter::default();
    register(&counter);
    let pacer = Pacer::new(if opts.api_share > 0.0 { opts.api_share } else { DEFAULT_API_SHARE });
    let base = base_config(opts, opts.regions.first().map(String::as_str)).await;
    let home = base.region().map(|r| r.to_string()).ok_or(Error::NoRegion)?;
    let regions = if opts.regions.is_empty() { vec![home.clone()] } else { dedup(&opts.regions) };

    let mut wanted = opts.accounts.clone();
    if let Some(org) = &opts.organization {
        for a in organization_accounts(&base, &counter, org).await? {
            // An account already configured (with whatever role) is read once.
            let id = account_of_role(&a.role_arn);
            if !wanted.iter().any(|w| w.role_arn == a.role_arn || (id.is_some() && account_of_role(&w.role_arn) == id))
            {
                wanted.push(a);
            }
        }
    }
    let opts = &ConnectOptions { accounts: wanted, ..opts.clone() };
    let mut configs = Vec::new();
    if opts.accounts.is_empty() {
        configs.push(base.clone());
    } else {
        for a in &opts.accounts {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(&a.role_arn).session_name("amictl");
            if let Some(id) = &a.external_id {
                b = b.external_id(id);
            }
            let provider = b.configure(&base).build().await;
            configs.push(
                base.to_builder()
                    .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
                    .build(),
            );
        }
    }

    let identities = futures::future::join_all(configs.iter().map(|c| account_of(c, &counter))).await;
    let mut accounts = Vec::new();
    let mut callers = Vec::new();
    let mut unreachable = Vec::new();
    for (n, (c, id)) in configs.into_iter().zip(identities).enumerate() {
        // One account of many that cannot be reached is reported, not fatal: the others are
        // read, and whatever changes the estate refuses.
        if let (Err(e), Some(a)) = (&id, opts.accounts.get(n).filter(|_| opts.accounts.len() > 1)) {
            let account = account_of_role(&a.role_arn).unwrap_or(&a.role_arn).to_string();
            let why = format!("cannot assume {}: {}", a.role_arn, short_reason(e));
            for r in &regions {
                unreachable.push(ScopeFailure {
                    scope: Scope { account: account.clone(), region: r.clone() },
                    error: why.clone(),
                });
            }
            continue;
        }
        let id = match (id, &opts.profile) {
            (Err(Error::Cloud(e)), Some(p)) if e.kind == CloudErrorKind::Credentials && e.code.is_none() => {
                return Err(Error::Other(format!(
                    "profile {p:?} gives no credentials: it is not in the shared config or credentials file \
                     (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), or holds no credentials ({})",
                    e.message
                )))
            }
            (id, _) => id?,
        };
        let (id, arn) = id;
        callers.push(arn);
        accounts.push((id, c));
    }
    let Some((first_account, first)) = accounts.first() else {
        let why: Vec<&str> = unreachable.iter().map(|f| f.error.as_str()).collect();
        return Err(Error::Other(format!("no account could be reached: {}", why.join("; "))));
    };
    check_regions(first, first_account, &counter, &pacer, &regions, opts.endpoint_url.is_some()).await?;

    let mut clouds = Vec::new();
    for (account, config) in &accounts {
        for r in &regions {
            let scoped = config.to_builder().region(Region::new(r.clone())).build();
            clouds.push(SdkCloud::new(
                Scope { account: account.clone(), region: r.clone() },
                &scoped,
                &counter,
                &pacer,
            ));
        }
    }
    Ok(Connection { clouds, counter, pacer, accounts, callers, unreachable })
}

/// Every active account of the organization (AWS Organizations ListAccounts, every page), as
/// accounts to read through `org.role_name`. A listing that fails is an error: reading only the
/// accounts one happens to know would pass for the whole organization.
async fn organization_accounts(
    config: &SdkConfig,
    counter: &RequestCounter,
    org: &crate::config::OrganizationConfig,
) -> Result<Vec<AccountConfig>, Error> {
    let client = aws_sdk_organizations::Client::from_conf(
        aws_sdk_organizations::config::Builder::from(config).interceptor(counter.clone()).build(),
    );
    let mut pages = client.list_accounts().into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| cloud_error("organizations:ListAccounts", e))?;
        for a in page.accounts() {
            let active = a.state().map(|s| s.as_str() == "ACTIVE").unwrap_or_else(|| {
                #[allow(deprecated)]
                a.status().is_none_or(|s| s.as_str() == "ACTIVE")
            });
            let Some(id) = a.id().filter(|_| active) else { continue };
            out.push(AccountConfig {
                name: a.name().map(str::to_string),
                role_arn: format!("arn:aws:iam::{id}:role/{}", org.role_name),
                external_id: org.external_id.clone(),
            });
        }
    }
    Ok(out)
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in v {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// The account id and caller ARN behind `config`'s credentials.
async fn account_of(config: &SdkConfig, counter: &RequestCounter) -> Result<(String, String), Error> {
    let sts =
        aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(config).interceptor(counter.clone()).build());
    let who = sts.get_caller_identity().send().await.map_err(|e| cloud_error("sts:GetCallerIdentity", e))?;
    let account = who
        .account()
        .map(str::to_string)
        .ok_or_else(|| Error::Other("GetCallerIdentity returned no account".into()))?;
    Ok((account, who.arn().unwrap_or("unknown").to_string()))
}

/// Where DescribeRegions is asked when the first requested region does not answer.
const FALLBACK_REGION: &str = "us-east-1";

async fn check_regions(
    config: &SdkConfig,
    account: &str,
    counter: &RequestCounter,
    pacer: &Pacer,
    regions: &[String],
    custom_endpoint: bool,
) -> Result<(), Error> {
    // Asked in the first requested region, then in a region that always exists: a bogus
    // region name has no endpoint (AWS) or is refused (emulator), and the answer to "which
    // regions exist" must come from somewhere that works.
    let mut candidates = vec![config.region().map(|r| r.to_string()).unwrap_or_else(|| FALLBACK_REGION.into())];
    if candidates[0] != FALLBACK_REGION {
        candidates.push(FALLBACK_REGION.into());
    }
    let mut first_error = None;
    let mut known = None;
    for region in &candidates {
        let scoped = config.to_builder().region(Region::new(region.clone())).build();
        // Paced like every other EC2 request.
        let scope = Scope { account: account.to_string(), region: region.clone() };
        let ec2 = SdkCloud::new(scope, &scoped, counter, pacer).ec2;
        match ec2.describe_regions().all_regions(true).send().await {
            Ok(out) => {
                known = Some(out);
                break;
            }
            Err(e) => {
                let e = cloud_error("ec2:DescribeRegions", e);
                if matches!(e.kind, CloudErrorKind::Credentials | CloudErrorKind::Permission) {
                    return Err(e.into());
                }
                first_error.get_or_insert((region.clone(), e));
            }
        }
    }
    let Some(known) = known else {
        let (region, e) = first_error.expect("at least one candidate was tried");
        if e.kind == CloudErrorKind::Unreachable && !custom_endpoint {
            return Err(Error::UnknownRegion {
                region,
                known: format!("its EC2 endpoint cannot be reached ({})", e.message),
            });
        }
        return Err(e.into());
    };
    let names: Vec<(&str, &str)> = known
        .regions()
        .iter()
        .filter_map(|r| Some((r.region_name()?, r.opt_in_status().unwrap_or("opt-in-not-required"))))
        .collect();
    for r in regions {
        match names.iter().find(|(n, _)| n == r) {
            None => {
                let mut list: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                list.sort();
                return Err(Error::UnknownRegion {
                    region: r.clone(),
                    known: format!("EC2 knows {}", list.join(", ")),
                });
            }
            Some((_, "not-opted-in")) => {
                return Err(Error::UnknownRegion {
                    region: r.clone(),
                    known: "the region is not enabled for this account (enable it in the account settings)".into(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}
