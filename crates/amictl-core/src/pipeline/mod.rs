//! Multi-step operations that change the estate: each strings pure decisions (the catalog,
//! the planner, scan reports) and AWS calls together, journaling every step on the engine.
//!
//! - [`ephemeral`] and [`command`]: the one instance helper and the one SSM command runner
//!   every pipeline shares.
//! - [`catalog`]: capture, promote, roll back, revoke.
//! - [`bake`], [`validate`], [`scan`]: patched images, proven before anyone launches them.
//! - [`patch`]: patch in place, across a fleet, through SSM.
//! - [`deploy`]: a group moved to a new image (rolling, batched, blue-green, canary).
//! - [`emergency`]: a CVE to a patched fleet, every stage above in one run.

pub mod bake;
pub mod catalog;
pub mod command;
pub mod deploy;
pub mod emergency;
pub mod ephemeral;
pub mod patch;
pub mod scan;
pub mod validate;
