//! `amictl.toml`: regions, accounts, image families, compliance thresholds.
//!
//! Every setting has a command-line override; the CLI builds a [`Config`] from the file and
//! then applies its flags on top.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::family::{ExplicitFamily, FamilyRules};
use crate::report::Severity;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Regions to scan; empty means the profile's/environment's default region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Named profile from the shared AWS config files.
    pub profile: Option<String>,
    /// Endpoint override for every service (like `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// How long one attempt of one AWS call may take (`20s`); a stalled connection fails then.
    /// 0 (the default of an empty config) means the built-in 20s.
    #[serde(default = "default_call_timeout", with = "crate::time::duration")]
    pub call_timeout: Duration,
    /// Accounts reached by assuming a role; empty means the caller's own account only.
    #[serde(default, rename = "accounts")]
    pub accounts: Vec<AccountConfig>,
    /// Accounts found in AWS Organizations, besides `[[accounts]]`.
    #[serde(default)]
    pub organization: Option<OrganizationConfig>,
    #[serde(default)]
    pub families: FamiliesConfig,
    #[serde(default)]
    pub compliance: ComplianceConfig,
    #[serde(default)]
    pub retire: crate::policy::RetirePolicy,
    /// How bake, validate and scan launch their throw-away instances.
    #[serde(default)]
    pub instances: crate::pipeline::ephemeral::InstanceSettings,
    #[serde(default)]
    pub bake: BakeConfig,
    /// What `amictl validate` checks.
    #[serde(default)]
    pub validate: crate::pipeline::validate::Checks,
    #[serde(default)]
    pub scan: ScanConfig,
    #[serde(default)]
    pub patch: PatchConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The journal database (default: see [`crate::journal::default_path`]).
    pub journal: Option<PathBuf>,
    /// The share of each AWS API's per-account, per-Region budget amictl takes, from 0.1 to 1
    /// (default [`crate::aws::pacing::DEFAULT_API_SHARE`]): see [`crate::aws::pacing`].
    pub api_share: Option<f64>,
    /// How sharing readings are kept between runs.
    #[serde(default)]
    pub sharing: SharingConfig,
    /// Whether `[retire]` was configured (in the file, or by flags): only then does it tighten
    /// a saved plan's policy at apply time; built-in defaults are nobody's decision.
    #[serde(skip)]
    pub retire_configured: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// A label for reports; defaults to the account id.
    pub name: Option<String>,
    pub role_arn: String,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamiliesConfig {
    /// Tag keys whose value names an image's family, tried in order.
    #[serde(default = "default_tag_keys")]
    pub tag_keys: Vec<String>,
    /// Fallback: a regex over the AMI name; its `family` group (or the whole match) is the family.
    #[serde(default = "default_name_pattern")]
    pub name_pattern: Option<String>,
    /// Explicit families, tried before the rules above.
    #[serde(default, rename = "family")]
    pub explicit: Vec<FamilyConfig>,
}

impl Default for FamiliesConfig {
    fn default() -> Self {
        FamiliesConfig { tag_keys: default_tag_keys(), name_pattern: default_name_pattern(), explicit: vec![] }
    }
}

fn default_call_timeout() -> Duration {
    crate::aws::session::DEFAULT_CALL_TIMEOUT
}

fn default_tag_keys() -> Vec<String> {
    vec!["Application".into()]
}

fn default_name_pattern() -> Option<String> {
    Some(r"^(?P<family>.+?)-v?[0-9]".into())
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    pub name: String,
    /// `KEY=VALUE`: images carrying this tag belong to the family.
    pub tag: Option<String>,
    /// A regex over the AMI name.
    pub name_pattern: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Images older than this are findings (`90d`, `12w`, `2160h`).
    #[serde(default = "default_max_age", with = "crate::time::duration")]
    pub max_age: Duration,
    /// The tag a security scan writes its verdict to.
    #[serde(default = "default_scan_tag")]
    pub scan_tag: String,
    /// Values of the scan tag that mean the image passed.
    #[serde(default = "default_scan_passed")]
    pub scan_passed_values: Vec<String>,
    /// Accounts images may be shared with.
    #[serde(default)]
    pub allowed_accounts: Vec<String>,
    /// `audit` exits 1 when a finding is at or above this severity.
    #[serde(default = "default_fail_on")]
    pub fail_on: Severity,
    /// Which images `audit` fetches launch permissions of (one DescribeImageAttribute call
    /// each, the only per-image call): `all` (default), so sharing outside the allow-list is
    /// found on every image, or `unreferenced`, only those nothing else keeps in use (for them
    /// sharing decides whether they are in use).
    #[serde(default = "default_sharing")]
    pub check_sharing: SharingScope,
    /// Running instances whose last successful patch (`amictl patch`, or their launch) is older
    /// than this are findings; unset: not checked.
    #[serde(default, with = "crate::time::opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_patch_age: Option<Duration>,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            max_age: default_max_age(),
            scan_tag: default_scan_tag(),
            scan_passed_values: default_scan_passed(),
            allowed_accounts: vec![],
            fail_on: default_fail_on(),
            check_sharing: default_sharing(),
            max_patch_age: None,
        }
    }
}

