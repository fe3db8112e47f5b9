use amictl_core::config::{Config, SharingScope};
use amictl_core::Error;

use crate::cli::{GlobalArgs, Output, ScanArgs};
use crate::exit;
use crate::render;

pub async fn run(g: &GlobalArgs, c: Config, a: &ScanArgs) -> Result<u8, Error> {
    let (_conn, inv) = super::load_estate(&c, a, SharingScope::Unreferenced).await?;
    match g.output {
        Output::Json => render::json("amictl.inventory/v1", &inv)?,
        Output::Table => render::print(&render::inventory_table(&inv, render::width())),
    }
    super::require_complete(&inv)?;
    Ok(exit::OK)
}
