//! Multi-step operations that change the estate: each strings pure decisions (the catalog,
//! the planner) and [`crate::aws::Cloud`] calls together, journaling every step.

pub mod catalog;
