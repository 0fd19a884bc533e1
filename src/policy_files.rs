//! Reads a DPO's policy directory: every `*.cedar` file in it, not recursing,
//! and `retention.toml`, `end_to_end.toml` and `overrides.toml` if they are there.

use std::path::{Path, PathBuf};

use crate::domain::policy::{is_toml_rule_file, PolicyError, PolicySource, DataProtectionPolicy};

/// The policy shipped in `config/policies`, built in so that `init` can give
/// a new gateway its first policy wherever the binary runs (a test keeps the
/// two the same).
pub const SHIPPED: &[(&str, &str)] = &[
    ("10-permits.cedar", include_str!("../config/policies/10-permits.cedar")),
    ("20-restrictions.cedar", include_str!("../config/policies/20-restrictions.cedar")),
    ("end_to_end.toml", include_str!("../config/policies/end_to_end.toml")),
    ("overrides.toml", include_str!("../config/policies/overrides.toml")),
    ("retention.toml", include_str!("../config/policies/retention.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum PolicyFilesError {
    #[error("cannot read policy directory {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no *.cedar files in {0}: without permits, nothing could ever be shared")]
    Empty(PathBuf),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

pub fn read_sources(dir: &Path) -> Result<Vec<PolicySource>, PolicyFilesError> {
    let read_error = |source| PolicyFilesError::Read { path: dir.to_path_buf(), source };
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_rules = path.file_name().and_then(|n| n.to_str()).is_some_and(is_toml_rule_file);
        if (is_rules || path.extension().is_some_and(|e| e == "cedar")) && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| PolicyFilesError::Read { path: path.clone(), source })?;
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            sources.push(PolicySource { name, text });
        }
    }
    if !sources.iter().any(|s| s.name.ends_with(".cedar")) {
        return Err(PolicyFilesError::Empty(dir.to_path_buf()));
    }
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sources)
}

/// A policy directory as `PUT /v1/policies` takes it: its policy and rule
/// files, and its tests (`tests/*.toml` and every `*.json` below `tests/`),
/// by name (`tests/referrals/x.json`).
pub fn read_upload(dir: &Path) -> Result<std::collections::BTreeMap<String, String>, PolicyFilesError> {
    fn walk(dir: &Path, prefix: &str, top: bool, files: &mut std::collections::BTreeMap<String, String>) -> Result<(), PolicyFilesError> {
        let read_error = |source| PolicyFilesError::Read { path: dir.to_path_buf(), source };
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(|n| format!("{prefix}/{n}")) else { continue };
            if path.is_dir() {
                walk(&path, &name, false, files)?;
            } else if path.extension().is_some_and(|e| e == "json" || (top && e == "toml")) {
                let text = std::fs::read_to_string(&path).map_err(|source| PolicyFilesError::Read { path: path.clone(), source })?;
                files.insert(name, text);
            }
        }
        Ok(())
    }
    let mut files: std::collections::BTreeMap<String, String> = read_sources(dir)?.into_iter().map(|s| (s.name, s.text)).collect();
    let tests = dir.join(crate::policy_tests::TESTS_FOLDER);
    if tests.is_dir() {
        walk(&tests, crate::policy_tests::TESTS_FOLDER, true, &mut files)?;
    }
    Ok(files)
}

/// Reads and compiles a policy directory; any invalid file refuses the whole set.
pub fn load(dir: &Path) -> Result<DataProtectionPolicy, PolicyFilesError> {
    Ok(DataProtectionPolicy::compile(&read_sources(dir)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_is_the_shipped_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies");
        let on_disk: Vec<(String, String)> = read_sources(&dir).unwrap().into_iter().map(|s| (s.name, s.text)).collect();
        let built_in: Vec<(String, String)> = SHIPPED.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())).collect();
        assert_eq!(built_in, on_disk, "add the file to policy_files::SHIPPED");
    }
}
