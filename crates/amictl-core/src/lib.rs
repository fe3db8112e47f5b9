//! amictl's library: the inventory model, the pure analyses over it, and the AWS layer.
//!
//! - [`inventory`]: plain data, what exists.
//! - [`usage`]: which AMIs are in use and by what (pure).
//! - [`audit`]: compliance findings (pure).
//! - [`family`], [`config`]: how images are grouped; `amictl.toml`.
//! - [`aws`]: every AWS call, behind the [`aws::Cloud`] trait.

pub mod alerts;
pub mod apply;
pub mod audit;
pub mod aws;
pub mod catalog;
pub mod config;
pub mod engine;
pub mod error;
pub mod family;
#[cfg(test)]
mod fixtures;
pub mod host;
pub mod html;
pub mod iam;
pub mod inventory;
pub mod journal;
pub mod metrics;
pub mod patching;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod presets;
pub mod report;
pub mod scan;
pub mod sharing;
pub mod text;
pub mod time;
pub mod usage;

pub use error::{CloudError, CloudErrorKind, Error};
