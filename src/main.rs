//! CLI parse → app; nothing else.

use clap::{CommandFactory, Parser, Subcommand};
use incidentd::app::commands;
use incidentd::client::cli::ClientCommand;
use incidentd::config::Overrides;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: the pipeline allocates per label
/// and the store writer builds large column arrays per batch; with glibc,
/// malloc, free and page faults from trimmed arenas took about half of the
/// daemon's CPU under a Kafka alert storm (BENCHMARKS.md entry 6). Its v2
/// (Cargo.toml says why) for memory per active alert (entry 21).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "incidentd",
    version,
    about = "Turns monitoring alert floods into a few correct ITSM incidents"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Serve {
        #[arg(long, env = "INCIDENTD_CONFIG")]
        config: Option<PathBuf>,
        /// Address for the webhook and API (default 127.0.0.1:9797).
        #[arg(long)]
        listen: Option<String>,
        /// Where the SQLite database lives (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rule directory (default ./rules).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// CMDB file (default deploy/cmdb.yaml when present).
        #[arg(long)]
        cmdb: Option<PathBuf>,
        /// Store: `sqlite` (default, under the data dir) or a postgres:// URL.
        #[arg(long, env = "INCIDENTD_STORE")]
        store: Option<String>,
    },
    /// Validate config, rules, CMDB and change records; print every error; exit 1 if any.
    Check {
        #[arg(long, env = "INCIDENTD_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        cmdb: Option<PathBuf>,
        /// Change records (JSON) to validate against the CMDB.
        #[arg(long)]
        changes: Option<PathBuf>,
    },
    /// Copy the SQLite database (DIR/incidentd.db) consistently into OUT, also while the daemon runs.
    ///
    /// The copy is made with SQLite's VACUUM INTO on a read-only connection: one
    /// transaction, so it is consistent as of its start, and compact. A daemon starts
    /// from it (restore: stop the daemon, put the copy in place of incidentd.db, remove
    /// incidentd.db-wal, incidentd.db-shm and journal/). The journal is not copied: a
    /// running daemon's tables trail its journal by milliseconds, and those last
    /// milliseconds may be missing from the copy (a stopped daemon's tables hold
    /// everything). With OUT `-` the copy goes to stdout, staged in a temporary file in
    /// the data directory that is unlinked before it is streamed (the data volume needs
    /// room for one copy). PostgreSQL stores are refused: use pg_dump.
    Backup {
        #[arg(long, env = "INCIDENTD_CONFIG")]
        config: Option<PathBuf>,
        /// Where the SQLite database lives (default: the config's data_dir, else ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The store as `serve` takes it: only SQLite is copied.
        #[arg(long, env = "INCIDENTD_STORE", hide = true)]
        store: Option<String>,
        /// A new file (an existing one is never overwritten), or `-` for stdout.
        out: PathBuf,
    },
    /// Run recorded alert bodies through the pipeline and print the incidents as JSON.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        rules: Option<PathBuf>,
        /// CMDB file (default: the configured one, or deploy/cmdb.yaml when present).
        #[arg(long)]
        cmdb: Option<PathBuf>,
        /// Change records (JSON array) to apply.
        #[arg(long)]
        changes: Option<PathBuf>,
        /// JSON lines of Alertmanager webhook bodies or canonical alerts, in delivery order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests (YAML cases) in a directory.
    Test {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(ClientCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cmd = match cli.cmd {
        // A client needs no thread pool: it makes a request or two.
        Cmd::Client(c) => return commands::client(c),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "incidentd",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        other => other,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("incidentd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cmd {
            Cmd::Serve {
                config,
                listen,
                data_dir,
                rules,
                cmdb,
                store,
            } => {
                let overrides = Overrides {
                    listen,
                    data_dir,
                    rules_dir: rules,
                    cmdb,
                    store,
                };
                commands::serve(config, overrides).await
            }
            Cmd::Check {
                config,
                rules,
                cmdb,
                changes,
            } => {
                let overrides = Overrides {
                    rules_dir: rules,
                    cmdb,
                    ..Overrides::default()
                };
                commands::check(config, overrides, changes)
            }
            Cmd::Backup {
                config,
                data_dir,
                store,
                out,
            } => {
                let overrides = Overrides {
                    data_dir,
                    store,
                    ..Overrides::default()
                };
                commands::backup(config, overrides, out).await
            }
            Cmd::Replay {
                config,
                rules,
                cmdb,
                changes,
                files,
            } => {
                commands::replay(commands::ReplayArgs {
                    config,
                    rules,
                    cmdb,
                    changes,
                    files,
                })
                .await
            }
            Cmd::Test { dir, config } => commands::test(&dir, config.as_deref()).await,
            // Answered above, without this runtime.
            Cmd::Client(_) | Cmd::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Every cause once, secrets in URLs masked.
            let err: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("incidentd: {}", incidentd::net::chain(err));
            ExitCode::FAILURE
        }
    }
}
