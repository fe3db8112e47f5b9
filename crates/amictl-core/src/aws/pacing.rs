//! Client-side pacing: one token bucket per account, Region and action, shared by every task of
//! a run, refilled below the rate AWS documents for that bucket ([`super::api_limits`]).
//!
//! EC2 throttles each API per account and Region with a token bucket. A run that sends 16
//! launch-permission reads at a time drains the bucket at once, and every `RequestLimitExceeded`
//! on the way is a request taken from the budget the account's autoscalers, deploy tools and
//! consoles draw on. So amictl waits for its own token before each request: with its share of the
//! budget (`--api-share`, default [`DEFAULT_API_SHARE`]) a run of any size sends nothing EC2 would
//! throttle when nothing else uses the account. When something else does and a request is
//! throttled anyway, the whole bucket pauses (everyone's next request waits, not only the
//! throttled one's retry), for longer at each throttle in a row; the SDK's retries stay for
//! surprises.
//!
//! Where it sits: every EC2 and CloudTrail client of an [`super::sdk::SdkCloud`] sends through a
//! [`PacedHttpClient`], so every request — each page of a listing, each retry — waits for its
//! token; no call can go around it. [`Pacing`], an interceptor on the same clients, names the
//! request's action for the HTTP client and tells the pacer about throttled answers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::api_limits;
use crate::inventory::Scope;

/// The share of each bucket amictl takes unless told otherwise: half, so that the account's
/// autoscalers, deploy tools and consoles keep the other half of every API's budget while a
/// large retirement runs.
pub const DEFAULT_API_SHARE: f64 = 0.5;

/// The smallest `--api-share`: below it a plan of a few thousand images would take hours, and a
/// request's wait for its token would come near the call timeout.
pub const MIN_API_SHARE: f64 = 0.1;

/// Refill this fraction of AWS's rate (times the share): always below it, so AWS's bucket (full
/// at 50–1,000 tokens when nobody else draws on it) gains a little every second and a few
/// requests bunched by the network never catch it empty.
const HEADROOM: f64 = 0.97;

/// The pause of a bucket after a throttled answer starts at the time EC2 takes to refill a few
/// tokens of it (at least this), and doubles at each throttle in a row up to [`MAX_PAUSE`]: a
/// lone throttle (someone else's burst) costs a blink, throttling that persists backs the whole
/// run off within a few answers.
const MIN_PAUSE: Duration = Duration::from_millis(100);
const TOKENS_PER_PAUSE: f64 = 4.0;
const MAX_PAUSE: Duration = Duration::from_secs(8);

/// Which bucket a request draws on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub account: String,
    pub region: String,
    /// The SDK's service name (`EC2`, `CloudTrail`).
    pub service: String,
    pub action: String,
}

/// The pace of one bucket: amictl's refill rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub per_sec: f64,
    pub burst: u32,
}

/// amictl's pace for a bucket AWS documents as `b`, with `share` of it: `share` of its refill
/// (times [`HEADROOM`]), and a burst of what ten seconds at that pace leave of the share (at
/// least one request).
///
/// Why these numbers never meet an empty bucket when amictl is alone: over any `t` seconds
/// amictl sends at most `burst + per_sec·t` requests, and a full bucket of capacity `C`
/// refilled `R` a second (once a second) serves `C + R·⌊t⌋`. With `per_sec ≤ R` that holds
/// for every `t` when `burst ≤ C − per_sec`, which the burst is held to. And over any ten
/// seconds amictl sends at most `share·R·10`: its share of the refill, the burst included.
pub fn pace(b: api_limits::Bucket, share: f64) -> Pace {
    let share = share.clamp(MIN_API_SHARE, 1.0);
    let per_sec = b.refill_per_sec * share * HEADROOM;
    let slack = 10.0 * b.refill_per_sec * share * (1.0 - HEADROOM);
    let burst = slack.min(b.capacity - per_sec).floor().max(1.0) as u32;
    Pace { per_sec, burst }
}

struct Bucket {
    limiter: DefaultDirectRateLimiter,
    /// The first pause after a throttle.
    first_pause: Duration,
    /// Nobody sends before this instant; how many throttles in a row led to it.
    paused: Mutex<(Instant, u32)>,
}

