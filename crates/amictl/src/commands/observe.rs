//! What people see of the estate outside a terminal: `amictl report --html`, `amictl metrics
//! publish`, `amictl dashboard`, and SNS messages (`audit --notify`, pipeline runs).

use std::path::Path;

use amictl_core::alerts::Message;
use amictl_core::audit::{self, AuditReport};
use amictl_core::aws::session::Connection;
use amictl_core::aws::{Metrics, Notify};
use amictl_core::config::{Config, SharingScope};
use amictl_core::html::{self, EmergencyView, Page};
use amictl_core::inventory::Inventory;
use amictl_core::journal::Journal;
use amictl_core::pipeline::emergency;
use amictl_core::{catalog, metrics, Error};
use chrono::Utc;

use super::{execute, load_estate, require_complete};
use crate::cli::{DashboardArgs, GlobalArgs, MetricsArgs, MetricsCommand, Output, ReportArgs};
use crate::exit;
use crate::out::outln;
use crate::render;

/// Tells `[alerts] topic_arn` that a pipeline command started and how it ended.
pub struct Announcer {
    cloud: Option<amictl_core::aws::sdk::SdkCloud>,
    topic: String,
    scope: String,
}

impl Announcer {
    /// Connects in the topic's own region (from its ARN). A topic that cannot be reached is a
    /// warning: the command runs either way.
    pub async fn new(c: &Config, topic: &str) -> Announcer {
        let mut c = c.clone();
        if let Some(region) = topic.split(':').nth(3).filter(|r| !r.is_empty()) {
            c.regions = vec![region.to_string()];
        }
        // Published as the account the topic is in when amictl reads it through a role, else
        // as amictl's own identity.
        let owner = topic.split(':').nth(4).unwrap_or_default();
        c.accounts.retain(|a| amictl_core::aws::session::account_of_role(&a.role_arn) == Some(owner));
        c.accounts.truncate(1);
        c.organization = None;
        let (cloud, scope) = match super::connect(&c).await {
            Ok(conn) => {
                let cloud = conn.clouds.into_iter().next();
                let scope = cloud.as_ref().map(|c| amictl_core::aws::Cloud::scope(c).to_string()).unwrap_or_default();
                (cloud, scope)
            }
            Err(e) => {
                crate::out::eprint_line(&format!("warning: cannot notify {topic}: {e}"));
                (None, String::new())
            }
        };
        Announcer { cloud, topic: topic.to_string(), scope }
    }

    pub async fn tell(&self, command: &str, event: amictl_core::alerts::Event, detail: &str) {
        let Some(cloud) = &self.cloud else { return };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let detail = format!("amictl {}\n{detail}", args.join(" "));
        let m = amictl_core::alerts::pipeline(command, None, event, &self.scope, detail.trim_end());
        notify(cloud, Some(&self.topic), &m).await;
    }
}

/// Sends `m` to `topic` when there is one. A message that cannot be sent is a warning: the
/// work it tells of is done (or failed) either way.
pub async fn notify<N: Notify>(cloud: &N, topic: Option<&str>, m: &Message) {
    let Some(topic) = topic else { return };
    if let Err(e) = cloud.publish(topic, &m.subject, &m.body).await {
        crate::out::eprint_line(&format!("warning: could not notify {topic}: {e}"));
    }
}

/// The audit of the estate the page, the metrics and the dashboard show.
fn audit_of(c: &Config, inv: &Inventory) -> Result<AuditReport, Error> {
    Ok(audit::audit(inv, &c.family_rules()?, &c.compliance, Utc::now()))
}

/// Writes the HTML page: the estate as read now and the journal's runs; `run` (or the newest
/// emergency run) gives the timeline.
pub async fn write_report(
    c: &Config,
    conn: &Connection,
    journal_path: Option<&Path>,
    path: &Path,
    run: Option<i64>,
) -> Result<(), Error> {
    let inv = amictl_core::aws::collect::collect(&conn.clouds, SharingScope::Unreferenced, 16).await;
    render_page(c, &inv, journal_path, path, run)
}

fn render_page(
    c: &Config,
    inv: &Inventory,
    journal_path: Option<&Path>,
    path: &Path,
    run: Option<i64>,
) -> Result<(), Error> {
    let audit = audit_of(c, inv)?;
    let rules = c.family_rules()?;
    let images: Vec<_> = inv.scopes.iter().flat_map(|s| s.images.iter().cloned()).collect();
    let family_of = |i: &amictl_core::inventory::Image| rules.name_of(i);
    let lineage = catalog::lineage(&images, &c.retire.lineage_tag, &family_of);
    let channels: Vec<_> = inv.scopes.iter().flat_map(|s| s.channels.iter().cloned()).collect();
    let journal = execute::open_journal(c, journal_path)?;
    let runs = journal.runs(50)?;
    let run = run.or_else(|| runs.iter().find(|r| r.command == "emergency").map(|r| r.id));
    let emergency = run.map(|id| emergency_view(&journal, id)).transpose()?;
    let mut failed_instances = std::collections::BTreeMap::new();
    for r in runs.iter().filter(|r| r.command == "patch") {
        let failed = journal
            .instance_results(r.id)?
            .iter()
            .filter(|(_, json)| {
                serde_json::from_str::<serde_json::Value>(json).map_or(true, |v| v["status"] != "Success")
            })
            .count();
        failed_instances.insert(r.id, failed);
    }
    let page = html::render(&Page {
        generated_at: Utc::now(),
        audit: &audit,
        lineage: &lineage,
        channels: &channels,
        runs: &runs,
        failed_instances: &failed_instances,
        emergency: emergency.as_ref(),
    });
    std::fs::write(path, page).map_err(|e| Error::Other(format!("cannot write {}: {e}", path.display())))
}

