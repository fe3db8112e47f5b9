//! `amictl bench`: wall time, API requests and the emulator's share of the time.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::emulator::EmulatorControl;
use amictl_core::apply::{self, ApplyOptions};
use amictl_core::audit;
use amictl_core::config::{Config, SharingScope};
use amictl_core::engine::Engine;
use amictl_core::inventory::{
    Image, Instance, Inventory, LaunchTemplate, LaunchTemplateVersion, RegionInventory, Snapshot,
};
use amictl_core::journal::Journal;
use amictl_core::plan;
use amictl_core::policy::RetirePolicy;
use amictl_core::Error;
use serde_json::{json, Value};

use crate::cli::{BenchArgs, GlobalArgs, Output, ScanArgs};
use crate::exit;
use crate::render;

pub async fn run(g: &GlobalArgs, c: Config, a: &BenchArgs) -> Result<u8, Error> {
    let result = match a.what.as_str() {
        "plan" => bench_plan(&c, a)?,
        "retire" => bench_retire(&c).await?,
        _ => bench_audit(&c, a).await?,
    };
    match g.output {
        Output::Json => render::json("amictl.bench/v1", &result)?,
        Output::Table => render::print(&render::bench_table(&result, render::width())),
    }
    Ok(exit::OK)
}

/// Emulator statistics are read only when the endpoint is amictl's local emulator.
fn emulator(c: &Config) -> Option<EmulatorControl> {
    c.endpoint_url.as_deref().and_then(|e| EmulatorControl::new(e).ok()).filter(|e| e.health().is_ok())
}

