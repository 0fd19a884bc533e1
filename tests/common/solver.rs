//! The SMT solver for tests that prove policies: the environment's (`CVC5`,
//! a cvc5 program, or `CVC5_PYTHON`, an interpreter with PyPI's cvc5), or
//! PyPI's cvc5 installed once into `target/cvc5-venv` (python3 with venv is
//! needed, as for the OpenAPI fuzzer).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use referral_gateway::policy_proofs::CVC5_PYPI_RELEASE;

/// The solver settings for the command: the environment's, or a virtual
/// environment with PyPI's cvc5, made on first use.
pub(crate) fn solver_env() -> &'static (String, PathBuf) {
    static SOLVER: OnceLock<(String, PathBuf)> = OnceLock::new();
    SOLVER.get_or_init(|| {
        for name in ["CVC5", "CVC5_PYTHON"] {
            if let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) {
                return (name.to_owned(), value.into());
            }
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cvc5-venv");
        let python = venv.join("bin/python");
        let has_cvc5 = |python: &PathBuf| {
            Command::new(python).args(["-c", "import cvc5"]).output().is_ok_and(|o| o.status.success())
        };
        if !has_cvc5(&python) {
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 is needed to install cvc5");
            assert!(made.success(), "python3 -m venv failed (on Debian: apt-get install python3-venv)");
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", CVC5_PYPI_RELEASE])
                .status()
                .unwrap();
            assert!(installed.success(), "pip install {CVC5_PYPI_RELEASE} failed");
            assert!(has_cvc5(&python));
        }
        ("CVC5_PYTHON".to_owned(), python)
    })
}