/// The buckets of one run (clones share them).
#[derive(Clone)]
pub struct Pacer {
    share: f64,
    buckets: Arc<Mutex<HashMap<BucketKey, Arc<Bucket>>>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("share", &self.share).finish_non_exhaustive()
    }
}

impl Pacer {
    /// `share` of each bucket (from [`MIN_API_SHARE`] to 1).
    pub fn new(share: f64) -> Pacer {
        Pacer { share: share.clamp(MIN_API_SHARE, 1.0), buckets: Arc::default() }
    }

    pub fn share(&self) -> f64 {
        self.share
    }

    /// amictl's pace for an action, or None when it is not paced.
    pub fn pace_of(&self, service: &str, action: &str) -> Option<Pace> {
        api_limits::bucket(service, action).map(|b| pace(b, self.share))
    }

    fn bucket(&self, key: &BucketKey) -> Option<Arc<Bucket>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get(key) {
            return Some(b.clone());
        }
        let p = self.pace_of(&key.service, &key.action)?;
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / p.per_sec))?
            .allow_burst(NonZeroU32::new(p.burst).unwrap_or(NonZeroU32::MIN));
        let refill = api_limits::bucket(&key.service, &key.action).map(|b| b.refill_per_sec).unwrap_or(1.0);
        let first_pause = Duration::from_secs_f64(TOKENS_PER_PAUSE / refill.max(0.01)).max(MIN_PAUSE);
        let b = Arc::new(Bucket {
            limiter: RateLimiter::direct(quota),
            first_pause,
            paused: Mutex::new((Instant::now(), 0)),
        });
        buckets.insert(key.clone(), b.clone());
        Some(b)
    }

    /// Waits until a request of `key` may go.
    pub async fn ready(&self, key: &BucketKey) {
        let Some(b) = self.bucket(key) else { return };
        loop {
            let until = b.paused.lock().map(|p| p.0).unwrap_or_else(|p| p.into_inner().0);
            let now = Instant::now();
            if until <= now {
                break;
            }
            tokio::time::sleep(until - now).await;
        }
        b.limiter.until_ready().await;
    }

    /// What AWS answered a request of `key`: a throttle pauses the bucket for everyone.
    pub fn answered(&self, key: &BucketKey, throttled: bool) {
        let Some(b) = self.bucket(key) else { return };
        let mut p = b.paused.lock().unwrap_or_else(|p| p.into_inner());
        if !throttled {
            p.1 = 0;
            return;
        }
        let pause = b.first_pause.saturating_mul(1 << p.1.min(7)).min(MAX_PAUSE);
        p.0 = p.0.max(Instant::now() + pause);
        p.1 = p.1.saturating_add(1);
        tracing::debug!(
            "{} {} throttled in {}/{}: every request of it waits {pause:?}",
            key.service,
            key.action,
            key.account,
            key.region
        );
    }
}

/// The request's bucket, carried from the interceptor to the HTTP client.
#[derive(Debug, Clone)]
struct Ticket(BucketKey);

/// The interceptor of a paced client: names each request's bucket and reports throttled answers.
#[derive(Debug, Clone)]
pub struct Pacing {
    pacer: Pacer,
    scope: Scope,
}

impl Pacing {
    pub fn new(pacer: &Pacer, scope: &Scope) -> Pacing {
        Pacing { pacer: pacer.clone(), scope: scope.clone() }
    }

    fn key(&self, cfg: &ConfigBag) -> Option<BucketKey> {
        let m = cfg.load::<Metadata>()?;
        Some(BucketKey {
            account: self.scope.account.clone(),
            region: self.scope.region.clone(),
            service: m.service().to_string(),
            action: m.name().to_string(),
        })
    }

    /// `client` with every request paced.
    pub fn http_client(&self, client: SharedHttpClient) -> PacedHttpClient {
        PacedHttpClient { inner: client, pacer: self.pacer.clone() }
    }
}

impl Intercept for Pacing {
    fn name(&self) -> &'static str {
        "amictl::Pacing"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(key) = self.key(cfg) {
            ctx.request_mut().add_extension(Ticket(key));
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(key) = self.key(cfg) {
            let response = ctx.response();
            let throttled = is_throttled(response.status().as_u16(), response.body().bytes().unwrap_or_default());
            self.pacer.answered(&key, throttled);
        }
        Ok(())
    }
}