fn emulator_figures(e: &Option<EmulatorControl>, wall: f64) -> Result<Value, Error> {
    let Some(e) = e else { return Ok(json!({})) };
    let s = e.stats().map_err(Error::Other)?;
    let busy = s["server_seconds"].as_f64();
    Ok(json!({
        "emulator_requests": s["requests"],
        "emulator_seconds": busy,
        "emulator_share": busy.map(|b| b / wall),
    }))
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

async fn bench_audit(c: &Config, a: &BenchArgs) -> Result<Value, Error> {
    let emu = emulator(c);
    let mut runs = Vec::new();
    for i in 0..a.iterations.max(1) {
        if let Some(e) = &emu {
            e.reset_stats().map_err(Error::Other)?;
        }
        let started = Instant::now();
        let (conn, inv) = super::load_estate(c, &a.audit.scan, c.compliance.check_sharing).await?;
        let collected = started.elapsed();
        let families = c.family_rules()?;
        let analysis_started = Instant::now();
        let report = audit::audit(&inv, &families, &c.compliance, chrono::Utc::now());
        let analysis = analysis_started.elapsed();
        let wall = started.elapsed().as_secs_f64();
        super::require_complete(&inv)?;
        runs.push(merge(
            json!({
                "iteration": i + 1,
                "images": inv.image_count(),
                "findings": report.findings.len(),
                "wall_seconds": wall,
                "collect_seconds": collected.as_secs_f64(),
                "analysis_seconds": analysis.as_secs_f64(),
                "api_requests": conn.counter.total(),
                "api_requests_by_operation": conn.counter.snapshot(),
                "api_throttled_by_operation": conn.counter.throttled(),
            }),
            emulator_figures(&emu, wall)?,
        ));
    }
    Ok(json!({ "benchmark": "audit", "runs": runs }))
}

/// A deterministic synthetic estate: `n` images in 10 families over ~2 years, 1 % of them
/// used by an instance, 0.5 % by a launch template version, every 50th in lineage of the next.
pub fn synthetic_estate(n: usize) -> Inventory {
    let now = chrono::Utc::now();
    let families = ["web", "api", "worker", "batch", "etl", "cache", "search", "auth", "billing", "edge"];
    let mut images = Vec::with_capacity(n);
    let mut snapshots = Vec::with_capacity(n);
    for i in 0..n {
        let family = families[i % families.len()];
        let mut tags = BTreeMap::new();
        tags.insert("Application".to_string(), family.to_string());
        if i % 50 == 1 {
            tags.insert("SourceAMI".to_string(), format!("ami-{:017x}", i - 1));
        }
        let snap = format!("snap-{i:017x}");
        snapshots.push(Snapshot {
            id: snap.clone(),
            description: format!("Created by CreateImage(i-0000000000000001) for ami-{i:017x}"),
            encrypted: false,
            volume_size_gib: 8,
            start_time: None,
            tags: BTreeMap::new(),
        });
        images.push(Image {
            id: format!("ami-{i:017x}"),
            name: format!("{family}-1.{}.{}", i / 1000, i % 1000),
            owner: "123456789012".into(),
            state: "available".into(),
            creation_date: Some(now - chrono::Duration::minutes(((i * 7919) % (730 * 1440)) as i64)),
            public: false,
            description: None,
            tags,
            snapshot_ids: vec![snap],
            deprecation_time: None,
        });
    }
    let instances = (0..n / 100)
        .map(|k| Instance {
            id: format!("i-{k:017x}"),
            image_id: format!("ami-{:017x}", k * 100 + 3),
            state: "running".into(),
            name: None,
            launch_time: None,
            tags: BTreeMap::new(),
        })
        .collect();
    let launch_templates = (0..n / 2000)
        .map(|t| LaunchTemplate {
            id: format!("lt-{t:017x}"),
            name: format!("lt-{t}"),
            default_version: 1,
            latest_version: 10,
            versions: (1..=10)
                .map(|v| LaunchTemplateVersion {
                    number: v,
                    image_id: Some(format!("ami-{:017x}", t * 2000 + v as usize * 7)),
                })
                .collect(),
        })
        .collect();
    Inventory {
        scopes: vec![RegionInventory {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            images,
            snapshots,
            instances,
            launch_templates,
            ..Default::default()
        }],
        failures: vec![],
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> Option<f64> {
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

fn bench_plan(c: &Config, a: &BenchArgs) -> Result<Value, Error> {
    let started = Instant::now();
    let inv = synthetic_estate(a.synthetic);
    let generated = started.elapsed().as_secs_f64();
    let families = c.family_rules()?;
    let policy = RetirePolicy {
        keep: 3,
        min_age: std::time::Duration::from_secs(90 * 86_400),
        immediate: true,
        ..c.retire.clone()
    };
    let mut runs = Vec::new();
    for i in 0..a.iterations.max(1) {
        let t = Instant::now();
        let p = plan::plan(&inv, &families, &policy, chrono::Utc::now());
        let wall = t.elapsed().as_secs_f64();
        runs.push(json!({
            "iteration": i + 1,
            "images": a.synthetic,
            "wall_seconds": wall,
            "actions": p.actions.len(),
            "retired": p.count(plan::ActionKind::Deregister),
        }));
    }
    let mut walls: Vec<f64> = runs.iter().filter_map(|r| r["wall_seconds"].as_f64()).collect();
    walls.sort_by(f64::total_cmp);
    Ok(json!({
        "benchmark": "plan",
        "generate_seconds": generated,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "fastest_seconds": walls.first(),
        "median_seconds": median(&walls),
        "runs": runs,
    }))
}

/// Plan and apply `--now` retirement of the whole estate once: destructive.
async fn bench_retire(c: &Config) -> Result<Value, Error> {
    // It deletes without asking: only ever on the project's own emulator on this machine.
    let Some(e) = emulator(c) else {
        return Err(Error::Usage(format!(
            "bench retire deletes images without asking, so it runs only against amictl's local emulator \
             (--endpoint-url http://127.0.0.1:PORT answering /_amictl/health); the endpoint is {}",
            c.endpoint_url.as_deref().unwrap_or("AWS itself")
        )));
    };
    e.reset_stats().map_err(Error::Other)?;
    let emu = Some(e);
    let started = Instant::now();
    let (conn, mut inv) = super::load_estate(c, &ScanArgs { check_sharing: None }, SharingScope::Deferred).await?;
    super::require_complete(&inv)?;
    // The plan with the launch permissions it needs, as `retire` makes it.
    let plan_started = Instant::now();
    let policy = RetirePolicy { immediate: true, ..c.retire.clone() };
    // Every launch permission read now, as on a first run: no readings from a journal.
    let fresh =
        Config { sharing: amictl_core::config::SharingConfig { cache: false, ..c.sharing.clone() }, ..c.clone() };
    let p = super::plan_retirement(&conn, &mut inv, &fresh, None, &policy, chrono::Utc::now()).await?;
    let plan_only = plan_started.elapsed().as_secs_f64();
    let plan_wall = started.elapsed().as_secs_f64();
    let plan_requests = conn.counter.total();
    let plan_emu = emulator_figures(&emu, plan_wall)?;
    if let Some(e) = &emu {
        e.reset_stats().map_err(Error::Other)?;
    }

    let dir = std::env::temp_dir().join(format!("amictl-bench-{}", std::process::id()));
    // A mutating run like any other: on the engine (no guards, no question: it is the emulator).
    let engine = Engine::new(Journal::open(&dir.join("journal.db"))?, "bench retire");
    let scopes: Vec<(String, String)> = p.scopes.iter().map(|s| (s.account.clone(), s.region.clone())).collect();
    let (run, _) = engine.guard(&[], false)?.confirm(|| Ok(()))?.begin("{}", &scopes, None)?;
    let apply_started = Instant::now();
    let paced = conn.pacer.pace_of("EC2", "DeregisterImage").map(|p| p.per_sec);
    let opts = ApplyOptions { concurrency: 8, rate_per_sec: None, paced_per_sec: paced, now: chrono::Utc::now() };
    let report = run.drive(apply::apply(&p, &conn.clouds, &inv, run.journal(), run.id(), &opts)).await;
    run.finish(if report.as_ref().is_ok_and(|r| r.all_done()) { "completed" } else { "completed-with-errors" })?;
    let report = report?;
    let apply_wall = apply_started.elapsed().as_secs_f64();
    let total = conn.counter.snapshot();
    std::fs::remove_dir_all(&dir).ok();
    Ok(json!({
        "benchmark": "retire",
        "runs": [merge(json!({
            "iteration": 1,
            "images": inv.image_count(),
            "wall_seconds": plan_wall + apply_wall,
            "plan_wall_seconds": plan_wall,
            "planner_seconds": plan_only,
            "plan_api_requests": plan_requests,
            "plan_emulator": plan_emu,
            "apply_seconds": apply_wall,
            "actions": p.actions.len(),
            "deregistered": report.outcomes.iter().filter(|o| o.kind == plan::ActionKind::Deregister && o.status == amictl_core::journal::StepStatus::Done).count(),
            "snapshots_deleted": report.outcomes.iter().filter(|o| o.kind == plan::ActionKind::DeleteSnapshot && o.status == amictl_core::journal::StepStatus::Done).count(),
            "api_requests": conn.counter.total(),
            "api_requests_by_operation": total,
            "api_throttled_by_operation": conn.counter.throttled(),
        }), emulator_figures(&emu, apply_wall)?)],
    }))
}
