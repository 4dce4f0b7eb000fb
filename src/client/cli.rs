//! The client commands' arguments, as clap reads them (`main` flattens
//! [`ClientCommand`] into the binary's commands).

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// How a read command prints what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and readable lines, for people.
    Table,
    /// The API's JSON answer as it came, for scripts.
    Json,
}

/// Where the daemon is and how to talk to it. Global: accepted before or
/// after a subcommand (`incidentd incidents -o json show 4` and
/// `incidentd incidents show 4 -o json` alike).
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The daemon's base URL.
    #[arg(
        long,
        env = "INCIDENTD_SERVER",
        default_value = "http://127.0.0.1:9797",
        global = true
    )]
    pub server: String,
    /// A file holding the API's bearer token (else $INCIDENTD_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an https server, besides the system's.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a listener that requires one.
    #[arg(long, value_name = "FILE", requires = "client_key", global = true)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert", global = true)]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for the server before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, global = true)]
    pub timeout: u64,
    /// `table` for people, `json` for scripts (the API's answer).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// The commands that talk to a running daemon.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Incidents of a running daemon: list (the default), show, ack, resolve, hold, resume.
    Incidents(IncidentsArgs),
    /// The business services with their SLOs, error budgets, active incidents and ITSM KPIs.
    Services(ServicesArgs),
    /// The CMDB's CIs: list (the default) or show one.
    Cis(CisArgs),
    /// The alerts firing now, or (--suppressed) those a rule suppressed.
    Alerts(AlertsArgs),
}

#[derive(Args, Debug)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    pub cmd: Option<IncidentsCmd>,
    #[command(flatten)]
    pub filter: IncidentFilter,
    #[command(flatten)]
    pub conn: Conn,
}

/// What `incidents` lists; given before or after `list` (no defaults
/// here, so that the two places merge: see [`IncidentFilter::or`]).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    /// open, acknowledged, resolved, active (open or acknowledged) or all [default: active].
    #[arg(long)]
    pub state: Option<String>,
    /// Only this priority (P1..P5).
    #[arg(long)]
    pub priority: Option<String>,
    /// Only incidents impacting this business service.
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many, newest first [default: 100].
    #[arg(long)]
    pub limit: Option<u32>,
}

impl IncidentFilter {
    /// This filter, completed by `other` where it says nothing.
    pub fn or(self, other: IncidentFilter) -> IncidentFilter {
        IncidentFilter {
            state: self.state.or(other.state),
            priority: self.priority.or(other.priority),
            service: self.service.or(other.service),
            limit: self.limit.or(other.limit),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCmd {
    /// List incidents (the default).
    List(IncidentFilter),
    /// One incident: summary, SLA timers, alerts and timeline.
    Show {
        /// The incident's id.
        id: i64,
    },
    /// Acknowledge an incident.
    Ack(ActArgs),
    /// Resolve an incident.
    Resolve(ActArgs),
    /// Put an incident on hold (a reason in `sla.pause_on` stops its SLA clocks).
    Hold(HoldArgs),
    /// Take an incident off hold.
    Resume(ActArgs),
}

#[derive(Args, Debug)]
pub struct ActArgs {
    /// The incident's id.
    pub id: i64,
    /// Who acts, as the timeline shows it (default: $USER). With API
    /// tokens the daemon records the token's name instead.
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Args, Debug)]
pub struct HoldArgs {
    /// The incident's id.
    pub id: i64,
    /// Why it waits: a-z, 0-9, '_' and '-' (e.g. awaiting_vendor).
    #[arg(long)]
    pub reason: String,
    /// Who acts (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct CisArgs {
    #[command(subcommand)]
    pub cmd: Option<CisCmd>,
    #[command(flatten)]
    pub filter: CiFilter,
    #[command(flatten)]
    pub conn: Conn,
}

/// What `cis` lists; given before or after `list`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CiFilter {
    /// Only CIs of this class (database, application, …).
    #[arg(long)]
    pub class: Option<String>,
    /// Only CIs of this business service.
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many, by id [default: 500].
    #[arg(long)]
    pub limit: Option<u32>,
}

impl CiFilter {
    /// This filter, completed by `other` where it says nothing.
    pub fn or(self, other: CiFilter) -> CiFilter {
        CiFilter {
            class: self.class.or(other.class),
            service: self.service.or(other.service),
            limit: self.limit.or(other.limit),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CisCmd {
    /// List CIs (the default).
    List(CiFilter),
    /// One CI: what it depends on, what depends on it, what its failure hurts.
    Show {
        /// The CI's id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// The alerts a rule suppressed, with the rule and its reason.
    #[arg(long)]
    pub suppressed: bool,
    #[arg(long)]
    pub alertname: Option<String>,
    /// Only alerts bound to a CI of this business service.
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub ci: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 500)]
    pub limit: u32,
    #[command(flatten)]
    pub conn: Conn,
}