/// The throttling error codes of the services amictl calls (EC2, the query and JSON protocols).
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

/// Whether an answer is a throttling error: an HTTP error whose body names one of their codes.
pub fn is_throttled(status: u16, body: &[u8]) -> bool {
    if status < 400 {
        return false;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    THROTTLING_CODES.iter().any(|c| {
        text.contains(&format!("<Code>{c}</Code>"))
            || text.contains(&format!("\"{c}\""))
            || text.contains(&format!("#{c}\""))
    })
}

/// An HTTP client that waits for the request's token before sending it.
#[derive(Debug, Clone)]
pub struct PacedHttpClient {
    inner: SharedHttpClient,
    pacer: Pacer,
}

impl HttpClient for PacedHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector {
            inner: self.inner.http_connector(settings, components),
            pacer: self.pacer.clone(),
        })
    }
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    pacer: Pacer,
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let ticket = request.extension::<Ticket>().cloned();
        let (inner, pacer) = (self.inner.clone(), self.pacer.clone());
        HttpConnectorFuture::new(async move {
            if let Some(Ticket(key)) = ticket {
                pacer.ready(&key).await;
            }
            inner.call(request).await
        })
    }
}

/// The HTTP client the SDK would use by default (the one `config` names, else the SDK's
/// default HTTPS client), to wrap.
pub fn base_http_client(config: &aws_types::SdkConfig) -> Option<SharedHttpClient> {
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
    if let Some(c) = config.http_client() {
        return Some(c);
    }
    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(
        aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
    )?;
    plugin.runtime_components(&RuntimeComponentsBuilder::new("amictl")).http_client()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_stays_below_the_bucket() {
        for (capacity, refill) in
            [(100.0, 20.0), (50.0, 10.0), (100.0, 5.0), (50.0, 5.0), (5.0, 2.0), (2.0, 2.0), (1.0, 0.1)]
        {
            for share in [0.1, 0.5, 1.0] {
                let b = api_limits::Bucket { capacity, refill_per_sec: refill };
                let p = pace(b, share);
                assert!(p.per_sec < refill * share + 1e-9, "{b:?} {share}: {p:?}");
                // Alone, from a full bucket: burst + per_sec·t ≤ C + R·⌊t⌋ for every t.
                assert!(p.burst as f64 <= capacity - p.per_sec + 1e-9 || p.burst == 1, "{b:?} {share}: {p:?}");
                // Within the share of the refill over ten seconds, the burst included.
                assert!(
                    p.burst as f64 + 10.0 * p.per_sec <= 10.0 * refill * share + 1e-9 || p.burst == 1,
                    "{b:?} {share}: {p:?}"
                );
            }
        }
        assert_eq!(pace(api_limits::Bucket { capacity: 100.0, refill_per_sec: 20.0 }, 1.0).burst, 6);
        assert_eq!(pace(api_limits::Bucket { capacity: 100.0, refill_per_sec: 20.0 }, 0.5).burst, 3);
    }

    #[test]
    fn throttling_answers_are_recognised() {
        let ec2 = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>";
        assert!(is_throttled(503, ec2));
        assert!(is_throttled(400, br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
        assert!(!is_throttled(400, br#"{"__type":"AccessDeniedException"}"#));
        assert!(!is_throttled(200, ec2));
    }

    #[tokio::test]
    async fn a_bucket_lets_its_burst_through_and_a_throttle_pauses_it() {
        let pacer = Pacer::new(1.0);
        let key = BucketKey {
            account: "1".into(),
            region: "r".into(),
            service: "CloudTrail".into(),
            action: "LookupEvents".into(),
        };
        pacer.ready(&key).await; // LookupEvents' burst is one request
        assert!(pacer.bucket(&key).unwrap().limiter.check().is_err(), "the next one waits for a token");
        pacer.answered(&key, true);
        assert!(pacer.bucket(&key).unwrap().paused.lock().unwrap().0 > Instant::now(), "a throttle pauses the bucket");
        assert!(pacer.bucket(&BucketKey { service: "SSM".into(), ..key }).is_none(), "SSM is not paced");
    }
}
