//! Benchmark of the inventory fan-out over accounts × regions, on in-memory estates whose every
//! call waits a round trip (no emulator, whose single Python process would bound the run by its
//! own CPU): the wall time of reading all accounts at once against each account alone.
//!
//!   cargo bench -p amictl-core --bench fanout -- [ACCOUNTS] [REGIONS] [LATENCY_MS]
//!
//! Account k's calls take LATENCY × (1 + k / ACCOUNTS): the last account is the slowest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use amictl_core::aws::collect;
use amictl_core::aws::failure::FailureCloud;
use amictl_core::aws::memory::MemoryCloud;
use amictl_core::config::SharingScope;
use amictl_core::inventory::{Image, Instance, LaunchTemplate, LaunchTemplateVersion, RegionInventory};

fn estate(account: &str, region: &str) -> RegionInventory {
    let image = |i: usize| Image {
        id: format!("ami-{account}{i:05}"),
        name: format!("web-1.{i}"),
        owner: account.into(),
        state: "available".into(),
        creation_date: Some(chrono::Utc::now() - chrono::Duration::days(i as i64)),
        public: false,
        description: None,
        tags: BTreeMap::from([("Application".to_string(), "web".to_string())]),
        snapshot_ids: vec![],
        deprecation_time: None,
    };
    RegionInventory {
        account: account.into(),
        region: region.into(),
        images: (0..50).map(image).collect(),
        instances: (0..20)
            .map(|i| Instance {
                id: format!("i-{account}{i:05}"),
                image_id: format!("ami-{account}{:05}", i % 5),
                state: "running".into(),
                name: None,
                launch_time: None,
                tags: BTreeMap::new(),
            })
            .collect(),
        launch_templates: (0..5)
            .map(|t| LaunchTemplate {
                id: format!("lt-{account}{t}"),
                name: format!("t{t}"),
                default_version: 1,
                latest_version: 1,
                versions: vec![LaunchTemplateVersion { number: 1, image_id: Some(format!("ami-{account}{t:05}")) }],
            })
            .collect(),
        ..Default::default()
    }
}

fn clouds(
    accounts: &[String],
    regions: &[&str],
    latency_of: &dyn Fn(usize) -> Duration,
) -> Vec<FailureCloud<MemoryCloud>> {
    let mut out = Vec::new();
    for (k, a) in accounts.iter().enumerate() {
        for r in regions {
            out.push(FailureCloud::new(MemoryCloud::new(estate(a, r))).with_latency(latency_of(k)));
        }
    }
    out
}

async fn wall(clouds: &[FailureCloud<MemoryCloud>]) -> (Duration, u64) {
    let start = Instant::now();
    let inv = collect::collect(clouds, SharingScope::Unreferenced, collect::DEFAULT_CONCURRENCY).await;
    assert!(inv.is_complete());
    let calls = clouds.iter().map(|c| c.calls().values().sum::<u64>()).sum();
    (start.elapsed(), calls)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let regions_n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let regions = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2", "sa-east-1"];
    let regions = &regions[..regions_n.min(regions.len())];
    let accounts: Vec<String> = (0..n).map(|k| format!("2000000000{k:02}")).collect();
    let latency_of = |k: usize| Duration::from_millis(ms) + Duration::from_millis(ms) * k as u32 / n as u32;

    let all = clouds(&accounts, regions, &latency_of);
    let (together, calls) = wall(&all).await;
    let mut alone = Vec::new();
    for k in 0..n {
        let one = clouds(&accounts[k..=k], regions, &|_| latency_of(k));
        alone.push(wall(&one).await.0);
    }
    let slowest = alone.iter().max().copied().unwrap_or_default();
    let sum: Duration = alone.iter().sum();
    println!(
        "{n} accounts x {} regions, {ms}-{} ms per call, {calls} calls: all at once {:.2} s; each alone: slowest {:.2} s, sum {:.2} s",
        regions.len(),
        latency_of(n - 1).as_millis(),
        together.as_secs_f64(),
        slowest.as_secs_f64(),
        sum.as_secs_f64()
    );
    println!(
        "all at once / slowest alone = {:.2}; all at once / sum = {:.3}",
        together.as_secs_f64() / slowest.as_secs_f64(),
        together.as_secs_f64() / sum.as_secs_f64()
    );
}
