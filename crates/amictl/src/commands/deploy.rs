//! `amictl deploy`, `amictl rollback`, `amictl status`.

use amictl_core::config::Config;
use amictl_core::patching::Threshold;
use amictl_core::pipeline::deploy::{
    self as pipeline, DeployRequest, Deployment, ImageChoice, Prepared, ReleaseRules, Strategy,
};
use amictl_core::Error;
use chrono::Utc;

use super::{connect_one, duration_flag, execute};
use crate::cli::{DeployArgs, GlobalArgs, GroupRollbackArgs, Output, RolloutArgs, StatusArgs, StrategyArg};
use crate::exit;
use crate::out::outln;
use crate::progress::Spinner;
use crate::render;

fn seconds(flag: &str, value: &Option<String>) -> Result<Option<i32>, Error> {
    value.as_ref().map(|v| duration_flag(flag, v).map(|d| d.as_secs().min(i32::MAX as u64) as i32)).transpose()
}

fn request(group: &str, image: ImageChoice, force: bool, r: &RolloutArgs) -> Result<DeployRequest, Error> {
    let health_timeout = duration_flag("--health-timeout", &r.health_timeout)?;
    if health_timeout.is_zero() {
        return Err(Error::Usage("--health-timeout: must be longer than 0s".into()));
    }
    Ok(DeployRequest {
        group: group.to_string(),
        image,
        strategy: match r.strategy {
            StrategyArg::Rolling => Strategy::Rolling,
            StrategyArg::Batched => Strategy::Batched,
            StrategyArg::BlueGreen => Strategy::BlueGreen,
            StrategyArg::Canary => Strategy::Canary,
        },
        min_healthy: r.min_healthy,
        max_healthy: r.max_healthy,
        warmup_seconds: seconds("--warmup", &r.warmup)?,
        checkpoints: r.checkpoints.clone(),
        checkpoint_delay_seconds: seconds("--checkpoint-delay", &r.checkpoint_delay)?,
        skip_matching: r.skip_matching,
        bake_time_seconds: seconds("--bake-time", &r.bake_time)?,
        alarms: r.alarms.clone(),
        batch_size: Threshold::parse("--batch-size", &r.batch_size, 1).map_err(Error::Usage)?,
        force,
        allow_family_change: false,
        no_surge: r.no_surge,
        timeout: duration_flag("--timeout", &r.timeout)?,
        health_timeout,
        poll_interval: duration_flag("--poll-interval", &r.poll_interval)?.max(std::time::Duration::from_millis(100)),
        shift: r.shift.clone(),
        shift_pause: duration_flag("--shift-pause", &r.shift_pause)?,
        keep_blue: duration_flag("--keep-blue", &r.keep_blue)?,
        listener: r.listener.clone(),
        green_target_group: r.green_target_group.clone(),
    })
}

fn image_choice(a: &DeployArgs) -> Result<ImageChoice, Error> {
    match (&a.image, &a.channel) {
        (Some(id), _) => Ok(ImageChoice::Image(id.clone())),
        (_, Some(c)) => {
            let (family, channel) = c
                .split_once('/')
                .filter(|(f, c)| !f.is_empty() && !c.is_empty())
                .ok_or_else(|| Error::Usage(format!("--channel {c:?} is not FAMILY/CHANNEL (e.g. webapp/prod)")))?;
            Ok(ImageChoice::Channel { family: family.into(), channel: channel.into() })
        }
        _ => Err(Error::Usage("give the image: --image AMI or --channel FAMILY/CHANNEL".into())),
    }
}

pub async fn deploy(g: &GlobalArgs, c: Config, a: &DeployArgs) -> Result<u8, Error> {
    let families = c.family_rules()?;
    let rules = ReleaseRules {
        scan_tag: &c.compliance.scan_tag,
        scan_passed: &c.compliance.scan_passed_values,
        families: &families,
    };
    if let Some(id) = a.resume {
        let conn = connect_one(&c).await?;
        let journal = execute::open_journal(&c, a.rollout.journal.as_deref())?;
        let (run_id, req, prepared) = pipeline::interrupted(&journal, (id != 0).then_some(id))?;
        // A resumed run is checked as a new one is: the image may have been revoked since.
        pipeline::recheck(&conn.clouds[0], &req, &prepared, &rules).await?;
        return run(g, &conn.clouds[0], journal, "deploy", &req, &prepared, Some(run_id), true).await;
    }
    let group = a.group.clone().unwrap_or_default();
    let mut req = request(&group, image_choice(a)?, a.force, &a.rollout)?;
    req.allow_family_change = a.allow_family_change;
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let prepared = pipeline::prepare(cloud, &req, &rules).await?;
    for o in &prepared.overridden {
        crate::out::eprint_line(&format!("warning: --force: {o}"));
    }
    let journal = execute::open_journal(&c, a.rollout.journal.as_deref())?;
    run(g, cloud, journal, "deploy", &req, &prepared, None, a.rollout.yes).await
}