/// Which images' launch permissions are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingScope {
    /// Only images nothing else keeps in use: the least that makes the in-use answer complete.
    Unreferenced,
    All,
    /// None now: the caller fetches them for exactly the images it needs (the images a plan
    /// would retire), or the re-check right before a change does. Not a configuration value.
    #[serde(skip)]
    Deferred,
}

fn default_sharing() -> SharingScope {
    SharingScope::All
}

fn default_max_age() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_scan_tag() -> String {
    "amictl:scan".into()
}
fn default_scan_passed() -> Vec<String> {
    vec!["passed".into()]
}
fn default_fail_on() -> Severity {
    Severity::High
}

/// `[bake]`: how builders are patched unless flags say otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BakeConfig {
    /// `security-updates` (default) or `all-updates`.
    #[serde(default = "default_patch_preset")]
    pub patch_preset: crate::presets::PatchPreset,
    /// Shell commands instead of the preset.
    #[serde(default)]
    pub patch_commands: Vec<String>,
    /// An SSM document instead of the preset (e.g. `AWS-RunPatchBaseline`).
    #[serde(default)]
    pub patch_document: Option<String>,
    /// How long one SSM command (patch, check, scan) may run.
    #[serde(default = "default_command_timeout", with = "crate::time::duration")]
    pub command_timeout: Duration,
    /// How long a new image may take to become available.
    #[serde(default = "default_image_timeout", with = "crate::time::duration")]
    pub image_timeout: Duration,
}

impl Default for BakeConfig {
    fn default() -> Self {
        BakeConfig {
            patch_preset: default_patch_preset(),
            patch_commands: vec![],
            patch_document: None,
            command_timeout: default_command_timeout(),
            image_timeout: default_image_timeout(),
        }
    }
}

fn default_patch_preset() -> crate::presets::PatchPreset {
    crate::presets::PatchPreset::SecurityUpdates
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_image_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// `[organization]`: every active account of the organization, read through one role name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    /// The role to assume in each account (`arn:aws:iam::ACCOUNT:role/ROLE_NAME`).
    pub role_name: String,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// `[alerts]`: where SNS notifications go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The SNS topic told of pipeline starts, ends and failures and of `audit --notify`.
    #[serde(default)]
    pub topic_arn: Option<String>,
    /// The lowest audit severity `audit --notify` tells about.
    #[serde(default = "default_alert_severity")]
    pub min_severity: Severity,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { topic_arn: None, min_severity: default_alert_severity() }
    }
}

fn default_alert_severity() -> Severity {
    Severity::High
}

/// `[sharing]`: launch-permission and createVolumePermission readings kept in the journal and
/// validated by CloudTrail's event history (see [`crate::sharing`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharingConfig {
    /// Keep readings in the journal and read again only what the event history says changed.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// How long CloudTrail may take to deliver an event to its event history: readings younger
    /// than this are read again (default 15m).
    #[serde(default = "default_delivery_delay", with = "crate::time::duration")]
    pub delivery_delay: Duration,
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig { cache: true, delivery_delay: default_delivery_delay() }
    }
}

fn default_true() -> bool {
    true
}

fn default_delivery_delay() -> Duration {
    crate::sharing::DEFAULT_DELIVERY_DELAY
}

/// `[metrics]`: where `amictl metrics publish` and `amictl dashboard` put things.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_dashboard")]
    pub dashboard: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { namespace: default_namespace(), dashboard: default_dashboard() }
    }
}

fn default_namespace() -> String {
    crate::metrics::DEFAULT_NAMESPACE.into()
}
fn default_dashboard() -> String {
    "amictl".into()
}

/// `[patch]`: rate control of `amictl patch`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// `security-updates` (default) or `all-updates`.
    #[serde(default = "default_patch_preset")]
    pub preset: crate::presets::PatchPreset,
    /// `N` or `N%`.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: String,
    /// `N` or `N%`.
    #[serde(default = "default_max_errors")]
    pub max_errors: String,
    #[serde(default = "default_min_healthy")]
    pub min_healthy: u8,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig {
            preset: default_patch_preset(),
            max_concurrency: default_max_concurrency(),
            max_errors: default_max_errors(),
            min_healthy: default_min_healthy(),
        }
    }
}

fn default_max_concurrency() -> String {
    "10%".into()
}
fn default_max_errors() -> String {
    "5%".into()
}
fn default_min_healthy() -> u8 {
    90
}

