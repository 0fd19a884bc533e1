//! Command line. `main.rs` only calls [`run`].
//!
//! One file of some 850 lines, on purpose: every command is a thin wrapper
//! over the library (parse the arguments, call one function, print), and
//! their clap definitions read best side by side, where a flag named one
//! way in one command and another way in the next shows at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::directory::membership::Removal;
use crate::directory::Directory;
use crate::domain::policy::{schema_text, DataProtectionPolicy};
use crate::domain::submission::ReferralSubmission;
use crate::domain::{CountryCode, OrgId};
use crate::app::SystemClock;
use crate::config::GatewayConfig;
use crate::startup::Application;
use crate::policy_proofs::{self, SolverCommand};
use crate::{policy_files, schemas};
use std::sync::Arc;

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
    /// Print a JSON Schema (2020-12): the referral submission or the
    /// directory; or the self-contained OpenAPI document of the API.
    Schema { which: SchemaName },
    /// Set up a new gateway in one directory (never overwriting a file):
    /// its keys, a configuration with every key written out with its
    /// default (`gateway.toml`), a self-signed certificate for the national
    /// API, the shipped DPO policy, and `directory-entry.json` (its
    /// endpoint, TLS pin and public keys) to send to the federation
    /// coordinator.
    Init {
        /// The gateway's country (ISO 3166-1 alpha-3).
        #[arg(long)]
        country: String,
        /// Where to write; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The federation endpoint peers reach this gateway at (`https://`);
        /// by default the listen address (or, on every address, the first
        /// `--tls-name`) and the federation port.
        #[arg(long)]
        endpoint: Option<String>,
        /// The address both listeners bind.
        #[arg(long, default_value = "0.0.0.0")]
        listen_address: std::net::IpAddr,
        /// The national API's port.
        #[arg(long, default_value_t = 8443)]
        national_port: u16,
        /// The federation listener's port.
        #[arg(long, default_value_t = 9443)]
        federation_port: u16,
        /// Host names or IP addresses of the TLS certificates.
        #[arg(long = "tls-name", default_value = "localhost")]
        tls_names: Vec<String>,
        /// Start of the published keys' validity (RFC 3339); now if not given.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Days the published keys are valid.
        #[arg(long, default_value_t = 365)]
        valid_days: i64,
    },
    /// Run the gateway.
    Serve {
        /// The gateway configuration (TOML); `RGW_...` variables override its keys.
        #[arg(long, env = "RGW_CONFIG_FILE")]
        config: PathBuf,
    },
    /// Run a local federation of three gateways (Italy, the Gambia, Guinea)
    /// with fresh keys and databases, and narrate referrals across it: a
    /// return with reintegration, the asylum firewall, family tracing, a
    /// tampered packet, the audit chains. Run it from the repository root.
    Demo {
        /// Where the demo keeps its keys, certificates, configurations and
        /// databases; cleared at each run.
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        /// Stay up afterwards (until Ctrl-C), printing URLs and curl commands.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run one gateway (Italy) on fresh demo files, with a client
    /// certificate holding every role (submitter, dpo, auditor, recipient)
    /// for the organisation ita-nrm: to try the API or fuzz it
    /// (.ci/openapi-fuzz). Prints one JSON line (the URL, the CA, the client
    /// certificate and key file), then serves until Ctrl-C or SIGTERM. Run
    /// it from the repository root.
    Sandbox {
        /// Where the sandbox keeps its files; cleared at each run.
        #[arg(long, default_value = "var/sandbox")]
        dir: PathBuf,
    },
    /// The gateway's keys: at rest, federation signing and encryption, TLS.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The federation directory (trust list): sign and verify.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The gateway configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Reports for the data-protection officer.
    #[command(subcommand)]
    Report(ReportCommand),
    /// For recipient organisations: open cases sealed end to end to them.
    #[command(subcommand)]
    Recipient(RecipientCommand),
}

