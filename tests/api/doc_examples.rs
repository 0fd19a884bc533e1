//! Every worked example of `docs/api.md`, run as the doc shows it (bash,
//! curl, jq, from the repository root) against a gateway of the harness, and
//! its answer compared with the one the doc shows. The examples and answers
//! are read from the Markdown (`sh example` blocks and the `output` block
//! after each; see `tests/common/doc_examples.rs`). `$PKI` holds the client
//! certificates of the doc's table of demo certificates, issued by the
//! harness for the same organisation and role; `$GW` is the gateway's API.

use std::path::Path;

#[path = "../common/doc_examples.rs"]
mod markdown_examples;

use crate::helpers::{client_pem, fixture_time, repo_path, spawn_app, spawn_app_configured, test_ca_pem, Backend, Who};
use crate::on_both_backends;

/// The rows of the doc's certificate table for this gateway: file name, organisation, role.
fn demo_certificates(markdown: &str) -> Vec<(String, String, String)> {
    let cell = |text: &str| text.split('`').nth(1).unwrap_or("").to_owned();
    markdown
        .lines()
        .filter(|line| line.starts_with("| `var/demo/pki/"))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells.get(2) == Some(&"ITA")).then(|| {
                let file = cell(cells[1]).rsplit('/').next().unwrap_or("").to_owned();
                (file, cell(cells[3]), cell(cells[4]))
            })
        })
        .collect()
}

fn write_pki(markdown: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), test_ca_pem()).unwrap();
    let rows = demo_certificates(markdown);
    assert!(rows.len() >= 4, "the doc's certificate table: {rows:?}");
    // Two rows of one organisation and role (the two DPOs) are two callers, in order.
    let mut used = Vec::new();
    for (file, org, role) in rows {
        let who = Who::REGISTERED
            .into_iter()
            .find(|who| who.org() == Some(org.as_str()) && who.role() == Some(role.as_str()) && !used.contains(who))
            .unwrap_or_else(|| panic!("the harness registers no (other) {org} {role} for {file}"));
        used.push(who);
        std::fs::write(dir.join(&file), client_pem(who).unwrap()).unwrap();
    }
}

async fn api_md_examples_answer_as_the_doc_shows(backend: Backend) {
    let markdown = std::fs::read_to_string(repo_path("docs/api.md")).unwrap();
    let examples = markdown_examples::examples("docs/api.md", &markdown);
    for setup in &examples.setup {
        let assigned = markdown_examples::assigned_variables(&setup.text);
        assert!(
            assigned.iter().all(|name| SET_BY_THE_TEST.contains(&name.as_str())),
            "docs/api.md:{}: a setup block sets only {SET_BY_THE_TEST:?}, which the test sets itself",
            setup.line
        );
    }
    assert!(examples.run.len() >= 18, "docs/api.md has {} examples", examples.run.len());
    let app = spawn_app(backend).await;
    run_against(&app.url(""), &[], "docs/api.md", &examples.run, backend).await;
}

/// What the setup blocks of api.md set, and the test sets instead.
const SET_BY_THE_TEST: [&str; 5] = ["PKI", "GW", "DIRECTORY", "COORDINATOR_KEY", "PEER_ANSWER"];

/// The statistics of `docs/api.md` §11 (`sh gateway-example` blocks),
/// against Italy's gateway of a federation with Nigeria's: twelve referrals
/// delivered to Nigeria and three denied in November, read on 1 December.
/// `$PEER_ANSWER` is Nigeria's signed answer for November, as its
/// `report statistics` prints it.
async fn api_md_statistics_answer_as_the_doc_shows(backend: Backend) {
    let markdown = std::fs::read_to_string(repo_path("docs/api.md")).unwrap();
    let examples = markdown_examples::examples("docs/api.md", &markdown);
    assert!(examples.gateway.len() >= 3, "docs/api.md has {} statistics examples", examples.gateway.len());
    let federation = crate::peers::Federation::start(backend, &["ITA", "NGA"]).await;
    crate::statistics::november_referrals(&federation, "doc-statistics").await;
    let ita = federation.peer("ITA");
    let december = fixture_time().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::Duration::days(8);
    federation.clock.advance(december + chrono::Duration::hours(12) - federation.clock_now());
    let dir = tempfile::tempdir().unwrap();
    let peer_answer = dir.path().join("nga.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["report", "statistics", "--period", "2026-11", "--at", &federation.clock_now().to_rfc3339(), "--config"])
        .arg(&federation.peer("NGA").config_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&peer_answer, &output.stdout).unwrap();
    let directory = &ita.config.directory;
    let env = [
        ("DIRECTORY", directory.file.clone()),
        ("COORDINATOR_KEY", directory.coordinator_key.clone()),
        ("PEER_ANSWER", peer_answer),
    ];
    run_against(&ita.url(""), &env, "docs/api.md", &examples.gateway, backend).await;
}

/// The walk-through of `docs/policy-guide.md` §8 (`sh gateway-example`
/// blocks): a change from draft to approval on a gateway that proves uploads.
async fn policy_guide_walk_through_answers_as_the_doc_shows(backend: Backend) {
    let markdown = std::fs::read_to_string(repo_path("docs/policy-guide.md")).unwrap();
    let examples = markdown_examples::examples("docs/policy-guide.md", &markdown);
    assert!(examples.gateway.len() >= 5, "docs/policy-guide.md has {} gateway examples", examples.gateway.len());
    let (kind, path) = crate::solver::solver_env().clone();
    let app = spawn_app_configured(backend, fixture_time(), "", move |config| match kind.as_str() {
        "CVC5" => config.policy.cvc5 = Some(path),
        _ => config.policy.cvc5_python = Some(path),
    })
    .await;
    run_against(&app.url(""), &[], "docs/policy-guide.md", &examples.gateway, backend).await;
}

/// `referral-gateway ARGS` in a doc runs the binary under test.
const PRELUDE: &str = r#"referral-gateway() { "$RGW" "$@"; }"#;

/// Runs `examples` of `doc` in order against the gateway at `gateway`, with
/// the certificates of api.md's table and the variables `env`; fails with
/// every example whose answer differs.
async fn run_against(gateway: &str, env: &[(&str, std::path::PathBuf)], doc: &str, examples: &[markdown_examples::Example], backend: Backend) {
    let api_md = std::fs::read_to_string(repo_path("docs/api.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pki, tmp, state) = (dir.path().join("pki"), dir.path().join("tmp"), dir.path().join("state.sh"));
    write_pki(&api_md, &pki);
    std::fs::create_dir_all(&tmp).unwrap();

    let mut failures = Vec::new();
    for example in examples {
        let script = markdown_examples::bash_script(example, PRELUDE, &state, &tmp);
        let output = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(repo_path(""))
            .env("PKI", &pki)
            .env("GW", gateway)
            .env("RGW", env!("CARGO_BIN_EXE_referral-gateway"))
            .envs(env.iter().map(|(name, value)| (*name, value.as_os_str())))
            .output()
            .await
            .expect("bash, curl and jq run the doc's examples");
        let printed = String::from_utf8_lossy(&output.stdout);
        if let Err(why) = markdown_examples::check(example, &printed, &tmp) {
            failures.push(format!("{doc}:{} ({backend:?}): {why}", example.script.line));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples differ from the doc:\n\n{}", failures.len(), examples.len(), failures.join("\n\n"));
}

on_both_backends!(api_md_examples_answer_as_the_doc_shows, api_md_statistics_answer_as_the_doc_shows, policy_guide_walk_through_answers_as_the_doc_shows);
