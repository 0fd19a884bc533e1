#![allow(dead_code)]
//! The worked examples of the docs, read from the Markdown itself, and the
//! comparison of what they print with what the docs show.
//!
//! The convention (in `docs/api.md`, `docs/policy-guide.md`,
//! `docs/operations.md`): every fenced shell block says what it is in its
//! info string, after the language:
//!
//! - ```` ```sh example ````: a test runs it (bash, from the repository root)
//!   and compares what it prints (stdout and stderr) with the next fenced
//!   block if that one is marked `output` (```` ```json output ````,
//!   ```` ```http output ````, ```` ```text output ````); without one, it must
//!   print nothing.
//! - ```` ```sh gateway-example ````: likewise, but against a running gateway
//!   of the API harness (`$GW`, `$PKI` as for `setup`), in a doc that is
//!   otherwise run offline (`docs/policy-guide.md`).
//! - ```` ```sh setup ````: sets the variables the examples use (`PKI`,
//!   `GW`); the test sets them itself.
//! - ```` ```sh illustrative ````: shown, not run; the doc says why.
//!
//! An unmarked shell block fails the test, so that a new example is either
//! run or declared illustrative.
//!
//! Comparing, run-specific values are set aside on both sides: UUIDs become
//! `<uuid>`, clock readings (RFC 3339 with fractional seconds) `<time>`, runs
//! of 64 hex digits `<sha256>`. In an expected output, `<name>` stands for
//! any run of non-blank characters; a line `...` for any number of lines; in
//! JSON, a member `"...": ...` for members left out, a last array element
//! `"..."` for elements left out, and the string `"..."` for any value.

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Block {
    /// The info string after the fence.
    pub info: String,
    pub text: String,
    /// 1-based line of the opening fence.
    pub line: usize,
}

impl Block {
    fn words(&self) -> Vec<&str> {
        self.info.split_whitespace().collect()
    }
}