fn emergency_view(j: &Journal, id: i64) -> Result<EmergencyView, Error> {
    let run = j.runs(usize::MAX)?.into_iter().find(|r| r.id == id && r.command == "emergency").ok_or_else(|| {
        Error::NotFound { what: format!("emergency run {id}"), looked_in: j.path().display().to_string() }
    })?;
    let cve = j
        .run_plan(id)?
        .and_then(|(_, plan)| serde_json::from_str::<emergency::SavedEmergency>(&plan).ok())
        .map(|s| s.request.cve)
        .unwrap_or_default();
    Ok(EmergencyView { run, cve, steps: emergency::timeline(j, id)? })
}

pub async fn report(_g: &GlobalArgs, c: Config, a: &ReportArgs) -> Result<u8, Error> {
    let (_conn, inv) = load_estate(&c, &a.scan, SharingScope::Unreferenced).await?;
    require_complete(&inv)?;
    render_page(&c, &inv, a.journal.as_deref(), &a.html, a.run)?;
    crate::out::eprint_line(&format!("wrote {}", a.html.display()));
    Ok(exit::OK)
}

pub async fn metrics(g: &GlobalArgs, c: Config, m: &MetricsCommand) -> Result<u8, Error> {
    let MetricsCommand::Publish(a) = m;
    publish(g, c, a).await
}

async fn publish(g: &GlobalArgs, c: Config, a: &MetricsArgs) -> Result<u8, Error> {
    let (conn, inv) = load_estate(&c, &a.scan, SharingScope::Unreferenced).await?;
    // Metrics of half an estate would read as an improvement.
    require_complete(&inv)?;
    let audit = audit_of(&c, &inv)?;
    let runs = execute::open_journal(&c, a.journal.as_deref())?.runs(500)?;
    let data = metrics::estate_metrics(&audit, c.compliance.fail_on, &runs);
    let namespace = a.namespace.clone().unwrap_or_else(|| c.metrics.namespace.clone());
    if !a.dry_run {
        // One region's CloudWatch holds them: the first one's.
        conn.clouds[0].put_metrics(&namespace, &data).await?;
    }
    match g.output {
        Output::Json => render::json(
            "amictl.metrics/v1",
            &serde_json::json!({"namespace": namespace, "published": !a.dry_run, "metrics": data}),
        )?,
        Output::Table => {
            for d in &data {
                let dims: Vec<String> = d.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
                outln!("{:<28} {:<22} {}", d.name, dims.join(","), d.value);
            }
            outln!("{} {} metric(s) to namespace {namespace}", if a.dry_run { "Would put" } else { "Put" }, data.len());
        }
    }
    Ok(exit::OK)
}

pub async fn dashboard(g: &GlobalArgs, c: Config, a: &DashboardArgs) -> Result<u8, Error> {
    let (conn, inv) = load_estate(&c, &a.scan, SharingScope::Unreferenced).await?;
    require_complete(&inv)?;
    let audit = audit_of(&c, &inv)?;
    let mut families: Vec<String> = audit.images.iter().filter_map(|i| i.family.clone()).collect();
    families.sort();
    families.dedup();
    let namespace = a.namespace.clone().unwrap_or_else(|| c.metrics.namespace.clone());
    let name = a.name.clone().unwrap_or_else(|| c.metrics.dashboard.clone());
    let cloud = &conn.clouds[0];
    let region = amictl_core::aws::Cloud::scope(cloud).region.clone();
    let body = metrics::dashboard(&namespace, &region, &families);
    cloud.put_dashboard(&name, &body.to_string()).await?;
    match g.output {
        Output::Json => render::json("amictl.dashboard/v1", &serde_json::json!({"name": name, "body": body}))?,
        Output::Table => outln!(
            "Dashboard {name} in {region}: {}, namespace {namespace}",
            amictl_core::text::counted(families.len(), "family", "families")
        ),
    }
    Ok(exit::OK)
}

/// `amictl iam-policy`: a policy document, printed bare (to paste or pipe into the AWS CLI).
pub fn iam_policy(g: &GlobalArgs, a: &crate::cli::IamPolicyArgs) -> Result<u8, Error> {
    let (kind, doc) = match &a.trust {
        Some(p) => ("trust", amictl_core::iam::trust_policy(p, a.external_id.as_deref())),
        None => {
            let commands: Vec<&str> =
                if a.commands.is_empty() { vec!["all"] } else { a.commands.iter().map(String::as_str).collect() };
            ("permissions", amictl_core::iam::policy(&commands).map_err(Error::Usage)?)
        }
    };
    match g.output {
        Output::Json => render::json(
            "amictl.iam-policy/v1",
            &serde_json::json!({"kind": kind, "commands": a.commands, "policy": doc}),
        )?,
        Output::Table => outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
    }
    Ok(exit::OK)
}

/// `audit --notify`: the findings at or above the severity, to the topic.
pub async fn notify_audit(
    conn: &Connection,
    topic: &str,
    report: &AuditReport,
    gate: amictl_core::report::Severity,
) -> Result<(), Error> {
    match amictl_core::alerts::audit_summary(report, gate) {
        Some(m) => {
            let id = conn.clouds[0].publish(topic, &m.subject, &m.body).await?;
            crate::out::eprint_line(&format!("notified {topic} (message {id})"));
        }
        None => crate::out::eprint_line(&format!("no finding at or above {gate}: nothing sent to {topic}")),
    }
    Ok(())
}