/// `[scan]`: which scanner `amictl scan` runs and what fails it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// `trivy` (default), `grype` or `lynis`; ignored when `command` is set.
    #[serde(default = "default_scanner")]
    pub scanner: crate::presets::Scanner,
    /// Any command printing a trivy or grype JSON report or a lynis report file.
    #[serde(default)]
    pub command: Option<String>,
    /// The format `command` prints (`auto` tells it from the report).
    #[serde(default = "default_report_format")]
    pub format: crate::scan::ReportFormat,
    /// The lowest severity that fails a scan.
    #[serde(default = "default_fail_on")]
    pub fail_on: Severity,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            scanner: default_scanner(),
            command: None,
            format: default_report_format(),
            fail_on: default_fail_on(),
        }
    }
}

fn default_scanner() -> crate::presets::Scanner {
    crate::presets::Scanner::Trivy
}
fn default_report_format() -> crate::scan::ReportFormat {
    crate::scan::ReportFormat::Auto
}

/// The config file name looked for in the working directory.
pub const DEFAULT_FILE: &str = "amictl.toml";

impl Config {
    /// Loads `path`, or `./amictl.toml` if it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let path: PathBuf = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Config::default()),
        };
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::Usage(format!("cannot read the config file {shown}: {}", io_reason(&e))))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Config {
            file: format!("{shown}:{}", line_of_bytes(e.as_bytes(), e.utf8_error().valid_up_to())),
            detail: "not UTF-8 text (save the file as UTF-8)".into(),
        })?;
        let mut config = Config::parse(&text, &shown)?;
        config.retire_configured = text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("retire"));
        config.family_rules().map_err(|e| {
            let at = key_line(&text, &e.key).map(|l| format!(":{l}")).unwrap_or_default();
            Error::Config { file: format!("{shown}{at}"), detail: format!("key `{}`: {}", e.key, e.message) }
        })?;
        Ok(config)
    }

    /// Parses TOML text; errors name the file, line and key.
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim().to_string();
            let key = if path == "." || path.is_empty() { None } else { Some(path) };
            // toml points some errors (unknown fields) at the enclosing table: prefer the line
            // that holds the key itself.
            let line =
                key.as_deref().and_then(|k| key_line(text, k)).or_else(|| inner.span().map(|s| line_of(text, s.start)));
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            let detail = match key {
                Some(k) => format!("key `{k}`: {message}"),
                None => message,
            };
            Error::Config { file: format!("{file}{at}"), detail }
        })
    }

    /// Compiles the family rules; an invalid pattern is reported with the setting that holds it.
    pub fn family_rules(&self) -> Result<FamilyRules, RuleError> {
        let mut explicit = Vec::new();
        for (i, f) in self.families.explicit.iter().enumerate() {
            let tag = match &f.tag {
                Some(t) => Some(t.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                    RuleError::new(format!("families.family[{i}].tag"), format!("{t:?} is not KEY=VALUE"))
                })?),
                None => None,
            };
            let key = format!("families.family[{i}].name_pattern");
            let name_pattern = f.name_pattern.as_deref().map(|p| compile_pattern(&key, p)).transpose()?;
            explicit.push(ExplicitFamily { name: f.name.clone(), tag, name_pattern });
        }
        let name_pattern = self
            .families
            .name_pattern
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| compile_pattern("families.name_pattern", p))
            .transpose()?;
        Ok(FamilyRules { explicit, tag_keys: self.families.tag_keys.clone(), name_pattern })
    }
}

/// A family rule that does not compile, with the setting that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The config key, e.g. `families.name_pattern`.
    pub key: String,
    pub message: String,
}

impl RuleError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        RuleError { key: key.into(), message: message.into() }
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn compile_pattern(key: &str, pattern: &str) -> Result<Regex, RuleError> {
    Regex::new(pattern).map_err(|e| RuleError::new(key, format!("invalid regex {pattern:?}: {}", regex_reason(&e))))
}

/// The regex crate's message is several lines (the pattern, a caret, the error); the last
/// `error:` line says what is wrong.
pub fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:").map(|m| m.trim().to_string()))
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// "No such file or directory" without the "(os error 2)" a person does not need.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of `path` (`compliance.max_age`, `accounts[0].role_arn`) in `text`, found by
/// tracking table headers: good enough to point a person at the right line.
fn key_line(text: &str, path: &str) -> Option<usize> {
    let clean: Vec<String> =
        path.split('.').map(|p| p.split('[').next().unwrap_or(p).to_string()).filter(|p| !p.is_empty()).collect();
    let (leaf, table) = clean.split_last()?;
    let mut current: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[').split(']').next().unwrap_or("");
            current = h.split('.').map(|p| p.trim().trim_matches('"').to_string()).collect();
            if current.as_slice() == clean.as_slice() {
                return Some(i + 1);
            }
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if t.contains('=') && k == leaf && current.as_slice() == table {
            return Some(i + 1);
        }
    }
    None
}

/// Parses a duration the way the config does (`90d`, `12w`, `36h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
}
