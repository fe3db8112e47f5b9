//! The launch template side of a deployment: the group pinned to a number, the new version made
//! once, and the last-known-good recorded.

use super::{created_version, once, Prepared};
use crate::aws::{Cloud, Groups};
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;
use crate::policy::LAST_KNOWN_GOOD_TAG;

/// `$Default` / `$Latest`: the group pinned to the number it means now, before a new version
/// exists (on `$Latest` the group would launch it at once), and once only (a resumed run must
/// not pin the group back while its deployment moves it on).
pub(super) async fn pin_current<C: Groups>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if p.named_version.chars().all(|c| c.is_ascii_digit()) {
        return Ok(());
    }
    let pin = async {
        cloud.pin_group(&p.group, &p.template_id, p.previous_version).await?;
        Ok(format!("{} pinned to version {}", p.group, p.previous_version))
    };
    once(run, "pin-current", progress, pin).await.map(drop)
}

/// The new version: made once (a resumed run reads the number it journaled, or finds the
/// version an interrupted attempt made before it could journal it).
pub(super) async fn new_version<C: Cloud + Groups>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<i64, Error> {
    match run.recorded("create-version")? {
        Recorded::Done(detail) => {
            if let Some(v) = created_version(&detail) {
                return Ok(v);
            }
        }
        Recorded::Started => {
            if let Some((v, Some(image))) = cloud.template_version(&p.template_id, "$Latest").await? {
                if image == p.image_id && v > p.previous_version {
                    return Ok(v);
                }
            }
        }
        Recorded::Never => {}
    }
    let token = if p.token.is_empty() { format!("amictl-deploy-{}-{}", run.id(), p.group) } else { p.token.clone() };
    let description = format!("{} by amictl (run {}), from version {}", p.image_id, run.id(), p.previous_version);
    let create = async {
        Ok(cloud.create_template_version(&p.template_id, p.previous_version, &p.image_id, &description, &token).await?)
    };
    run.step("create-version", progress, create, |v| format!("version {v} of {} runs {}", p.template_id, p.image_id))
        .await
}

/// Tags the previous image as the group's rollback target, which retirement keeps.
pub(super) async fn record_last_known_good<C: Cloud>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let Some(image) = p.previous_image.clone().filter(|i| i.starts_with("ami-")) else { return Ok(()) };
    let tag = async {
        cloud.tag(std::slice::from_ref(&image), &[(LAST_KNOWN_GOOD_TAG.into(), p.group.clone())]).await?;
        Ok(format!("{image} (version {}) is {}'s last-known-good", p.previous_version, p.group))
    };
    once(run, "record-last-known-good", progress, tag).await.map(drop)
}

/// The image a version launches: its AMI, or the one a `resolve:ssm:` reference names now.
pub(super) async fn image_of<C: Cloud>(cloud: &C, named: Option<&str>, version: i64) -> Result<String, Error> {
    let named = named.unwrap_or_default();
    let Some(reference) = named.strip_prefix("resolve:ssm:") else { return Ok(named.to_string()) };
    let read = cloud.parameter_values(&[reference.to_string()]).await;
    read.found
        .get(reference)
        .map(|v| v.value.clone())
        .ok_or_else(|| Error::Other(format!("cannot read {named}, the image of launch template version {version}")))
}
