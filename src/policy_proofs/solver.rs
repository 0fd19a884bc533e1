//! Which SMT solver the proofs run on, and how it is started (DPO's tools).
//!
//! `cedar-policy-symcc` talks SMT-LIB to a solver program over a pipe. Two
//! ways to have one:
//! - a cvc5 program (`cvc5 --lang smt`), for example Debian's `cvc5` package;
//! - a Python interpreter with PyPI's `cvc5` package, which ships the library
//!   but no program: the gateway then runs its own small driver
//!   (`cvc5_smt.py`, compiled in) with that interpreter.

use std::path::{Path, PathBuf};

use cedar_policy_symcc::solver::LocalSolver;
use tokio::process::Command;

/// The pinned PyPI release the driver is written and tested against.
pub const CVC5_PYPI_RELEASE: &str = "cvc5==1.4.2";

/// The SMT-LIB driver of PyPI's cvc5 library (see its docstring).
const PYTHON_DRIVER: &str = include_str!("cvc5_smt.py");

/// A bound on one solver query, in milliseconds: a proof that cannot be
/// decided in this time is reported as undecided, never as proved.
const QUERY_TIME_LIMIT_MS: u32 = 60_000;

/// How to start the SMT solver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SolverCommand {
    /// A cvc5 program that reads SMT-LIB on its standard input.
    Cvc5Program(PathBuf),
    /// A Python interpreter that can `import cvc5`.
    Cvc5Python(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the SMT solver ({command}): {reason}")]
pub struct SolverStartError {
    command: String,
    reason: String,
}

impl SolverCommand {
    /// The solver named by the environment, as `cedar-policy-symcc` does:
    /// `CVC5` (a cvc5 program) or `CVC5_PYTHON` (an interpreter with the cvc5
    /// package); failing both, a `cvc5` program on the `PATH`.
    pub fn from_environment() -> Self {
        if let Some(program) = std::env::var_os("CVC5").filter(|p| !p.is_empty()) {
            return Self::Cvc5Program(program.into());
        }
        if let Some(python) = std::env::var_os("CVC5_PYTHON").filter(|p| !p.is_empty()) {
            return Self::Cvc5Python(python.into());
        }
        Self::Cvc5Program(PathBuf::from("cvc5"))
    }

    fn path(&self) -> &Path {
        match self {
            Self::Cvc5Program(path) | Self::Cvc5Python(path) => path,
        }
    }

    /// Starts one solver process; it lives as long as the returned value.
    pub fn start(&self) -> Result<LocalSolver, SolverStartError> {
        let mut command = match self {
            Self::Cvc5Program(program) => {
                let mut command = Command::new(program);
                command.args(["--lang", "smt"]).arg(format!("--tlimit-per={QUERY_TIME_LIMIT_MS}"));
                command
            }
            Self::Cvc5Python(python) => {
                let mut command = Command::new(python);
                command.arg("-c").arg(PYTHON_DRIVER).arg(format!("--tlimit-per={QUERY_TIME_LIMIT_MS}"));
                command
            }
        };
        command.kill_on_drop(true);
        LocalSolver::from_command(&mut command).map_err(|error| SolverStartError {
            command: self.to_string(),
            reason: format!(
                "{error}; install cvc5 (docs/policy-guide.md, \"Proofs\") and name it with --cvc5 or --cvc5-python"
            ),
        })
    }
}

impl std::fmt::Display for SolverCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cvc5Program(_) => write!(f, "cvc5 program {}", self.path().display()),
            Self::Cvc5Python(_) => write!(f, "cvc5 library under {}", self.path().display()),
        }
    }
}
