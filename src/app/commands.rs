//! One function per CLI command: what it prints and the exit code it
//! returns (`main` only parses arguments).

use crate::config::Overrides;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `incidentd serve`: runs until SIGTERM or Ctrl-C.
pub async fn serve(config: Option<PathBuf>, overrides: Overrides) -> Result<ExitCode> {
    super::serve(config, overrides).await?;
    Ok(ExitCode::SUCCESS)
}

/// `incidentd check`: warnings and errors on stderr, each on its line;
/// exit 1 if there is any error, else what was checked on stdout.
pub fn check(
    config: Option<PathBuf>,
    overrides: Overrides,
    changes: Option<PathBuf>,
) -> Result<ExitCode> {
    let report = super::check(config, overrides, changes.as_deref())?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.errors.is_empty() {
        for line in &report.checked {
            println!("ok: {line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    for p in &report.errors {
        eprintln!("error: {p}");
    }
    eprintln!("{} error(s)", report.errors.len());
    Ok(ExitCode::from(1))
}

/// `incidentd backup`: the copy in `out` (`-`: on stdout), a one-line
/// summary on stderr; exit 1 with the reason when refused or failed.
/// SIGTERM or Ctrl-C stops it without leaving a partial copy in a file.
pub async fn backup(
    config: Option<PathBuf>,
    overrides: Overrides,
    out: PathBuf,
) -> Result<ExitCode> {
    let target = super::backup::Target::parse(out);
    let partial = match target {
        super::backup::Target::Stdout => "; what went to stdout is incomplete",
        super::backup::Target::File(_) => "",
    };
    let mut stops = super::serve::listen_for_stops();
    tokio::select! {
        summary = super::backup::backup(config, overrides, target) => {
            eprintln!("{}", summary?);
            Ok(ExitCode::SUCCESS)
        }
        Some(()) = stops.recv() => {
            // The copy's future is dropped: its file is removed.
            eprintln!("incidentd: backup interrupted: its partial copy is removed{partial}");
            Ok(ExitCode::from(130))
        }
    }
}

/// What `incidentd replay` reads.
pub struct ReplayArgs {
    pub config: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    pub cmdb: Option<PathBuf>,
    pub changes: Option<PathBuf>,
    pub files: Vec<PathBuf>,
}

/// `incidentd replay`: the incidents, problems and a summary (alerts,
/// incidents, pages) as JSON on stdout; each rejected alert on stderr (the
/// rest of its body goes on).
pub async fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let cmdb = args
        .cmdb
        .map_or(super::CmdbChoice::Configured, super::CmdbChoice::File);
    let setup = super::offline_setup(
        args.config.as_deref(),
        args.rules,
        cmdb,
        args.changes.as_deref(),
    )?;
    let out = super::replay(setup, &args.files).await?;
    for (at, r) in &out.rejected {
        eprintln!(
            "replay: {at}: {}: {} (alert rejected; the rest of the body goes on)",
            r.field, r.error
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "incidents": out.incidents,
            "problems": out.problems,
            "summary": out.summary,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// `incidentd test`: rule unit tests; exit 1 when any fails.
pub async fn test(dir: &Path, config: Option<&Path>) -> Result<ExitCode> {
    let summary = crate::ruletest::run_dir(dir, config, &mut std::io::stdout()).await?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A client command (`incidentd incidents`, `services`, `cis`, `alerts`):
/// on a single-threaded runtime of its own; the answer on stdout, an error
/// on stderr with the exit code of its kind (see `client`).
pub fn client(cmd: crate::client::cli::ClientCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("incidentd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::client::run(cmd)) {
        Ok(out) => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("incidentd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
