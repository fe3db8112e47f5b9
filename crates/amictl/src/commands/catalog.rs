//! `amictl image …` and `amictl channel …`.

use amictl_core::aws::collect::{collect_scope, DEFAULT_CONCURRENCY};
use amictl_core::catalog::{self, Bump};
use amictl_core::config::{Config, SharingScope};
use amictl_core::pipeline::catalog as pipeline;
use amictl_core::Error;
use chrono::Utc;

use super::{connect_one, duration_flag, execute};
use crate::cli::{ChannelCommand, GlobalArgs, ImageCommand, Output};
use crate::exit;
use crate::out::outln;
use crate::progress::Spinner;
use crate::render;

pub async fn image(g: &GlobalArgs, c: Config, cmd: &ImageCommand) -> Result<u8, Error> {
    let rules = c.family_rules()?;
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let now = Utc::now();
    match cmd {
        ImageCommand::Create(a) => {
            if a.no_reboot {
                crate::out::eprint_line("warning: --no-reboot: the instance keeps running while its disks are copied, so the image's file systems may be inconsistent");
            }
            let req = pipeline::CaptureRequest {
                instance_id: a.instance.clone(),
                family: a.family.clone(),
                version: a.version.clone(),
                bump: match a.bump.as_str() {
                    "major" => Bump::Major,
                    "minor" => Bump::Minor,
                    _ => Bump::Patch,
                },
                no_reboot: a.no_reboot,
                timeout: duration_flag("--timeout", &a.timeout)?,
            };
            let journal = execute::open_journal(&c, a.journal.as_deref())?;
            let spinner = Spinner::new(&format!("capturing {} from {}", a.family, a.instance));
            let captured = pipeline::capture(cloud, journal, &req, &rules, &spinner, now).await?;
            match g.output {
                Output::Json => render::json("amictl.capture/v1", &captured)?,
                Output::Table => outln!(
                    "{} {} ({} {}) captured from {} (built from {}); snapshots {}{}",
                    if captured.reused { "Reused" } else { "Created" },
                    captured.image_id,
                    captured.family,
                    captured.version,
                    captured.source_instance,
                    captured.source_ami,
                    captured.snapshot_ids.join(", "),
                    if captured.reused { " (an earlier attempt had made it)" } else { "" }
                ),
            }
        }
        ImageCommand::List(a) => {
            let scope = collect_scope(cloud, SharingScope::Unreferenced, DEFAULT_CONCURRENCY).await?;
            let rows = catalog::listing(
                &scope,
                a.family.as_deref(),
                &rules,
                &c.compliance.scan_tag,
                &c.compliance.scan_passed_values,
                now,
            );
            if rows.is_empty() {
                if let Some(f) = &a.family {
                    return Err(no_such_family(f, &scope.scope().to_string()));
                }
            }
            match g.output {
                Output::Json => render::json("amictl.image-list/v1", &serde_json::json!({ "images": rows }))?,
                Output::Table => render::print(&render::image_list(&rows, render::width())),
            }
        }
        ImageCommand::Lineage(a) => {
            let images = amictl_core::aws::Cloud::owned_images(cloud).await?;
            let family_of = |i: &amictl_core::inventory::Image| rules.name_of(i);
            let mut forest = catalog::lineage(&images, &c.retire.lineage_tag, &family_of);
            if let Some(f) = &a.family {
                forest = forest.into_iter().filter_map(|n| of_family(n, f)).collect();
                if forest.is_empty() {
                    return Err(no_such_family(f, &amictl_core::aws::Cloud::scope(cloud).to_string()));
                }
            }
            match g.output {
                Output::Json => render::json("amictl.lineage/v1", &serde_json::json!({ "roots": forest }))?,
                Output::Table => render::print(&render::lineage(&forest)),
            }
        }
        ImageCommand::Revoke(a) => {
            let revoked =
                pipeline::revoke(cloud, &a.image, a.descendants, &a.reason, a.deprecate, &c.retire.lineage_tag, now)
                    .await?;
            match g.output {
                Output::Json => render::json("amictl.revoke/v1", &revoked)?,
                Output::Table => outln!(
                    "Revoked {} ({}){}",
                    revoked.image_ids.join(", "),
                    revoked.reason,
                    if revoked.deprecated.is_empty() {
                        String::new()
                    } else {
                        format!("; deprecated {}", revoked.deprecated.join(", "))
                    }
                ),
            }
        }
    }
    Ok(exit::OK)
}

/// One error for every command that is given a family with no image.
fn no_such_family(family: &str, scope: &str) -> Error {
    Error::NotFound {
        what: format!(
            "family {family} (no AMI the family rules put in it: tag keys, name pattern, [[families.family]])"
        ),
        looked_in: scope.to_string(),
    }
}

/// The family's part of a lineage tree: its images and what they were built from, without the
/// branches that lead to no image of the family (another family's images beside them).
fn of_family(mut n: catalog::LineageNode, f: &str) -> Option<catalog::LineageNode> {
    let ours = n.family.as_deref() == Some(f);
    n.children = std::mem::take(&mut n.children).into_iter().filter_map(|c| of_family(c, f)).collect();
    (ours || !n.children.is_empty()).then_some(n)
}

pub async fn channel(g: &GlobalArgs, c: Config, cmd: &ChannelCommand) -> Result<u8, Error> {
    let rules = c.family_rules()?;
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let who = conn.callers.first().cloned().unwrap_or_default();
    let now = Utc::now();
    let change = match cmd {
        ChannelCommand::Promote(a) => {
            pipeline::promote(
                cloud,
                execute::open_journal(&c, a.journal.as_deref())?,
                &a.channel.family,
                &a.channel.channel,
                &a.image,
                &rules,
                &c.compliance.scan_tag,
                &c.compliance.scan_passed_values,
                a.force,
                &who,
                now,
            )
            .await?
        }
        ChannelCommand::Rollback(a) => {
            let journal = execute::open_journal(&c, a.journal.as_deref())?;
            pipeline::rollback(cloud, journal, &a.channel.family, &a.channel.channel, a.force, &who, now).await?
        }
        ChannelCommand::History(a) => {
            let ch = pipeline::existing_channel(cloud, &a.family, &a.channel).await?;
            match g.output {
                Output::Json => render::json("amictl.channel/v1", &ch)?,
                Output::Table => render::print(&render::channel_history(&ch, render::width())),
            }
            return Ok(exit::OK);
        }
    };
    for o in &change.overridden {
        crate::out::eprint_line(&format!("warning: --force: {o}"));
    }
    match g.output {
        Output::Json => render::json("amictl.channel-change/v1", &change)?,
        Output::Table => outln!(
            "{}/{} -> {} (was {}; {} version {})",
            change.family,
            change.channel,
            change.image_id,
            change.previous.as_deref().unwrap_or("unset"),
            change.parameter,
            change.version
        ),
    }
    Ok(exit::OK)
}