pub async fn rollback(g: &GlobalArgs, c: Config, a: &GroupRollbackArgs) -> Result<u8, Error> {
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let journal = execute::open_journal(&c, a.rollout.journal.as_deref())?;
    if let Some((deploy_run, _, saved)) = pipeline::blue_of(&journal, &a.group)? {
        // A blue-green deployment: the traffic goes back to blue, every route as it was.
        let blue = &saved.prepared.group;
        let req = request(blue, ImageChoice::Image(saved.prepared.image_id.clone()), true, &a.rollout)?;
        let green = saved.prepared.traffic.as_ref().map(|t| t.green_group.clone()).unwrap_or_default();
        execute::ask(&format!("Move the traffic from {green} back to {blue}?"), "rollback", a.rollout.yes)?;
        let spinner = Spinner::new(&format!("rollback {}", a.group));
        let d = pipeline::roll_back_blue_green(cloud, journal, deploy_run, &saved, &req, &spinner).await?;
        match g.output {
            Output::Json => render::json("amictl.deployment/v1", &d)?,
            Output::Table => outln!(
                "traffic back on {} (launch template version {}, {}); {green} scaled in; run {}",
                d.group,
                d.version,
                d.image_id,
                d.run_id
            ),
        }
        return Ok(exit::OK);
    }
    let prepared = pipeline::prepare_rollback(cloud, &journal, &a.group).await?;
    let req = request(&a.group, ImageChoice::Image(prepared.image_id.clone()), true, &a.rollout)?;
    run(g, cloud, journal, "rollback", &req, &prepared, None, a.rollout.yes).await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    g: &GlobalArgs,
    cloud: &amictl_core::aws::sdk::SdkCloud,
    journal: amictl_core::journal::Journal,
    command: &str,
    req: &DeployRequest,
    p: &Prepared,
    resume: Option<i64>,
    yes: bool,
) -> Result<u8, Error> {
    let to = match p.target_version {
        Some(v) => format!("version {v} ({})", p.image_label),
        None => format!("{} (a new version from {})", p.image_label, p.previous_version),
    };
    let question = format!(
        "Move group {} ({:?}) from version {} ({}) to {to}?",
        p.group, req.strategy, p.previous_version, p.previous_label
    );
    execute::ask(&question, command, yes)?;
    let spinner = Spinner::new(&format!("{command} {}", p.group));
    let d = pipeline::run(cloud, journal, command, req, p, resume, &spinner, Utc::now()).await?;
    match g.output {
        Output::Json => render::json("amictl.deployment/v1", &d)?,
        Output::Table => print(&d),
    }
    for n in &d.notes {
        crate::out::eprint_line(&format!("note: {n}"));
    }
    Ok(if d.outcome == "deployed" { exit::OK } else { exit::FINDINGS })
}

fn print(d: &Deployment) {
    match d.outcome.as_str() {
        "deployed" if d.command == "rollback" => outln!(
            "{} rolled back to {} (launch template version {}, pinned), from version {} ({}); run {}",
            d.group,
            d.image_id,
            d.version,
            d.previous_version,
            d.previous_image.as_deref().unwrap_or("-"),
            d.run_id
        ),
        "deployed" if d.green_group.is_some() => outln!(
            "{} takes the traffic, running {} (launch template version {}); {} scaled in (last-known-good: version {}, {}); run {}",
            d.green_group.as_deref().unwrap_or("-"),
            d.image_id,
            d.version,
            d.group,
            d.previous_version,
            d.previous_image.as_deref().unwrap_or("-"),
            d.run_id
        ),
        "deployed" => outln!(
            "{} runs {} (launch template version {}, pinned); last-known-good: version {} ({}); run {}",
            d.group,
            d.image_id,
            d.version,
            d.previous_version,
            d.previous_image.as_deref().unwrap_or("-"),
            d.run_id
        ),
        _ => outln!(
            "{}: {} not deployed, the group is back on version {} ({}): {}; run {}",
            d.group,
            d.image_id,
            d.previous_version,
            d.previous_image.as_deref().unwrap_or("-"),
            d.reason.as_deref().unwrap_or("a health gate failed"),
            d.run_id
        ),
    }
}

pub async fn status(g: &GlobalArgs, c: Config, a: &StatusArgs) -> Result<u8, Error> {
    let conn = connect_one(&c).await?;
    let journal = execute::open_journal(&c, a.journal.as_deref())?;
    let groups = pipeline::status(&conn.clouds[0], &journal, a.group.as_deref()).await?;
    match g.output {
        Output::Json => render::json("amictl.status/v1", &serde_json::json!({ "groups": groups }))?,
        Output::Table => {
            for s in &groups {
                let images: Vec<String> = s.instances_by_image.iter().map(|(i, n)| format!("{i} ×{n}")).collect();
                outln!(
                    "{}: version {}{} ({}); {} of {} in service; instances: {}{}{}",
                    s.group,
                    s.named_version.as_deref().unwrap_or("-"),
                    if s.pinned { "" } else { " (not pinned)" },
                    s.image_id.as_deref().unwrap_or("-"),
                    s.in_service,
                    s.desired_capacity,
                    if images.is_empty() { "none".into() } else { images.join(", ") },
                    s.refresh.as_ref().map(|r| format!("; refresh {} {}%", r.status, r.percentage)).unwrap_or_default(),
                    s.last_known_good
                        .as_ref()
                        .map(|l| format!(
                            "; last-known-good version {} ({})",
                            l.version,
                            l.image_id.as_deref().unwrap_or("-")
                        ))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(exit::OK)
}