#[derive(Debug, Subcommand)]
enum RecipientCommand {
    /// Open a case sealed end to end to this organisation: decrypt it with
    /// the organisation's key, verify the sending gateway's signature
    /// against the signed directory, and print the content as JSON. Takes
    /// the bare envelope, the case document of `GET /v1/inbox/{id}` or a
    /// webhook push. Exit 1 if it does not open or verify.
    Open {
        /// The organisation's private key: a JWK or a JWK set file. Repeat
        /// for each key kept during a rotation.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The organisation's id in the directory.
        #[arg(long)]
        organisation: String,
        /// The signed federation directory (compact JWS), as gateways read it.
        #[arg(long)]
        directory: PathBuf,
        /// The federation coordinator's public key (JWK) the directory is verified against.
        #[arg(long = "coordinator-key", alias = "coordinator")]
        coordinator_key: PathBuf,
        /// Check the directory's key windows as of this time (RFC 3339)
        /// instead of now: for opening an old delivery again, and for tests.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// What the gateway delivered, from a file, or `-` for stdin.
        packet: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Who holds what about a person: every referral about the subject this
    /// gateway sent or refused, what went where, under which consent and
    /// policy, what is still held where and what was erased when (JSON, as
    /// `GET /v1/subjects/{subject_ref}/report`). Audited.
    Subject {
        /// The subject reference, as the sending organisation gave it. Taken
        /// as every word given, so that a name typed by mistake is refused
        /// whole and never echoed.
        #[arg(num_args = 1.., required = true)]
        subject_ref: Vec<String>,
        #[arg(long, env = "RGW_CONFIG_FILE")]
        config: PathBuf,
    },
    /// Non-personal statistics (JSON, as `GET /v1/statistics`): this
    /// gateway's predefined tables of a closed month or quarter, signed by
    /// it (`--period` with `--config`); or, for the coordinating body,
    /// several gateways' signed answers, each verified against the
    /// directory, added up (`--merge`, with `--directory` and
    /// `--coordinator-key`, or `--config` to take both from). Exit 2 if
    /// any answer does not verify.
    Statistics {
        /// `2026-11` (a month) or `2026-Q4` (a quarter), ended.
        #[arg(long, required_unless_present = "merge", conflicts_with = "merge")]
        period: Option<String>,
        /// Answers to merge: files with a whole answer or its `signed` JWS.
        #[arg(long, num_args = 1..)]
        merge: Vec<PathBuf>,
        #[arg(long, env = "RGW_CONFIG_FILE")]
        config: Option<PathBuf>,
        /// The signed federation directory the answers are verified against.
        #[arg(long, requires = "coordinator_key")]
        directory: Option<PathBuf>,
        /// The coordinator's public key (JWK) the directory is verified against.
        #[arg(long = "coordinator-key", requires = "directory")]
        coordinator_key: Option<PathBuf>,
        /// Release as of this time (RFC 3339) instead of now; never later
        /// than now. For tests, and to issue a closed period again.
        #[arg(long, requires = "period")]
        at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key directory with fresh keys (never overwrites): at-rest
    /// keys, a federation signing key and encryption key, and a TLS key with
    /// a self-signed certificate for the federation endpoint.
    ///
    /// With `--recipient`: a recipient organisation's end-to-end key
    /// instead. Writes `<organisation>-enc-<kid>.jwk` (private, mode 0600)
    /// in the directory and prints the entry to add to the organisation's
    /// `keys` in the federation directory. Run it again to rotate.
    Init {
        /// The key directory; with `--recipient`, where the organisation's
        /// key file is written (`--out` is the same).
        #[arg(long, alias = "out")]
        dir: PathBuf,
        /// Host names or IP addresses of the federation endpoint's certificate.
        #[arg(long = "tls-name", default_value = "localhost", conflicts_with = "recipient")]
        tls_names: Vec<String>,
        /// Make a recipient organisation's encryption key, not a gateway's keys.
        #[arg(long, requires = "organisation")]
        recipient: bool,
        /// The organisation's id in the directory (with `--recipient`).
        #[arg(long, requires = "recipient")]
        organisation: Option<String>,
        /// Start of the key's validity (RFC 3339); now if not given (with `--recipient`).
        #[arg(long, requires = "recipient")]
        from: Option<DateTime<Utc>>,
        /// Days the key is valid (with `--recipient`; 365 if not given).
        #[arg(long, requires = "recipient")]
        valid_days: Option<i64>,
    },
    /// Add a new federation signing and encryption key beside the current ones.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print this gateway's public keys and TLS pin as directory entry fields,
    /// for the federation coordinator.
    Public {
        #[arg(long)]
        dir: PathBuf,
        /// Start of the keys' validity (RFC 3339); now if not given.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 365)]
        valid_days: i64,
    },
    /// Create the federation coordinator's signing key: `coordinator.jwk`
    /// (private, mode 0600) and `coordinator.pub.jwk`, which gateways trust.
    Coordinator {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Check a directory (JSON) and sign it with the coordinator's key (JWS).
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a member's entry (as `init` wrote it) to the directory, or
    /// replace the entry of the same country, and raise the serial: the next
    /// edition, checked as a gateway checks it. With `--sign`, sign it too.
    AddMember {
        /// The directory (JSON) to add to; without it, a new directory.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// The member's `directory-entry.json`.
        #[arg(long)]
        entry: PathBuf,
        /// Where the new edition (JSON) goes; it may be `--directory`.
        #[arg(long)]
        out: PathBuf,
        /// Sign the new edition with the coordinator's key.
        #[arg(long, requires = "coordinator_key")]
        sign: bool,
        /// The coordinator's private key (`keys coordinator`), with `--sign`.
        #[arg(long = "coordinator-key", requires = "sign")]
        coordinator_key: Option<PathBuf>,
        /// Where the signed edition goes; by default `--out` with the extension `.jws`.
        #[arg(long, requires = "sign")]
        signed_out: Option<PathBuf>,
        /// Let the entry take organisations of its country out of the
        /// directory (those it does not list); refused otherwise.
        #[arg(long)]
        remove_organisations: bool,
    },
    /// Verify a signed directory against the coordinator's public key; exit 1 if it fails.
    Verify {
        #[arg(long)]
        coordinator: PathBuf,
        signed: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print an example configuration: every key with its default and a
    /// comment (`config/gateway.example.toml` is this text; `init` writes
    /// the same one for a new gateway).
    Example,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exit 1 and name the first broken entry if any.
    Verify {
        #[arg(long, env = "RGW_CONFIG_FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaName {
    Referral,
    Directory,
    /// The OpenAPI 3.1 document (YAML) as committed in
    /// `schemas/openapi.yaml` and served (as JSON) at `/v1/openapi.json`:
    /// the hand-written paths with every schema generated, self-contained.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate every *.cedar file in a directory against the schema, and its
    /// retention.toml, end_to_end.toml and overrides.toml if there; exit 1 and print each
    /// problem (file:line:column) if any is invalid.
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
    /// Run the expected decisions in `dir`/tests/*.toml against the policies
    /// in `dir`, and report which DPO policies no test exercises. Exit 1 if a
    /// test fails.
    Test {
        dir: PathBuf,
        #[arg(long, default_value = "config/directory.example.json")]
        directory: PathBuf,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare a new version of the DPO's policies with the active one, for
    /// every request (cvc5): equivalent, narrows, widens or mixed, with a
    /// request that flips per purpose and direction.
    Compare {
        active: PathBuf,
        new: PathBuf,
        #[arg(long, env = "CVC5", conflicts_with = "cvc5_python")]
        cvc5: Option<PathBuf>,
        #[arg(long, env = "CVC5_PYTHON")]
        cvc5_python: Option<PathBuf>,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prove with an SMT solver (cvc5) that the built-in rules deny everything
    /// their specification requires whatever a DPO permits, that each built-in
    /// forbid matches exactly its specification and can apply, and that no
    /// built-in or DPO policy in `dir` can raise an evaluation error. Exit 1
    /// with a counterexample in plain words for any property that fails.
    Prove {
        dir: PathBuf,
        /// A cvc5 program that reads SMT-LIB on stdin (Debian's `cvc5`).
        #[arg(long, env = "CVC5", conflicts_with = "cvc5_python")]
        cvc5: Option<PathBuf>,
        /// A Python interpreter with PyPI's cvc5 package (the library, driven
        /// by the gateway's own SMT-LIB driver).
        #[arg(long, env = "CVC5_PYTHON")]
        cvc5_python: Option<PathBuf>,
        /// Prove these built-in rules instead of the gateway's own (to test
        /// the prover on a deliberately weakened set).
        #[arg(long, hide = true)]
        builtin_rules: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON body of `PUT /v1/policies` for a policy directory: its
    /// policy and rule files and its tests.
    Bundle {
        dir: PathBuf,
        /// Why this version (shown in the history).
        #[arg(long)]
        note: Option<String>,
        /// Once approved, take effect no earlier than this (RFC 3339).
        #[arg(long)]
        effective_from: Option<DateTime<Utc>>,
    },
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        // clap's message would quote the offending word: for a subject
        // report, that word may be part of a person's name.
        Err(_) if names_report_subject(std::env::args().skip(1)) => {
            eprintln!("error: usage: referral-gateway report subject <subject_ref> --config <file> (one opaque reference; nothing given is repeated)");
            return ExitCode::from(2);
        }
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Policy(PolicyCommand::Check { dir }) => policy_check(&dir),
        Command::Policy(PolicyCommand::Test { dir, directory, json }) => policy_test(&dir, &directory, json),
        Command::Policy(PolicyCommand::Prove { dir, cvc5, cvc5_python, builtin_rules, json }) => {
            policy_prove(&dir, &solver_command(cvc5, cvc5_python), builtin_rules.as_deref(), json)
        }
        Command::Policy(PolicyCommand::Compare { active, new, cvc5, cvc5_python, json }) => {
            policy_compare(&active, &new, &solver_command(cvc5, cvc5_python), json)
        }
        Command::Policy(PolicyCommand::Explain { referral, to, from, directory, policies, at }) => {
            policy_explain(&referral, to.as_deref(), &from, &directory, &policies, at.unwrap_or_else(now))
        }
        Command::Init { country, dir, endpoint, listen_address, national_port, federation_port, tls_names, from, valid_days } => {
            let country = CountryCode::parse(&country).map_err(|e| CliError::Usage(format!("--country: {e}")));
            let now = now();
            let from = from.unwrap_or_else(|| DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now));
            country.and_then(|country| {
                init(&crate::setup::InitOptions {
                    country,
                    dir,
                    listen_address,
                    national_port,
                    federation_port,
                    endpoint,
                    tls_names,
                    keys_from: from,
                    keys_until: from + chrono::Duration::days(valid_days.clamp(1, 3650)),
                })
            })
        }
        Command::Serve { config } => serve(&config),
        Command::Demo { dir, keep_running } => demo(&dir, keep_running),
        Command::Sandbox { dir } => sandbox(&dir),
        Command::Keys(KeysCommand::Init { dir, organisation: Some(organisation), from, valid_days, .. }) => {
            // Whole seconds: the directory entry reads better, and nothing is lost.
            let now = now();
            let from = from.unwrap_or_else(|| DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now));
            keys_init_recipient(&dir, &organisation, from, valid_days.unwrap_or(365))
        }
        Command::Keys(KeysCommand::Init { dir, tls_names, .. }) => keys_init(&dir, &tls_names),
        Command::Keys(KeysCommand::Rotate { dir }) => keys_rotate(&dir),
        Command::Keys(KeysCommand::Public { dir, from, valid_days }) => keys_public(&dir, from.unwrap_or_else(now), valid_days),
        Command::Keys(KeysCommand::Coordinator { dir }) => keys_coordinator(&dir),
        Command::Directory(DirectoryCommand::Sign { key, input, out }) => directory_sign(&key, &input, &out),
        Command::Directory(DirectoryCommand::AddMember { directory, entry, out, sign: _, coordinator_key, signed_out, remove_organisations }) => {
            let removal = if remove_organisations { Removal::Allowed } else { Removal::Refused };
            directory_add_member(directory.as_deref(), &entry, &out, coordinator_key.as_deref(), signed_out, removal)
        }
        Command::Directory(DirectoryCommand::Verify { coordinator, signed }) => directory_verify(&coordinator, &signed),
        Command::Audit(AuditCommand::Verify { config }) => audit_verify(&config),
        Command::Config(ConfigCommand::Example) => {
            print(&crate::config::template::render(&crate::config::template::Template::example())).map(|()| ExitCode::SUCCESS)
        }
        Command::Report(ReportCommand::Subject { subject_ref, config }) => report_subject(&subject_ref, &config),
        Command::Report(ReportCommand::Statistics { period: Some(period), config, at, .. }) => report_statistics(&period, config.as_deref(), at),
        Command::Report(ReportCommand::Statistics { merge, config, directory, coordinator_key, .. }) => {
            merge_statistics(&merge, config.as_deref(), directory.zip(coordinator_key))
        }
        Command::Recipient(RecipientCommand::Open { keys, organisation, directory, coordinator_key, at, packet }) => {
            recipient_open(&keys, &organisation, &directory, &coordinator_key, &packet, at.unwrap_or_else(now))
        }
        Command::Policy(PolicyCommand::Bundle { dir, note, effective_from }) => policy_bundle(&dir, note, effective_from),
        Command::Policy(PolicyCommand::Schema) => print(&schema_text()).map(|()| ExitCode::SUCCESS),
        Command::Schema { which } => {
            let text = match which {
                SchemaName::Referral => serde_json::to_string_pretty(&schemas::referral_schema()).map_err(CliError::from),
                SchemaName::Directory => serde_json::to_string_pretty(&schemas::directory_schema()).map_err(CliError::from),
                // YAML, as committed: the document is read by people too.
                SchemaName::Openapi => crate::http::openapi_yaml().map_err(CliError::Usage),
            };
            text.and_then(|text| print(&text)).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn load_config(path: &Path) -> Result<GatewayConfig, CliError> {
    GatewayConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))
}

fn serve(config_path: &Path) -> Result<ExitCode, CliError> {
    let config = load_config(config_path)?;
    crate::telemetry::init(&config.log);
    run_gateway(&config)
}

/// Runs a gateway until Ctrl-C or SIGTERM.
fn run_gateway(config: &GatewayConfig) -> Result<ExitCode, CliError> {
    runtime()?.block_on(async {
        let application = Application::build(config, Arc::new(SystemClock))
            .await
            .map_err(|e| CliError::Usage(format!("cannot start: {e}")))?;
        application.run_until_stopped().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs the three-gateway demo; exit 1 when a step does not behave.
fn demo(dir: &Path, keep_running: bool) -> Result<ExitCode, CliError> {
    crate::telemetry::init(&crate::config::LogConfig { level: "warn".to_owned(), ..crate::config::LogConfig::default() });
    runtime()?.block_on(async {
        match crate::demo::run(dir, keep_running).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("demo: {error}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// Runs the sandbox gateway until Ctrl-C or SIGTERM.
fn sandbox(dir: &Path) -> Result<ExitCode, CliError> {
    crate::telemetry::init(&crate::config::LogConfig { level: "warn".to_owned(), ..crate::config::LogConfig::default() });
    runtime()?.block_on(async {
        match crate::demo::sandbox::run(dir).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("sandbox: {error}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

fn audit_verify(config_path: &Path) -> Result<ExitCode, CliError> {
    let config = load_config(config_path)?;
    // Verifying must not create (and then bless) an empty database at a wrong path.
    if let Some(path) = crate::config::sqlite_path(&config.database.url)
        && !Path::new(path).is_file()
    {
        return Err(CliError::Usage(format!("database.url: no database file at {path}")));
    }
    runtime()?.block_on(async {
        let store = crate::store::open(&config.database).await.map_err(|e| CliError::Usage(e.to_string()))?;
        match crate::store::verify_audit_chain(store.as_ref()).await.map_err(|e| CliError::Usage(e.to_string()))? {
            // A gateway writes its first entry when it first starts (the
            // initial policy): an empty log means a wrong database or schema.
            Ok(verified) if verified.entries == 0 => {
                Err(CliError::Usage("the audit log is empty: is database.url (and database.schema) the gateway's?".to_owned()))
            }
            Ok(verified) => {
                print(&format!("ok: {} audit entries verified; head {}", verified.entries, verified.head))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                print(&format!("audit chain broken: {broken}"))?;
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// Whether the command line asks for `report subject`.
fn names_report_subject(args: impl Iterator<Item = String>) -> bool {
    let words: Vec<String> = args.collect();
    words.windows(2).any(|pair| matches!(pair, [first, second] if first == "report" && second == "subject"))
}

fn report_subject(words: &[String], config_path: &Path) -> Result<ExitCode, CliError> {
    // Checked as the API checks it, and never repeated: it may be a name typed by mistake.
    let [subject_ref] = words else {
        return Err(usage("subject_ref must be an opaque reference (8 to 64 characters, with a digit)"));
    };
    let subject_ref = crate::domain::SubjectRef::parse(subject_ref)
        .map(String::from)
        .map_err(|_| usage("subject_ref must be an opaque reference (8 to 64 characters, with a digit)"))?;
    let config = load_config(config_path)?;
    if let Some(path) = crate::config::sqlite_path(&config.database.url)
        && !Path::new(path).is_file()
    {
        return Err(CliError::Usage(format!("database.url: no database file at {path}")));
    }
    let keys = crate::crypto::at_rest::KeyRing::load(&config.keys.dir).map_err(usage)?;
    let deadline_hours = config.federation.as_ref().map_or(72, |f| f.erasure_deadline_hours);
    runtime()?.block_on(async {
        let store = crate::store::open(&config.database).await.map_err(usage)?;
        let subject_key = keys.index("subject", subject_ref.as_bytes());
        let records = crate::app::dpo::subject_report::subject_records(store.as_ref(), &subject_key).await.map_err(usage)?;
        let now = now();
        let actor = crate::audit::Actor { org: None, subject: "cli:report".to_owned() };
        let event = crate::audit::AuditEvent::new(now, actor, crate::audit::Action::SubjectReport, "ok").subject_key(subject_key);
        store.write_batch(&[crate::store::Write::Audit(event)]).await.map_err(usage)?;
        let report = crate::app::dpo::subject_report::subject_report(&subject_ref, &records, chrono::Duration::hours(i64::try_from(deadline_hours).unwrap_or(72)), now);
        print(&serde_json::to_string_pretty(&report)?)?;
        Ok(ExitCode::SUCCESS)
    })
}

fn report_statistics(period: &str, config_path: Option<&Path>, at: Option<DateTime<Utc>>) -> Result<ExitCode, CliError> {
    let config_path = config_path.ok_or_else(|| usage("--period needs --config (or RGW_CONFIG_FILE)"))?;
    let period = crate::domain::statistics::Period::parse(period).map_err(|_| usage("--period must be a month (2026-11) or a quarter (2026-Q4)"))?;
    let now = now();
    let at = match at {
        Some(at) if at > now => return Err(usage("--at may not be later than now")),
        Some(at) => at,
        None => now,
    };
    let config = load_config(config_path)?;
    if let Some(path) = crate::config::sqlite_path(&config.database.url)
        && !Path::new(path).is_file()
    {
        return Err(CliError::Usage(format!("database.url: no database file at {path}")));
    }
    let coordinator = crate::directory::signed::read_coordinator_key(&config.directory.coordinator_key).map_err(usage)?;
    let (_, directory) = crate::directory::signed::read_signed(&config.directory.file, &coordinator).map_err(usage)?;
    let keys = crate::crypto::federation_keys::load(&config.keys.dir).map_err(usage)?;
    let signer = directory.current_signing_key(config.country, at, &keys.signing);
    let deadline_hours = config.federation.as_ref().map_or(72, |f| f.erasure_deadline_hours);
    runtime()?.block_on(async {
        let store = crate::store::open(&config.database).await.map_err(usage)?;
        let release = crate::app::statistics::Release {
            gateway: config.country,
            control: config.statistics.control(),
            erasure_deadline: chrono::Duration::hours(i64::try_from(deadline_hours).unwrap_or(72)),
            signer,
            now: at,
        };
        let answer = crate::app::statistics::release(store.as_ref(), period, release).await.map_err(usage)?;
        let actor = crate::audit::Actor { org: None, subject: "cli:report".to_owned() };
        let event = crate::audit::AuditEvent::new(now, actor, crate::audit::Action::StatisticsRead, "ok").reasons(vec![period.to_string()]);
        store.write_batch(&[crate::store::Write::Audit(event)]).await.map_err(usage)?;
        print(&serde_json::to_string_pretty(&answer)?)?;
        Ok(ExitCode::SUCCESS)
    })
}

fn merge_statistics(files: &[PathBuf], config_path: Option<&Path>, directory: Option<(PathBuf, PathBuf)>) -> Result<ExitCode, CliError> {
    let (directory_path, coordinator_path) = match (directory, config_path) {
        (Some(pair), _) => pair,
        (None, Some(config_path)) => {
            let config = load_config(config_path)?;
            (config.directory.file, config.directory.coordinator_key)
        }
        (None, None) => return Err(usage("--merge needs --directory and --coordinator-key, or --config")),
    };
    let coordinator = crate::directory::signed::read_coordinator_key(&coordinator_path).map_err(usage)?;
    let (_, directory) = crate::directory::signed::read_signed(&directory_path, &coordinator).map_err(usage)?;
    let answers = files
        .iter()
        .map(|file| std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display()))))
        .collect::<Result<Vec<String>, CliError>>()?;
    let merged = crate::app::statistics::merge_signed(&answers, &directory).map_err(usage)?;
    print(&serde_json::to_string_pretty(&merged)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The time a command acts at when not told: the machine's, read through
/// the clock port like everything else.
fn now() -> DateTime<Utc> {
    use crate::app::Clock;
    crate::app::SystemClock.now()
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn usage(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(error.to_string())
}

fn init(options: &crate::setup::InitOptions) -> Result<ExitCode, CliError> {
    let written = crate::setup::init(options).map_err(usage)?;
    let dir = options.dir.display();
    print(&format!(
        "ok: gateway of {country} set up in {dir} (federation endpoint {endpoint})\n\
         next: list the organisations it serves in {entry} and send that file to the federation coordinator;\n\
         \x20     register a client certificate or an identity provider under [auth] in {config};\n\
         \x20     put the coordinator's directory.jws and coordinator.pub.jwk in {dir}, then: referral-gateway serve --config {config}",
        country = options.country,
        endpoint = written.endpoint,
        entry = written.entry.display(),
        config = written.config.display(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn keys_init(dir: &Path, tls_names: &[String]) -> Result<ExitCode, CliError> {
    crate::crypto::at_rest::init(dir).map_err(usage)?;
    crate::crypto::federation_keys::init(dir, tls_names).map_err(usage)?;
    print(&format!("ok: keys created in {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// A recipient organisation's end-to-end key: the private JWK in `dir`,
/// its directory entry on stdout (and only that, so that it can be piped).
fn keys_init_recipient(dir: &Path, organisation: &str, from: DateTime<Utc>, valid_days: i64) -> Result<ExitCode, CliError> {
    let organisation = OrgId::parse(organisation).map_err(|e| CliError::Usage(format!("--organisation: {e}")))?;
    let until = from + chrono::Duration::days(valid_days.clamp(1, 3650));
    let (path, entry) = crate::recipient::make_key(dir, &organisation, from, until).map_err(usage)?;
    print(&serde_json::to_string_pretty(&entry)?)?;
    eprintln!(
        "ok: private key written to {} (mode 0600); add the entry printed above to the `keys` of organisation {organisation} in the directory",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens a delivered case with the organisation's keys: exit 1, with a
/// one-line reason naming no content, if it does not open or verify.
fn recipient_open(key_files: &[PathBuf], organisation: &str, directory: &Path, coordinator_key: &Path, packet: &Path, now: DateTime<Utc>) -> Result<ExitCode, CliError> {
    use std::io::Read;
    let organisation = OrgId::parse(organisation).map_err(|e| CliError::Usage(format!("--organisation: {e}")))?;
    let mut keys = Vec::new();
    for path in key_files {
        keys.extend(crate::recipient::read_keys(path).map_err(usage)?);
    }
    let directory = crate::recipient::read_directory(directory, coordinator_key).map_err(usage)?;
    let delivered = if packet == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().lock().read_to_string(&mut text).map_err(|source| CliError::Read { path: packet.to_path_buf(), source })?;
        text
    } else {
        read(packet)?
    };
    match crate::recipient::open_delivered(&delivered, &keys, &directory, &organisation, now) {
        Ok(opened) => {
            let mut value = serde_json::to_value(&opened)?;
            // Spaces that only give the envelope its bucket's size.
            if let Some(content) = value.get_mut("content").and_then(serde_json::Value::as_object_mut) {
                content.remove("pad");
            }
            print(&serde_json::to_string_pretty(&value)?)?;
            Ok(ExitCode::SUCCESS)
        }
        // A pushed notice that the person withdrew part of a case sealed end to end: what to erase.
        Err(crate::recipient::RecipientError::Notice) => {
            match crate::recipient::open_withdrawals(&delivered, &keys, &directory, &organisation, now) {
                Ok(withdrawn) if !withdrawn.categories.is_empty() => {
                    print(&serde_json::to_string_pretty(&serde_json::json!({ "withdrawn": withdrawn }))?)?;
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    eprintln!("error: {}", crate::recipient::RecipientError::Notice);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn keys_rotate(dir: &Path) -> Result<ExitCode, CliError> {
    let (sig, enc) = crate::crypto::federation_keys::rotate(dir).map_err(usage)?;
    print(&format!(
        "ok: added signing key {sig} and encryption key {enc}; publish them (`keys public`) with windows that overlap the current keys'"
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn keys_public(dir: &Path, from: DateTime<Utc>, valid_days: i64) -> Result<ExitCode, CliError> {
    let keys = crate::crypto::federation_keys::load(dir).map_err(usage)?;
    let until = from + chrono::Duration::days(valid_days.clamp(1, 3650));
    let entry = json!({
        "tls_spki_sha256": [keys.tls_spki_pin().map_err(usage)?],
        "keys": crate::directory::published_keys(&keys, from, until).map_err(usage)?,
    });
    print(&serde_json::to_string_pretty(&entry)?)?;
    Ok(ExitCode::SUCCESS)
}

fn keys_coordinator(dir: &Path) -> Result<ExitCode, CliError> {
    use crate::crypto::jose_keys::{self, KeyUse};
    std::fs::create_dir_all(dir)?;
    let key = jose_keys::generate(KeyUse::Sig).map_err(usage)?;
    let public = jose_keys::public_of(&key).map_err(usage)?;
    crate::crypto::at_rest::write_private(&dir.join("coordinator.jwk"), key.to_string().as_bytes()).map_err(usage)?;
    std::fs::write(dir.join("coordinator.pub.jwk"), public.to_string())?;
    print(&format!("ok: coordinator key {} in {}", public.key_id().unwrap_or_default(), dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn read_jwk(path: &Path) -> Result<josekit::jwk::Jwk, CliError> {
    josekit::jwk::Jwk::from_bytes(read(path)?.as_bytes()).map_err(|e| CliError::Usage(format!("{}: not a JWK: {e}", path.display())))
}

fn directory_sign(key: &Path, input: &Path, out: &Path) -> Result<ExitCode, CliError> {
    let signer = crate::crypto::jose_keys::SigningKey::from_jwk(&read_jwk(key)?).map_err(|e| CliError::Usage(format!("{}: {e}", key.display())))?;
    let signed = crate::directory::signed::sign(&read(input)?, &signer).map_err(|e| CliError::Usage(format!("{}: {e}", input.display())))?;
    std::fs::write(out, signed)?;
    print(&format!("ok: {} signed into {}", input.display(), out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn directory_add_member(
    directory: Option<&Path>,
    entry: &Path,
    out: &Path,
    coordinator_key: Option<&Path>,
    signed_out: Option<PathBuf>,
    removal: Removal,
) -> Result<ExitCode, CliError> {
    use crate::directory::membership::{add_member, MemberEntry};
    use crate::directory::DirectoryDocument;
    // Starting a new directory over an existing one would lose every member.
    if directory.is_none() && out.exists() {
        return Err(CliError::Usage(format!("{} exists: pass it as --directory to add to it", out.display())));
    }
    // Both outputs are written only once both are made, and never one over the other.
    let signed_out = coordinator_key.map(|_| signed_out.unwrap_or_else(|| out.with_extension("jws")));
    if signed_out.as_deref() == Some(out) {
        return Err(CliError::Usage(format!("{}: the signed edition would overwrite the JSON; give --signed-out another path", out.display())));
    }
    let signer = match coordinator_key {
        Some(key) => Some(
            crate::crypto::jose_keys::SigningKey::from_jwk(&read_jwk(key)?).map_err(|e| CliError::Usage(format!("{}: {e}", key.display())))?,
        ),
        None => None,
    };
    let current = match directory {
        Some(path) => {
            let text = read(path)?;
            Some(serde_json::from_str::<DirectoryDocument>(&text).map_err(|e| CliError::Usage(format!("{}: not a directory: {e}", path.display())))?)
        }
        None => None,
    };
    let member: MemberEntry =
        serde_json::from_str(&read(entry)?).map_err(|e| CliError::Usage(format!("{}: not a directory entry: {e}", entry.display())))?;
    let (document, added) = add_member(current, member, removal).map_err(|e| CliError::Usage(format!("{}: {e}", entry.display())))?;
    let json = serde_json::to_string_pretty(&document)? + "\n";
    let signed = signer.map(|signer| crate::directory::signed::sign(&json, &signer)).transpose().map_err(usage)?;
    replace_file(out, &json)?;
    let organisations = match added.organisations {
        1 => "1 organisation".to_owned(),
        n => format!("{n} organisations"),
    };
    print(&format!(
        "ok: {} {} in edition {} ({organisations} of {}), written to {}",
        added.country,
        if added.replaced { "replaced" } else { "added" },
        added.serial,
        added.country,
        out.display()
    ))?;
    if let Some(status) = added.kept_status {
        print(&format!("note: {} stays {} in the directory (the entry's status is not taken: the coordinator sets it)", added.country, status.as_str()))?;
    }
    if !added.removed.is_empty() {
        let removed: Vec<String> = added.removed.iter().map(ToString::to_string).collect();
        print(&format!("note: organisations of {} taken out: {}", added.country, removed.join(", ")))?;
    }
    if let (Some(signed), Some(signed_out)) = (signed, signed_out) {
        replace_file(&signed_out, &signed)?;
        print(&format!("ok: edition {} signed into {}", added.serial, signed_out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` whole or not at all (a new file renamed over it): a gateway
/// watching a directory file never reads half an edition.
fn replace_file(path: &Path, contents: &str) -> Result<(), CliError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.new", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents.as_bytes())?;
    // On disk before it takes the old edition's name.
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

fn directory_verify(coordinator: &Path, signed: &Path) -> Result<ExitCode, CliError> {
    let key = crate::crypto::jose_keys::VerifyingKey::from_jwk(&read_jwk(coordinator)?)
        .map_err(|e| CliError::Usage(format!("{}: {e}", coordinator.display())))?;
    match crate::directory::signed::verify(&read(signed)?, &key) {
        Ok(directory) => {
            print(&format!(
                "ok: edition {}, {} organisations, signed by coordinator key {}",
                directory.serial(),
                directory.organisations().count(),
                key.kid()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{}: {error}", signed.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })
}

fn policy_bundle(dir: &Path, note: Option<String>, effective_from: Option<DateTime<Utc>>) -> Result<ExitCode, CliError> {
    let files = match policy_files::read_upload(dir) {
        Ok(files) => files,
        Err(error) => {
            print(&error.to_string())?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut body = serde_json::Map::new();
    body.insert("files".to_owned(), serde_json::json!(files));
    if let Some(note) = note {
        body.insert("note".to_owned(), serde_json::Value::String(note));
    }
    if let Some(at) = effective_from {
        body.insert("effective_from".to_owned(), serde_json::Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    print(&serde_json::Value::Object(body).to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn policy_check(dir: &Path) -> Result<ExitCode, CliError> {
    match policy_files::load(dir) {
        Ok(policy) => {
            let policies = policy.dpo_policies();
            print(&format!("ok: {} policies in {} are valid (version {})", policies.len(), dir.display(), policy.version()))?;
            for (id, effect) in policies {
                print(&format!("  {effect} {id}"))?;
            }
            let fallback = crate::domain::retention::RetentionPeriod::FALLBACK.max_days;
            print(&format!("  retention: {} rules; otherwise {fallback} days", policy.retention().rules().len()))?;
            print(&format!(
                "  end-to-end sealing: {} rules; and always for asylum-linked cases to an origin state ({})",
                policy.end_to_end().rules().len(),
                crate::domain::sealing::BUILTIN_END_TO_END_RULE
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            print(&error.to_string())?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads a policy directory, or prints why it cannot (exit status 1 follows).
fn load_or_print(dir: &Path) -> Result<Option<DataProtectionPolicy>, CliError> {
    match policy_files::load(dir) {
        Ok(policy) => Ok(Some(policy)),
        Err(error) => {
            print(&error.to_string())?;
            Ok(None)
        }
    }
}

fn policy_test(dir: &Path, directory: &Path, json: bool) -> Result<ExitCode, CliError> {
    let Some(policy) = load_or_print(dir)? else {
        return Ok(ExitCode::FAILURE);
    };
    let directory = Directory::parse(&read(directory)?).map_err(|e| CliError::Usage(format!("{}: {e}", directory.display())))?;
    let run = crate::policy_tests::run(dir, &policy, &directory).map_err(|e| CliError::Usage(e.to_string()))?;
    if json {
        print(&serde_json::to_string_pretty(&run)?)?;
    } else {
        print(&run.to_string())?;
    }
    Ok(if run.all_passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The solver named on the command line, or else by the environment.
fn solver_command(cvc5: Option<PathBuf>, cvc5_python: Option<PathBuf>) -> SolverCommand {
    match (cvc5, cvc5_python) {
        (Some(program), _) => SolverCommand::Cvc5Program(program),
        (None, Some(python)) => SolverCommand::Cvc5Python(python),
        (None, None) => SolverCommand::from_environment(),
    }
}

fn policy_compare(active: &Path, new: &Path, solver: &SolverCommand, json: bool) -> Result<ExitCode, CliError> {
    let mut sets = Vec::new();
    for dir in [active, new] {
        match policy_files::load(dir) {
            Ok(policy) => sets.push(policy.dpo_policy_set()),
            Err(error) => {
                print(&format!("{}: {error}", dir.display()))?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let (Some(active), Some(new)) = (sets.first(), sets.get(1)) else {
        return Err(CliError::Usage("two policy directories are needed".into()));
    };
    let comparison = runtime()?
        .block_on(policy_proofs::compare(policy_proofs::SHIPPED_BUILTIN_RULES, active, new, solver))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if json {
        print(&serde_json::to_string_pretty(&comparison)?)?;
    } else {
        print(&comparison.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_prove(dir: &Path, solver: &SolverCommand, builtin_rules: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    let Some(policy) = load_or_print(dir)? else {
        return Ok(ExitCode::FAILURE);
    };
    let builtin = match builtin_rules {
        Some(path) => read(path)?,
        None => policy_proofs::SHIPPED_BUILTIN_RULES.to_owned(),
    };
    let report = runtime()?
        .block_on(policy_proofs::prove(&builtin, &policy.dpo_policy_set(), solver))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if json {
        print(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print(&report.to_string())?;
    }
    Ok(if report.all_hold() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
    let Some(policy) = load_or_print(policies)? else {
        return Ok(ExitCode::FAILURE);
    };
    let destination = match to {
        Some(id) => OrgId::parse(id).map_err(|e| CliError::Usage(format!("--to: {e}")))?,
        None => submission.destination.clone(),
    };
    let recipient = directory.recipient_at(&destination, now);
    let (decision, payload) = submission.decide_and_minimise(sender, recipient.as_ref(), &policy, now);
    let report = json!({
        "recipient": recipient.as_ref().map(|r| json!({
            "id": r.id,
            "country": r.country,
            "acts_for_state": r.state(),
            "kind": r.kind,
            "state_actor": r.is_state_actor(),
            "end_to_end_key": r.has_end_to_end_key(),
        })),
        "decided_at": now,
        "decision": decision,
        "payload": payload,
    });
    print(&serde_json::to_string_pretty(&report)?)?;
    Ok(ExitCode::SUCCESS)
}
