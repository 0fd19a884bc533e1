//! Command line. `main.rs` only calls [`run`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::directory::Directory;
use crate::domain::decide::decide_and_minimise;
use crate::domain::policy::{schema_text, SharingPolicy};
use crate::domain::submission::ReferralSubmission;
use crate::domain::{CountryCode, OrgId};
use crate::{policy_files, schemas};

#[derive(Debug, Parser)]
#[command(name = "referral-gateway", version, about = "Per-country gateway of a transnational referral federation")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// DPO sharing policies: check, explain, schema.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print a JSON Schema (2020-12): the referral submission or the directory.
    Schema { which: SchemaName },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaName {
    Referral,
    Directory,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate every *.cedar file in a directory against the schema; exit 1 and
    /// print each problem (file:line:column) if any is invalid.
    Check { dir: PathBuf },
    /// Decide a referral offline and print the decision and minimised payload as JSON.
    Explain {
        /// A referral submission (JSON, see schemas/referral.schema.json).
        #[arg(long)]
        referral: PathBuf,
        /// Recipient organisation id; defaults to the referral's destination.
        #[arg(long)]
        to: Option<String>,
        /// The sending gateway's country (ISO 3166-1 alpha-3), for corridor policies.
        #[arg(long, env = "RGW_COUNTRY")]
        from: String,
        #[arg(long, default_value = "config/directory.example.json")]
        directory: PathBuf,
        #[arg(long, default_value = "config/policies")]
        policies: PathBuf,
        /// Decide as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// Print the Cedar schema that policies are validated against.
    Schema,
}

/// A failure to report on stderr with exit code 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(PolicyCommand::Check { dir }) => policy_check(&dir),
        Command::Policy(PolicyCommand::Explain { referral, to, from, directory, policies, at }) => {
            policy_explain(&referral, to.as_deref(), &from, &directory, &policies, at.unwrap_or_else(Utc::now))
        }
        Command::Policy(PolicyCommand::Schema) => print(&schema_text()).map(|()| ExitCode::SUCCESS),
        Command::Schema { which } => {
            let schema = match which {
                SchemaName::Referral => schemas::referral_schema(),
                SchemaName::Directory => schemas::directory_schema(),
            };
            serde_json::to_string_pretty(&schema).map_err(CliError::from).and_then(|text| print(&text)).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })
}

fn policy_check(dir: &Path) -> Result<ExitCode, CliError> {
    match policy_files::load(dir) {
        Ok(policy) => {
            let policies = policy.dpo_policies();
            print(&format!("ok: {} policies in {} are valid (version {})", policies.len(), dir.display(), policy.version()))?;
            for (id, effect) in policies {
                print(&format!("  {effect} {id}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            print(&error.to_string())?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn policy_explain(
    referral: &Path,
    to: Option<&str>,
    from: &str,
    directory: &Path,
    policies: &Path,
    now: DateTime<Utc>,
) -> Result<ExitCode, CliError> {
    let sender = CountryCode::parse(from).map_err(|e| CliError::Usage(format!("--from: {e}")))?;
    let submission = ReferralSubmission::parse(&read(referral)?, now)
        .map_err(|e| CliError::Usage(format!("{}: {e}", referral.display())))?;
    let directory = Directory::parse(&read(directory)?).map_err(|e| CliError::Usage(format!("{}: {e}", directory.display())))?;
    let policy: SharingPolicy = match policy_files::load(policies) {
        Ok(policy) => policy,
        Err(error) => {
            print(&error.to_string())?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let destination = match to {
        Some(id) => OrgId::parse(id).map_err(|e| CliError::Usage(format!("--to: {e}")))?,
        None => submission.destination.clone(),
    };
    let recipient = directory.recipient(&destination);
    let (decision, payload) = decide_and_minimise(
        &submission.case,
        &submission.consent,
        sender,
        recipient.as_ref(),
        submission.purpose,
        &policy,
        now,
    );
    let report = json!({
        "recipient": recipient.as_ref().map(|r| json!({
            "id": r.id,
            "country": r.country,
            "acts_for_state": r.state(),
            "kind": r.kind,
            "state_actor": r.is_state_actor(),
        })),
        "decided_at": now,
        "decision": decision,
        "payload": payload,
    });
    print(&serde_json::to_string_pretty(&report)?)?;
    Ok(ExitCode::SUCCESS)
}
