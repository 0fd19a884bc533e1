//! The CLI examples of `docs/policy-guide.md` and `docs/operations.md`, run
//! as the docs show them (bash, from the repository root, `cargo run --` and
//! `referral-gateway` being the binary under test) and their output compared
//! with the docs'. The examples and outputs are read from the Markdown
//! (`sh example` blocks and the `output` block after each; see
//! `tests/common/doc_examples.rs`).

use std::process::Command;

#[path = "../common/doc_examples.rs"]
mod markdown_examples;

use crate::support::repo_path;

/// `cargo run -- ARGS` and `referral-gateway ARGS` in a doc run the binary under test.
const PRELUDE: &str = r#"cargo() { if [ "$1" = run ] && [ "$2" = -- ]; then shift 2; "$RGW" "$@"; else echo "the example runs cargo $*, not cargo run --"; return 127; fi; }
referral-gateway() { "$RGW" "$@"; }"#;

/// Runs every example of `doc` in order; answers how many ran.
fn run_examples(doc: &str) -> usize {
    let markdown = std::fs::read_to_string(repo_path(doc)).unwrap();
    let examples = markdown_examples::examples(doc, &markdown);
    assert!(examples.setup.is_empty(), "{doc}: setup blocks are for the API examples");
    let dir = tempfile::tempdir().unwrap();
    let (tmp, state) = (dir.path().join("tmp"), dir.path().join("state.sh"));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    for example in &examples.run {
        let script = markdown_examples::bash_script(example, PRELUDE, &state, &tmp);
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(repo_path(""))
            .env("RGW", env!("CARGO_BIN_EXE_referral-gateway"))
            .env_remove("RGW_COUNTRY")
            .output()
            .expect("bash runs the doc's examples");
        let printed = String::from_utf8_lossy(&output.stdout);
        if let Err(why) = markdown_examples::check(example, &printed, &tmp) {
            failures.push(format!("{doc}:{}: {why}", example.script.line));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples differ from the doc:\n\n{}", failures.len(), examples.run.len(), failures.join("\n\n"));
    examples.run.len()
}

#[test]
fn policy_guide_examples_print_what_the_guide_shows() {
    assert_eq!(run_examples("docs/policy-guide.md"), 4);
}

#[test]
fn the_operators_quick_start_prints_what_operations_md_shows() {
    assert_eq!(run_examples("docs/operations.md"), 1);
}

#[test]
fn an_example_whose_output_the_doc_misstates_fails() {
    let markdown = "```sh example\necho '{\"a\": 1, \"id\": \"01a240a3-a3ec-7c08-8149-b2963575446b\"}'\n```\n\n```json output\n{\"a\": 2, \"id\": \"456c51e8-7a22-4938-a4b2-bc04a8c1b96a\"}\n```\n";
    let examples = markdown_examples::examples("inline", markdown);
    let example = examples.run.first().unwrap();
    let tmp = std::path::Path::new("/nonexistent");
    let printed = "{\"a\": 1, \"id\": \"01a240a3-a3ec-7c08-8149-b2963575446b\"}\n";
    let why = markdown_examples::check(example, printed, tmp).unwrap_err();
    assert!(why.contains("value 1.a: the doc shows 2, the answer holds 1"), "{why}");
    // The ids differ, and are set aside: with the right value the output matches.
    assert!(markdown_examples::check(example, &printed.replace("1,", "2,"), tmp).is_ok());
}
