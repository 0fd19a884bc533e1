//! The CLI examples of `docs/policy-guide.md` and `docs/operations.md`, run
//! as the docs show them (bash, from the repository root, `cargo run --` and
//! `referral-gateway` being the binary under test) and their output compared
//! with the docs'. The examples and outputs are read from the Markdown
//! (`sh example` blocks and the `output` block after each; see
//! `tests/common/doc_examples.rs`).
//!
//! The operator's quick start starts two gateways on the fixed ports an
//! operator would choose. It runs in one shell inside a network namespace
//! and a PID namespace of its own (`unshare`, as root here and in CI): the
//! ports are free there whatever else runs on the machine, and when the shell
//! ends, however it ends, the kernel ends the gateways with it.

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
    let solver = crate::policy_proofs::solver_env();
    for example in &examples.run {
        let script = markdown_examples::bash_script(example, PRELUDE, &state, &tmp);
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(repo_path(""))
            .env("RGW", env!("CARGO_BIN_EXE_referral-gateway"))
            .env_remove("RGW_COUNTRY")
            .env_remove("CVC5")
            .env_remove("CVC5_PYTHON")
            // `policy prove` (policy-guide §7) on the solver the proof tests use.
            .env(&solver.0, &solver.1)
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

/// Longest a doc's examples may take together, in seconds (`timeout`
/// ends them, and with them the namespace's processes).
const EXAMPLES_TIME_LIMIT: &str = "120";

/// Runs every example of `doc` in order in one bash process, inside fresh
/// network and PID namespaces with only a loopback interface; answers how
/// many ran. Each example's output is told from the next by a marker line.
fn run_examples_isolated(doc: &str) -> usize {
    let markdown = std::fs::read_to_string(repo_path(doc)).unwrap();
    let examples = markdown_examples::examples(doc, &markdown);
    assert!(examples.setup.is_empty(), "{doc}: setup blocks are for the API examples");
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let marker = |index: usize| format!("@@example {index}@@");
    let mut script = format!("exec 2>&1\nip link set lo up || exit 97\n{PRELUDE}\n");
    for (index, example) in examples.run.iter().enumerate() {
        script.push_str(&format!("printf '\\n%s\\n' '{}'\n", marker(index)));
        script.push_str(&example.script.text.replace("/tmp/", &format!("{}/", tmp.display())));
        script.push('\n');
    }
    script.push_str(&format!("printf '\\n%s\\n' '{}'\n", marker(examples.run.len())));
    // As root, a plain unshare; otherwise in a user namespace of its own.
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    // Namespaces may be unavailable (a container without the capability, a
    // user namespace an LSM forbids): say so rather than fail without a word.
    let mut probe = Command::new("unshare");
    probe.args(["--net", "--pid", "--fork"]);
    if !is_root {
        probe.arg("--map-root-user");
    }
    let probed = probe.arg("true").output();
    assert!(
        probed.as_ref().is_ok_and(|o| o.status.success()),
        "{doc}: its examples run in network and PID namespaces of their own (util-linux `unshare`{}), which this machine does not allow: {:?}",
        if is_root { "" } else { " --map-root-user" },
        probed.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
    let mut command = Command::new("timeout");
    command.args(["--kill-after=10", EXAMPLES_TIME_LIMIT, "unshare", "--net", "--pid", "--fork", "--kill-child"]);
    if !is_root {
        command.arg("--map-root-user");
    }
    let output = command
        .args(["bash", "-c", &script])
        .current_dir(repo_path(""))
        .env("RGW", env!("CARGO_BIN_EXE_referral-gateway"))
        .env_remove("RGW_COUNTRY")
        .output()
        .expect("timeout, unshare and bash run the doc's examples");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_ne!(output.status.code(), Some(97), "no loopback interface in the namespace (iproute2's `ip`?): {printed}");
    // What timeout or unshare said, and the gateways' own logs, for a run that failed.
    let mut context = String::from_utf8_lossy(&output.stderr).into_owned();
    for log in ["qs/gmb/serve.log", "qs/gin/serve.log"] {
        if let Ok(text) = std::fs::read_to_string(tmp.join(log)) {
            context.push_str(&format!("\n--- {log}:\n{text}"));
        }
    }
    let mut failures = Vec::new();
    for (index, example) in examples.run.iter().enumerate() {
        let this_one = printed.split_once(&format!("\n{}\n", marker(index))).map(|(_, after)| after);
        let Some(this_one) = this_one.and_then(|after| after.split_once(&format!("\n{}\n", marker(index + 1))).map(|(own, _)| own)) else {
            failures.push(format!(
                "{doc}:{}: did not run to its end (timed out or exited early; exit {:?}):\n{printed}\n{context}",
                example.script.line,
                output.status.code()
            ));
            break;
        };
        if let Err(why) = markdown_examples::check(example, this_one, &tmp) {
            failures.push(format!("{doc}:{}: {why}", example.script.line));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples differ from the doc:\n\n{}", failures.len(), examples.run.len(), failures.join("\n\n"));
    examples.run.len()
}

#[test]
fn policy_guide_examples_print_what_the_guide_shows() {
    assert_eq!(run_examples("docs/policy-guide.md"), 9);
}

/// Two gateways from nothing to a delivered referral, as the quick start of
/// `docs/operations.md` says, on whatever date it runs (the referral's
/// consent is dated by the shell's clock, as the gateways' are).
#[test]
fn the_operators_quick_start_takes_two_gateways_to_a_delivered_referral() {
    assert_eq!(run_examples_isolated("docs/operations.md"), 7);
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
