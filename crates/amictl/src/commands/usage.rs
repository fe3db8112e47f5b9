use amictl_core::config::{Config, SharingScope};
use amictl_core::usage::{self, Reference};
use amictl_core::Error;
use serde::Serialize;

use crate::cli::{GlobalArgs, Output, UsageArgs};
use crate::exit;
use crate::render;

/// One AMI and what uses it, as `usage --output json` prints it.
#[derive(Debug, Serialize)]
pub struct ImageUsage {
    pub image_id: String,
    pub account: String,
    pub region: String,
    pub name: String,
    pub state: String,
    pub in_use: bool,
    pub in_use_by: Vec<Reference>,
    pub history: Vec<Reference>,
}

pub async fn run(g: &GlobalArgs, c: Config, a: &UsageArgs) -> Result<u8, Error> {
    for id in &a.images {
        if !id.starts_with("ami-") {
            return Err(Error::Usage(format!("{id:?} is not an AMI id (ami-…)")));
        }
    }
    let (_conn, inv) = super::load_estate(&c, &a.scan, SharingScope::All).await?;
    super::require_complete(&inv)?;
    let mut rows = Vec::new();
    for scope in &inv.scopes {
        let u = usage::analyze(scope);
        for image in &scope.images {
            if !a.images.is_empty() && !a.images.contains(&image.id) {
                continue;
            }
            let refs = u.refs(&image.id);
            let row = ImageUsage {
                image_id: image.id.clone(),
                account: scope.account.clone(),
                region: scope.region.clone(),
                name: image.name.clone(),
                state: image.state.clone(),
                in_use: u.in_use(&image.id),
                in_use_by: refs.iter().filter(|r| r.is_use()).cloned().collect(),
                history: refs.iter().filter(|r| !r.is_use()).cloned().collect(),
            };
            if (a.unused && row.in_use) || (a.used && !row.in_use) {
                continue;
            }
            rows.push(row);
        }
    }
    let missing: Vec<&String> = a.images.iter().filter(|id| !rows.iter().any(|r| &r.image_id == *id)).collect();
    if !missing.is_empty() && !(a.unused || a.used) {
        let looked: Vec<String> = inv.scopes.iter().map(|s| s.scope().to_string()).collect();
        let what = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Err(Error::NotFound {
            what: format!("AMI {what} (owned by this account)"),
            looked_in: looked.join(", "),
        });
    }
    match g.output {
        Output::Json => render::json("amictl.usage/v1", &serde_json::json!({ "images": rows }))?,
        Output::Table => render::print(&render::usage_table(&rows, render::width())),
    }
    Ok(exit::OK)
}
