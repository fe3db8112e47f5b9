//! One module per subcommand; each turns arguments into library calls and renders the result.

mod apply;
mod audit;
mod bench;
mod catalog;
mod deploy;
mod emergency;
mod execute;
mod history;
mod images;
mod inventory;
mod observe;
mod patch;
mod retire;
mod usage;

pub use usage::ImageUsage;

use amictl_core::alerts::Event;
use amictl_core::aws::collect::{self, DEFAULT_CONCURRENCY};
use amictl_core::aws::session::{self, ConnectOptions, Connection};
use amictl_core::aws::Cloud;
use amictl_core::config::{AccountConfig, Config, SharingScope};
use amictl_core::inventory::{Inventory, Scope};
use amictl_core::journal::Journal;
use amictl_core::sharing::Evidence;
use amictl_core::Error;

use crate::cli::{AuditArgs, Cli, Command, FamilyArgs, GlobalArgs, JournalCommand, ScanArgs, SharingArg};

pub async fn run(cli: Cli) -> Result<u8, Error> {
    let config = load_config(&cli.global)?;
    let endpoint = session::endpoint_label(&connect_options(&config));
    let topic = config.alerts.topic_arn.clone();
    let announced = match (pipeline_of(&cli.command), &topic) {
        (Some(name), Some(topic)) => Some((name, observe::Announcer::new(&config, topic).await)),
        _ => None,
    };
    if let Some((name, a)) = &announced {
        a.tell(name, Event::Started, "").await;
    }
    let r = dispatch(&cli, config).await.map_err(|e| e.located(&endpoint));
    if cli.global.verbose > 0 {
        say_requests();
    }
    if let Some((name, a)) = &announced {
        match &r {
            Ok(0) => a.tell(name, Event::Finished, "exit 0").await,
            Ok(code) => a.tell(name, Event::Failed, &format!("exit {code}: not everything succeeded")).await,
            Err(e) => a.tell(name, Event::Failed, &e.to_string()).await,
        }
    }
    r
}

/// `--verbose`: the requests this run sent and how many AWS throttled, per action.
fn say_requests() {
    let counts = session::requests_so_far();
    let (sent, throttled) = counts.values().fold((0, 0), |(a, b), (s, t)| (a + s, b + t));
    crate::out::eprint_line(&format!("requests: {sent} sent, {throttled} throttled"));
    for (action, (s, t)) in counts {
        crate::out::eprint_line(&format!("requests: {action}: {s} sent, {t} throttled"));
    }
}

/// The pipeline a command runs, when it changes the estate (`emergency` tells of itself, with
/// its plan and report).
fn pipeline_of(c: &Command) -> Option<&'static str> {
    match c {
        Command::Bake(_) => Some("bake"),
        Command::Validate(_) => Some("validate"),
        Command::Scan(a) if !a.show => Some("scan"),
        Command::Deploy(_) => Some("deploy"),
        Command::Rollback(_) => Some("rollback"),
        Command::Patch(a) if !a.dry_run => Some("patch"),
        Command::Retire(a) if a.apply => Some("retire"),
        Command::Apply(_) => Some("apply"),
        _ => None,
    }
}

async fn dispatch(cli: &Cli, config: Config) -> Result<u8, Error> {
    match &cli.command {
        Command::Audit(a) => audit::run(&cli.global, apply_audit_flags(config, a)?, a).await,
        Command::Usage(a) => usage::run(&cli.global, config, a).await,
        Command::Inventory(a) => inventory::run(&cli.global, config, a).await,
        Command::Retire(a) => {
            retire::run(&cli.global, retire::apply_flags(apply_family_flags(config, &a.families)?, a)?, a).await
        }
        Command::Apply(a) => apply::run(&cli.global, config, a).await,
        Command::Image(a) => catalog::image(&cli.global, config, a).await,
        Command::Channel(a) => catalog::channel(&cli.global, config, a).await,
        Command::Bake(a) => images::bake(&cli.global, config, a).await,
        Command::Validate(a) => images::validate(&cli.global, config, a).await,
        Command::Scan(a) => images::scan(&cli.global, config, a).await,
        Command::Deploy(a) => deploy::deploy(&cli.global, config, a).await,
        Command::Rollback(a) => deploy::rollback(&cli.global, config, a).await,
        Command::Status(a) => deploy::status(&cli.global, config, a).await,
        Command::Patch(a) => patch::run(&cli.global, config, a).await,
        Command::Emergency(a) => emergency::run(&cli.global, config, a).await,
        Command::Report(a) => observe::report(&cli.global, config, a).await,
        Command::Metrics(m) => observe::metrics(&cli.global, config, m).await,
        Command::Dashboard(a) => observe::dashboard(&cli.global, config, a).await,
        Command::IamPolicy(a) => observe::iam_policy(&cli.global, a),
        Command::Journal(JournalCommand::Migrate { from, to }) => history::migrate(&config, from, to),
        Command::History(a) => history::run(&cli.global, config, a),
        Command::Bench(a) => bench::run(&cli.global, apply_audit_flags(config, &a.audit)?, a).await,
    }
}

