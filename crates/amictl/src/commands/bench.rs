//! `amictl bench audit`: wall time, API requests and the emulator's share of the time.

use std::time::Instant;

use amictl_core::audit;
use amictl_core::config::Config;
use amictl_core::emulator::EmulatorControl;
use amictl_core::Error;
use serde_json::json;

use crate::cli::{BenchArgs, GlobalArgs, Output};
use crate::exit;
use crate::render;

pub async fn run(g: &GlobalArgs, c: Config, a: &BenchArgs) -> Result<u8, Error> {
    // Emulator statistics are read only when the endpoint is amictl's local emulator.
    let emulator = c
        .endpoint_url
        .as_deref()
        .and_then(|e| EmulatorControl::new(e).ok())
        .filter(|e| e.health().is_ok());
    let mut runs = Vec::new();
    for i in 0..a.iterations.max(1) {
        if let Some(e) = &emulator {
            e.reset_stats().map_err(Error::Other)?;
        }
        let started = Instant::now();
        let (conn, inv) = super::load_estate(&c, &a.audit.scan, c.compliance.check_sharing).await?;
        let collected = started.elapsed();
        let families = c.family_rules().map_err(Error::Usage)?;
        let analysis_started = Instant::now();
        let report = audit::audit(&inv, &families, &c.compliance, chrono::Utc::now());
        let analysis = analysis_started.elapsed();
        let wall = started.elapsed();
        super::require_complete(&inv)?;
        let emu = match &emulator {
            Some(e) => Some(e.stats().map_err(Error::Other)?),
            None => None,
        };
        let server_seconds = emu.as_ref().and_then(|s| s["server_seconds"].as_f64());
        runs.push(json!({
            "iteration": i + 1,
            "images": inv.image_count(),
            "findings": report.findings.len(),
            "wall_seconds": wall.as_secs_f64(),
            "collect_seconds": collected.as_secs_f64(),
            "analysis_seconds": analysis.as_secs_f64(),
            "api_requests": conn.counter.total(),
            "api_requests_by_operation": conn.counter.snapshot(),
            "emulator_requests": emu.as_ref().map(|s| s["requests"].clone()),
            "emulator_seconds": server_seconds,
            "emulator_share": server_seconds.map(|s| s / wall.as_secs_f64()),
        }));
    }
    let result = json!({ "benchmark": "audit", "runs": runs });
    match g.output {
        Output::Json => render::json(&result)?,
        Output::Table => render::bench_table(&result),
    }
    Ok(exit::OK)
}