/// Every fenced block of `markdown`, indented ones (in lists) included.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, Vec<&str>)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((indent, info.trim().to_owned(), index + 1, Vec::new()));
                }
            }
            Some((fence_indent, info, start, lines)) => {
                if trimmed.starts_with("```") && trimmed.trim() == "```" {
                    let text = lines.iter().map(|l| l.get(*fence_indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>().join("\n");
                    blocks.push(Block { info: info.clone(), text, line: *start });
                    open = None;
                } else {
                    lines.push(line);
                }
            }
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    blocks
}

#[derive(Debug)]
pub struct Example {
    pub script: Block,
    pub output: Option<Block>,
}

#[derive(Debug, Default)]
pub struct Examples {
    pub run: Vec<Example>,
    /// Run against a gateway of the API harness (`sh gateway-example`).
    pub gateway: Vec<Example>,
    pub setup: Vec<Block>,
    pub illustrative: Vec<Block>,
}

/// The examples of `markdown` (named `doc` in messages), in document order.
pub fn examples(doc: &str, markdown: &str) -> Examples {
    let all = blocks(markdown);
    let mut examples = Examples::default();
    let mut unmarked = Vec::new();
    for (index, block) in all.iter().enumerate() {
        let words = block.words();
        let Some(&language) = words.first() else { continue };
        let runs = |b: &Block| matches!(b.words().get(1), Some(&"example") | Some(&"gateway-example"));
        if words.get(1) == Some(&"output") && all.get(index.wrapping_sub(1)).is_none_or(|b| !runs(b)) {
            unmarked.push(format!("{doc}:{}: an `output` block that does not follow a `sh example` block", block.line));
        }
        if language != "sh" {
            continue;
        }
        match words.get(1).copied() {
            Some("example") => {
                let output = all.get(index + 1).filter(|b| b.words().get(1) == Some(&"output")).cloned();
                examples.run.push(Example { script: block.clone(), output });
            }
            Some("gateway-example") => {
                let output = all.get(index + 1).filter(|b| b.words().get(1) == Some(&"output")).cloned();
                examples.gateway.push(Example { script: block.clone(), output });
            }
            Some("setup") => examples.setup.push(block.clone()),
            Some("illustrative") => examples.illustrative.push(block.clone()),
            _ => unmarked.push(format!("{doc}:{}: a shell block marked neither `example`, `setup` nor `illustrative`", block.line)),
        }
    }
    assert!(unmarked.is_empty(), "{}", unmarked.join("\n"));
    examples
}

/// Variables an example assigns (`NAME=...` at the start of a line), to be
/// carried into the examples after it.
pub fn assigned_variables(script: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in script.lines() {
        let line = line.trim_start();
        let name: String = line.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        if !name.is_empty() && line[name.len()..].starts_with('=') && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The bash script that runs `example` in a shell that has the variables the
/// examples before it set (kept in `state`), with `/tmp/` taken to `tmp`.
pub fn bash_script(example: &Example, prelude: &str, state: &std::path::Path, tmp: &std::path::Path) -> String {
    let body = example.script.text.replace("/tmp/", &format!("{}/", tmp.display()));
    let keep = assigned_variables(&example.script.text);
    let save = if keep.is_empty() {
        String::new()
    } else {
        format!("\ndeclare -p {} 2>/dev/null >> '{}'", keep.join(" "), state.display())
    };
    format!("exec 2>&1\n{prelude}\nif [ -f '{state}' ]; then . '{state}'; fi\n{body}{save}\n", state = state.display())
}

/// Checks what an example printed against the doc's output block (none: it
/// must print nothing). `tmp` is what `/tmp` was taken to.
pub fn check(example: &Example, printed: &str, tmp: &std::path::Path) -> Result<(), String> {
    let printed = printed.replace(&format!("{}/", tmp.display()), "/tmp/");
    let Some(expected) = &example.output else {
        return if printed.trim().is_empty() { Ok(()) } else { Err(format!("printed, where the doc shows nothing:\n{printed}")) };
    };
    let result = match expected.words().first().copied() {
        Some("json") => compare_json_stream(&expected.text, &printed),
        Some("http") => compare_http(&expected.text, &printed),
        _ => compare_text(&expected.text, &printed),
    };
    result.map_err(|why| format!("{why}\n--- the doc shows (line {}):\n{}\n--- the example printed:\n{printed}", expected.line, expected.text))
}

/// Sets aside run-specific values: UUIDs, clock readings, SHA-256 digests.
pub fn normalise(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let boundary = |at: usize| at == 0 || chars.get(at - 1).is_none_or(|c| !c.is_ascii_alphanumeric());
    while i < chars.len() {
        if boundary(i) {
            if let Some(len) = uuid_at(&chars, i) {
                out.push_str("<uuid>");
                i += len;
                continue;
            }
            if let Some(len) = clock_reading_at(&chars, i) {
                out.push_str("<time>");
                i += len;
                continue;
            }
            let hex = chars.iter().skip(i).take_while(|c| c.is_ascii_hexdigit()).count();
            if hex == 64 && chars.get(i + 64).is_none_or(|c| !c.is_ascii_alphanumeric()) {
                out.push_str("<sha256>");
                i += 64;
                continue;
            }
        }
        if let Some(c) = chars.get(i) {
            out.push(*c);
        }
        i += 1;
    }
    out
}

fn shape_at(chars: &[char], at: usize, shape: &str) -> bool {
    shape.chars().enumerate().all(|(k, s)| {
        chars.get(at + k).is_some_and(|c| match s {
            'h' => c.is_ascii_digit() || ('a'..='f').contains(c),
            'd' => c.is_ascii_digit(),
            other => *c == other,
        })
    })
}

fn uuid_at(chars: &[char], at: usize) -> Option<usize> {
    let shape = "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";
    let end = at + shape.len();
    (shape_at(chars, at, shape) && chars.get(end).is_none_or(|c| !c.is_ascii_alphanumeric())).then_some(shape.len())
}

/// `2026-11-23T10:25:25.602Z`: a time the gateway read from its clock (the
/// API gives those with milliseconds; times taken from a request have none).
fn clock_reading_at(chars: &[char], at: usize) -> Option<usize> {
    let shape = "dddd-dd-ddTdd:dd:dd.";
    if !shape_at(chars, at, shape) {
        return None;
    }
    let digits = chars.iter().skip(at + shape.len()).take_while(|c| c.is_ascii_digit()).count();
    let end = at + shape.len() + digits;
    (digits > 0 && chars.get(end) == Some(&'Z')).then_some(end + 1 - at)
}

/// `pattern` (a line of the doc) matches `actual`: `<name>` stands for any
/// run of non-blank characters.
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let actual: Vec<char> = actual.chars().collect();
    glob(&pattern, &actual)
}

fn placeholder_len(pattern: &[char]) -> Option<usize> {
    if pattern.first() != Some(&'<') {
        return None;
    }
    let inner = pattern.iter().skip(1).take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ')).count();
    (inner > 0 && pattern.get(inner + 1) == Some(&'>')).then_some(inner + 2)
}

fn glob(pattern: &[char], actual: &[char]) -> bool {
    if let Some(len) = placeholder_len(pattern) {
        let rest = &pattern[len..];
        let run = actual.iter().take_while(|c| !c.is_whitespace()).count();
        return (1..=run).rev().any(|take| glob(rest, &actual[take..]));
    }
    match (pattern.first(), actual.first()) {
        (None, None) => true,
        (Some(p), Some(a)) if p == a => glob(&pattern[1..], &actual[1..]),
        _ => false,
    }
}

/// Lines compared one by one (trailing blanks aside); a line `...` in the
/// doc stands for any number of lines.
pub fn compare_text(expected: &str, printed: &str) -> Result<(), String> {
    let expected = normalise(expected);
    let printed = normalise(printed);
    let lines = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    };
    let (expected, printed) = (lines(&expected), lines(&printed));
    if lines_match(&expected, &printed) { Ok(()) } else { Err("the printed lines differ from the doc's".to_owned()) }
}

fn lines_match(expected: &[String], printed: &[String]) -> bool {
    match expected.first() {
        None => printed.is_empty(),
        Some(line) if line.trim() == "..." => (0..=printed.len()).any(|skip| lines_match(&expected[1..], &printed[skip..])),
        Some(line) => printed.first().is_some_and(|p| line_matches(line, p)) && lines_match(&expected[1..], &printed[1..]),
    }
}

fn json_stream(text: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(text).into_iter::<Value>().collect::<Result<Vec<_>, _>>().map_err(|e| format!("not JSON: {e}"))
}

/// One JSON value after another (a `jq -c` stream, say), each matched as
/// [`json_matches`] says.
pub fn compare_json_stream(expected: &str, printed: &str) -> Result<(), String> {
    let expected = json_stream(expected).map_err(|e| format!("the doc's output block: {e}"))?;
    let printed = json_stream(printed).map_err(|e| format!("the printed output: {e}"))?;
    if expected.len() != printed.len() {
        return Err(format!("the doc shows {} JSON values, the example printed {}", expected.len(), printed.len()));
    }
    for (index, (e, p)) in expected.iter().zip(&printed).enumerate() {
        json_matches(e, p, &format!("value {}", index + 1))?;
    }
    Ok(())
}

/// `expected` (from the doc) matches `actual`, abridgements aside.
pub fn json_matches(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(e), _) if e == "..." => Ok(()),
        (Value::String(e), Value::String(a)) => {
            if line_matches(&normalise(e), &normalise(a)) { Ok(()) } else { Err(format!("{at}: the doc shows {e:?}, the answer holds {a:?}")) }
        }
        (Value::Object(e), Value::Object(a)) => {
            let abridged = e.contains_key("...");
            for (key, value) in e.iter().filter(|(k, _)| k.as_str() != "...") {
                match a.get(key) {
                    Some(actual) => json_matches(value, actual, &format!("{at}.{key}"))?,
                    None => return Err(format!("{at}: the doc shows `{key}`, the answer has none")),
                }
            }
            if !abridged && let Some(extra) = a.keys().find(|k| !e.contains_key(*k)) {
                return Err(format!("{at}: the answer holds `{extra}`, which the doc does not show (nor `\"...\"`)"));
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            let abridged = e.last() == Some(&Value::String("...".to_owned()));
            let shown = if abridged { &e[..e.len() - 1] } else { &e[..] };
            if (!abridged && shown.len() != a.len()) || shown.len() > a.len() {
                return Err(format!("{at}: the doc shows {} elements, the answer holds {}", shown.len(), a.len()));
            }
            for (index, (e, a)) in shown.iter().zip(a).enumerate() {
                json_matches(e, a, &format!("{at}[{index}]"))?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: the doc shows {e}, the answer holds {a}")),
    }
}

/// `curl -si`: the status line, each header the doc shows (names in any
/// case; others may be there too), then the body as JSON.
pub fn compare_http(expected: &str, printed: &str) -> Result<(), String> {
    let split = |text: &str| -> (String, String) {
        let text = text.replace("\r\n", "\n");
        match text.split_once("\n\n") {
            Some((head, body)) => (head.to_owned(), body.to_owned()),
            None => (text, String::new()),
        }
    };
    let (expected_head, expected_body) = split(expected);
    let (printed_head, printed_body) = split(printed);
    let mut expected_lines = expected_head.lines();
    let mut printed_lines = printed_head.lines();
    let (status, printed_status) = (expected_lines.next().unwrap_or(""), printed_lines.next().unwrap_or(""));
    if status.trim() != printed_status.trim() {
        return Err(format!("status line: the doc shows {status:?}, curl printed {printed_status:?}"));
    }
    let headers: Vec<(String, String)> = printed_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), normalise(value.trim())))
        .collect();
    for line in expected_lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("the doc's header line {line:?} has no colon"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), normalise(value.trim()));
        if !headers.iter().any(|(n, v)| *n == name && line_matches(&value, v)) {
            return Err(format!("header {line:?} not in the answer"));
        }
    }
    compare_json_stream(&expected_body, &printed_body)
}