/// The config file with the global flags applied on top.
fn load_config(g: &GlobalArgs) -> Result<Config, Error> {
    let mut c = Config::load(g.config.as_deref())?;
    if !g.regions.is_empty() {
        c.regions = g.regions.clone();
    }
    if g.profile.is_some() {
        c.profile = g.profile.clone();
    }
    if g.endpoint_url.is_some() {
        c.endpoint_url = g.endpoint_url.clone();
    }
    if let Some(t) = &g.call_timeout {
        c.call_timeout = duration_flag("--call-timeout", t)?;
        if c.call_timeout.is_zero() {
            return Err(Error::Usage("--call-timeout: must be longer than 0s".into()));
        }
    }
    if let Some(share) = g.api_share {
        c.api_share = Some(share);
    }
    if let Some(share) = c.api_share {
        crate::cli::api_share(&share.to_string()).map_err(|e| Error::Usage(format!("api_share: {e}")))?;
    }
    if let Some(d) = &g.sharing_delivery_delay {
        c.sharing.delivery_delay = duration_flag("--sharing-delivery-delay", d)?;
    }
    if g.no_sharing_cache {
        c.sharing.cache = false;
    }
    if let Some(role) = &g.org_role {
        c.organization = Some(amictl_core::config::OrganizationConfig { role_name: role.clone(), external_id: None });
    }
    if !g.role_arns.is_empty() {
        c.accounts =
            g.role_arns.iter().map(|arn| AccountConfig { role_arn: arn.clone(), ..Default::default() }).collect();
    }
    for r in &c.regions {
        if r.is_empty() || !r.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
            return Err(Error::UnknownRegion { region: r.clone(), known: "not a region name like us-east-1".into() });
        }
    }
    Ok(c)
}

/// The audit flags applied on top of the config.
fn apply_audit_flags(mut c: Config, a: &AuditArgs) -> Result<Config, Error> {
    if let Some(s) = &a.fail_on {
        c.compliance.fail_on = s.parse().map_err(Error::Usage)?;
    }
    if let Some(s) = &a.max_patch_age {
        c.compliance.max_patch_age = Some(duration_flag("--max-patch-age", s)?);
    }
    if let Some(s) = &a.max_age {
        c.compliance.max_age = duration_flag("--max-age", s)?;
    }
    if let Some(s) = &a.scan_tag {
        c.compliance.scan_tag = s.clone();
    }
    if !a.scan_passed_values.is_empty() {
        c.compliance.scan_passed_values = a.scan_passed_values.clone();
    }
    c.compliance.allowed_accounts.extend(a.allowed_accounts.iter().cloned());
    apply_family_flags(c, &a.families)
}

fn apply_family_flags(mut c: Config, f: &FamilyArgs) -> Result<Config, Error> {
    if !f.family_tags.is_empty() {
        c.families.tag_keys = f.family_tags.clone();
    }
    if let Some(p) = &f.family_pattern {
        regex::Regex::new(p).map_err(|e| {
            Error::Usage(format!("--family-pattern: invalid regex {p:?}: {}", amictl_core::config::regex_reason(&e)))
        })?;
        c.families.name_pattern = Some(p.clone());
    }
    c.family_rules()?;
    Ok(c)
}

pub fn duration_flag(flag: &str, value: &str) -> Result<std::time::Duration, Error> {
    amictl_core::config::parse_duration(value).map_err(|e| Error::Usage(format!("{flag}: {e}")))
}

fn sharing(scan: &ScanArgs, default: SharingScope) -> SharingScope {
    match scan.check_sharing {
        Some(SharingArg::All) => SharingScope::All,
        Some(SharingArg::Unreferenced) => SharingScope::Unreferenced,
        None => default,
    }
}

/// Connects and collects the inventory of every configured account and region: the one
/// read path every command shares. `sharing` is the command's default launch-permission scope
/// (`--check-sharing` overrides it).
pub async fn load_estate(
    c: &Config,
    scan: &ScanArgs,
    default_sharing: SharingScope,
) -> Result<(Connection, Inventory), Error> {
    let conn = connect(c).await?;
    let scope = sharing(scan, default_sharing);
    let mut inv = if scope == SharingScope::Deferred {
        collect::collect(&conn.clouds, scope, DEFAULT_CONCURRENCY).await
    } else {
        let sharing = SharingCache::open(c, None, &conn);
        let inv = collect::collect_with(&conn.clouds, scope, DEFAULT_CONCURRENCY, &sharing.evidence).await;
        sharing.finish();
        inv
    };
    conn.report_unreachable(&mut inv);
    for what in inv.incompleteness() {
        tracing::error!("{what}");
    }
    Ok((conn, inv))
}

