//! incidentd: turns monitoring alert floods into a few correct ITSM incidents.
//!
//! The pipeline (DESIGN §2) is a chain of pure stages wrapped by thin async
//! tasks; `app` is the only place that wires them together.

pub mod api;
pub mod app;
pub mod change;
pub mod client;
pub mod cmdb;
pub mod config;
pub mod correlate;
pub mod dedup;
pub mod domain;
pub mod incident;
pub mod ingest;
pub mod kpi;
pub mod net;
pub mod normalize;
pub mod offline;
pub mod outbound;
pub mod rules;
pub mod ruletest;
pub mod slo;
pub mod store;
pub mod telemetry;
pub mod ui;