pub async fn connect(c: &Config) -> Result<Connection, Error> {
    session::connect(&connect_options(c)).await
}

fn connect_options(c: &Config) -> ConnectOptions {
    ConnectOptions {
        profile: c.profile.clone(),
        endpoint_url: c.endpoint_url.clone(),
        regions: c.regions.clone(),
        accounts: c.accounts.clone(),
        organization: c.organization.clone(),
        call_timeout: c.call_timeout,
        api_share: c.api_share.unwrap_or(0.0),
    }
}

/// Connects for a command that works in exactly one account and region (its cloud is
/// `clouds[0]`).
pub async fn connect_one(c: &Config) -> Result<Connection, Error> {
    if c.regions.len() > 1 || c.accounts.len() > 1 {
        return Err(Error::Usage(
            "this command works in one account and region: pass one --region (and at most one --role-arn)".into(),
        ));
    }
    connect(c).await
}

/// The retirement plan with sharing read only where it matters: the estate is read without
/// launch permissions (one call per image), planned, then the permissions of the images the
/// plan would retire or is retiring are read, and it is planned again. Sharing can only keep
/// an image, so the second plan retires a subset of the first, every one of them checked.
pub async fn plan_retirement(
    conn: &Connection,
    inv: &mut Inventory,
    c: &Config,
    journal: Option<&std::path::Path>,
    policy: &amictl_core::policy::RetirePolicy,
    as_of: chrono::DateTime<chrono::Utc>,
) -> Result<amictl_core::plan::Plan, Error> {
    use amictl_core::plan::{self, Verdict};
    let families = c.family_rules()?;
    let first = plan::plan(inv, &families, policy, as_of);
    let mut wanted: std::collections::BTreeMap<amictl_core::inventory::Scope, Vec<String>> = Default::default();
    for i in first.images.iter().filter(|i| i.verdict != Verdict::Keep) {
        let scope = amictl_core::inventory::Scope { account: i.account.to_string(), region: i.region.to_string() };
        wanted.entry(scope).or_default().push(i.image_id.to_string());
    }
    let cache = SharingCache::open(c, journal, conn);
    collect::add_launch_permissions(&conn.clouds, inv, &wanted, DEFAULT_CONCURRENCY, &cache.evidence).await;
    cache.finish();
    Ok(plan::plan(inv, &families, policy, as_of))
}

/// The launch-permission readings the journal keeps (see [`amictl_core::sharing`]) for one
/// command, and the journal to keep this run's readings in.
pub struct SharingCache {
    pub evidence: Evidence,
    journal: Option<Journal>,
}

impl SharingCache {
    /// The journal of `journal` (or `journal =`, `AMICTL_JOURNAL`, the default file). One that
    /// cannot be opened, or `[sharing] cache = false`: everything is read afresh.
    pub fn open(c: &Config, journal: Option<&std::path::Path>, conn: &Connection) -> SharingCache {
        let none = || SharingCache { evidence: Evidence::fresh_only(), journal: None };
        if !c.sharing.cache {
            return none();
        }
        let env = std::env::var_os("AMICTL_JOURNAL").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let path = journal.map(|p| p.to_path_buf()).or(env);
        let scopes: Vec<Scope> = conn.clouds.iter().map(|cl| cl.scope().clone()).collect();
        let opened = execute::open_journal(c, path.as_deref())
            .and_then(|j| Ok((Evidence::load(&j, &scopes, c.sharing.delivery_delay)?, j)));
        match opened {
            Ok((evidence, j)) => SharingCache { evidence, journal: Some(j) },
            Err(e) => {
                crate::out::eprint_line(&format!("note: reading every image's sharing afresh: {e}"));
                none()
            }
        }
    }

    /// Keeps this run's readings, and says how old the evidence is and where the event history
    /// could not be read (once, not an error).
    pub fn finish(&self) {
        if let Some(j) = &self.journal {
            if let Err(e) = self.evidence.save(j) {
                crate::out::eprint_line(&format!("note: this run's sharing readings were not kept: {e}"));
            }
        }
        let unreadable = self.evidence.unreadable();
        if !unreadable.is_empty() {
            let what: Vec<String> = unreadable.iter().map(|(s, why)| format!("{s} ({why})")).collect();
            crate::out::eprint_line(&format!(
                "note: CloudTrail event history could not be read in {}: their images' sharing was read afresh",
                what.join(", ")
            ));
        }
        for age in self.evidence.ages().iter().filter(|a| a.validated_to.is_some()) {
            crate::out::eprint_line(&format!("sharing evidence: {age}"));
        }
    }
}

/// Refuses to go on with an inventory that misses a scope, naming what failed.
pub fn require_complete(inv: &Inventory) -> Result<(), Error> {
    if inv.is_complete() {
        return Ok(());
    }
    let what = inv.incompleteness();
    Err(Error::Incomplete(what.join("; ")))
}
