//! The DPO's policy pages: the version in force, drafts, history; one
//! version with its checks (tests and coverage, proofs, the label against
//! the version in force, the impact on recent decisions) and a side-by-side
//! diff; approval or rejection by another DPO (four eyes).
//!
//! Auditors do not reach these pages, as they do not reach `/v1/policies`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use std::collections::BTreeMap;

use maud::{html, Markup};
use serde::Deserialize;
use similar::{DiffTag, TextDiff};

use super::layout::{form_post, page};
use super::{CarriesCsrf, CheckedForm, PageError, PageResult, SignedIn};
use crate::app::access::Dpos;
use crate::app::dpo::impact::ImpactChecked;
use crate::app::dpo::policies::{PolicySummary, PolicyUpload, PolicyVersionView, ReviewRequest};
use crate::app::dpo::policy_checks::{ChangeChecked, ProofsChecked, UploadChecks, UploadRefusal};
use crate::app::millis_to_rfc3339;
use crate::app::AppError;
use crate::domain::impact::Changes;
use crate::domain::policy::agreements::Due;
use crate::policy_proofs::ChangeLabel;
use crate::domain::signoff::{PolicyVersionState, Verdict};
use crate::http::routes::version_number;
use crate::http::AppState;

/// Lines of context kept around each change in the diff.
const DIFF_CONTEXT: usize = 3;

fn when(millis: i64) -> String {
    millis_to_rfc3339(millis)
}

fn author(summary: &PolicySummary) -> String {
    match &summary.author.org {
        Some(org) => format!("{} of {org}", summary.author.subject),
        None => "the gateway (its initial configuration)".to_owned(),
    }
}

pub async fn list(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    let list = state.gateway.policies(&caller).await?;
    let markup = page(
        "Policies",
        Some(&session),
        html! {
            p { "A version takes effect once " (list.approvals_required) " DPOs, its author included, have approved it." }
            h2 { "In force" }
            @match &list.active {
                Some(active) => {
                    p {
                        a href=(format!("/console/policies/{}", active.summary.number)) { "Version " (active.summary.number) }
                        ", by " (author(&active.summary))
                        @if let Some(at) = active.summary.effective_at { ", in force since " (when(at.0)) }
                        "."
                    }
                }
                None => { p { "No version is in force." } }
            }
            @if !list.agreements_due.is_empty() {
                h2 { "Sharing agreements that need you" }
                ul {
                    @for due in &list.agreements_due {
                        li { "Permit " code { (due.agreement.policy) } ": " (match due.due { Due::Expired => "its agreement expired", Due::Expires => "its agreement expires soon", Due::Review => "its agreement is due for review" })
                            @if let Some(expires) = due.agreement.expires { ", expires " (expires) }
                            @if let Some(review) = due.agreement.review_by { ", review by " (review) } }
                    }
                }
            }
            p { a href="/console/policies/new" { "Write a new draft from the version in force" } }
            h2 { "Drafts awaiting sign-off" }
            @if list.drafts.is_empty() { p { "None." } } @else { (versions_table("Drafts", &list.drafts)) }
            @if !list.scheduled.is_empty() {
                h2 { "Approved, to take effect later" }
                (versions_table("Scheduled versions", &list.scheduled))
            }
            h2 { "History" }
            (versions_table("Every version, newest first", &list.history))
        },
    );
    Ok(markup.into_response())
}

fn versions_table(caption: &str, versions: &[PolicySummary]) -> Markup {
    html! {
        table {
            caption { (caption) }
            thead { tr {
                th scope="col" { "Version" } th scope="col" { "State" } th scope="col" { "Author" }
                th scope="col" { "Uploaded (UTC)" } th scope="col" { "Approvals" } th scope="col" { "Change" } th scope="col" { "Note" }
            } }
            tbody {
                @for version in versions {
                    tr {
                        td { a href=(format!("/console/policies/{}", version.number)) { (version.number) } }
                        td { (version.state) }
                        td { (author(version)) }
                        td { (when(version.created_at.0)) }
                        td { @if let Some(a) = version.approvals { (a.given) " of " (a.required) } }
                        td { @if let Some(checks) = &version.checks { (change_label(&checks.change)) } }
                        td { (version.note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The version a draft's checks compared it with.
fn checked_against(checks: &UploadChecks) -> Option<i64> {
    match &checks.change {
        ChangeChecked::Labelled { against, .. } => Some(*against),
        ChangeChecked::NotLabelled { .. } => match &checks.impact {
            ImpactChecked::Measured { against, .. } => Some(*against),
            ImpactChecked::NotMeasured { .. } => None,
        },
    }
}

fn is_author(session: &super::sessions::Session, summary: &PolicySummary) -> bool {
    summary.author.subject == session.principal.subject && summary.author.org.as_deref() == Some(session.principal.org.as_str())
}

fn label_in_words(label: ChangeLabel) -> &'static str {
    match label {
        ChangeLabel::Equivalent => "it allows exactly the same requests.",
        ChangeLabel::Narrows => "it allows fewer requests, and none that the other denies.",
        ChangeLabel::Widens => "it allows every request the other allows, and more.",
        ChangeLabel::Mixed => "it allows some requests the other denies, and denies some the other allows.",
    }
}

fn change_label(change: &ChangeChecked) -> String {
    match change {
        ChangeChecked::Labelled { against, label, .. } => format!("{label} (against version {against})"),
        ChangeChecked::NotLabelled { .. } => "not labelled".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
pub struct Shown {
    /// Set after a review: what was done, for the notice.
    reviewed: Option<String>,
}

pub async fn version(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(number): Path<String>,
    shown: Result<Query<Shown>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    let number = version_number(&number)?;
    let view = state.gateway.policy_version(&caller, number).await?;
    // The version in force, read (and audited) as one version is, for the diff.
    let in_force = state.gateway.policy().number;
    let active = if in_force == number { None } else { Some(state.gateway.policy_version(&caller, in_force).await?) };
    let reviewed = shown.ok().and_then(|Query(shown)| shown.reviewed);
    let summary = &view.summary;
    let markup = page(
        "Policy version",
        Some(&session),
        html! {
            @match reviewed.as_deref() {
                Some("approve") => { p.notice.good role="status" { "Your approval is recorded." } }
                Some("reject") => { p.notice.good role="status" { "Your rejection is recorded." } }
                _ => {}
            }
            dl {
                dt { "Number" } dd { (summary.number) }
                dt { "State" } dd { (summary.state) }
                dt { "Version (hash of its policy files)" } dd.hash { (summary.version) }
                dt { "Author" } dd { (author(summary)) }
                dt { "Uploaded (UTC)" } dd { (when(summary.created_at.0)) }
                @if let Some(note) = &summary.note { dt { "Note" } dd { (note) } }
                @if let Some(from) = summary.effective_from { dt { "To take effect no earlier than" } dd { (when(from.0)) } }
                @if let Some(at) = summary.effective_at { dt { "Takes or took effect" } dd { (when(at.0)) } }
                @if let Some(restores) = summary.restores { dt { "Restores" } dd { "version " (restores) } }
                @if let Some(approvals) = summary.approvals { dt { "Approvals" } dd { (approvals.given) " of " (approvals.required) ", the author's included" } }
            }
            @if !summary.sign_offs.is_empty() {
                h2 { "Sign-offs" }
                ul {
                    @for sign_off in &summary.sign_offs {
                        li {
                            (sign_off.by.subject) " " (if sign_off.verdict == Verdict::Approve { "approved" } else { "rejected" })
                            " at " (when(sign_off.at.0))
                            @if let Some(note) = &sign_off.note { ": " q { (note) } }
                        }
                    }
                }
            }
            @if let Some(against) = summary.checks.as_ref().and_then(checked_against).filter(|against| *against != in_force && summary.state == PolicyVersionState::Draft) {
                p.notice.bad role="alert" {
                    "Its checks compared it with version " (against) ", which was in force at upload; version " (in_force)
                    " is in force now. The label and the impact below are of the earlier comparison; the changes shown are against version " (in_force) "."
                }
            }
            @match &summary.checks {
                Some(checks) => { (checks_section(checks)) }
                None => { h2 { "Checks" } p { "This version was stored before uploads were checked, or is the initial one." } }
            }
            (diff_section(&view, active.as_ref()))
            @if summary.state == PolicyVersionState::Draft {
                h2 { "Review" }
                @if is_author(&session, summary) {
                    p { "You wrote this version: another DPO approves or rejects it." }
                } @else {
                    p { "Approve or reject it, and say why: the note is kept with your verdict." }
                    (form_post(&format!("/console/policies/{number}/review"), &session, html! {
                        label for="note" { "Note" }
                        textarea id="note" name="note" rows="3" cols="60" maxlength="500" {}
                        p {
                            button type="submit" name="verdict" value="approve" { "Approve" }
                            " "
                            button type="submit" name="verdict" value="reject" { "Reject" }
                        }
                    }))
                }
            }
        },
    );
    Ok(markup.into_response())
}

fn counts(changes: &Changes) -> Markup {
    html! {
        td.number { (changes.decisions) } td.number { (changes.allow_to_deny) } td.number { (changes.deny_to_allow) }
        td.number { (changes.sent_to_withheld) } td.number { (changes.withheld_to_sent) }
    }
}

fn impact_table(caption: &str, rows: Vec<(String, &Changes)>) -> Markup {
    html! {
        @if !rows.is_empty() {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Of" } th.number scope="col" { "Decisions changed" } th.number scope="col" { "Allowed → denied" }
                    th.number scope="col" { "Denied → allowed" } th.number scope="col" { "Categories no longer sent" } th.number scope="col" { "Categories now sent" }
                } }
                tbody { @for (name, changes) in &rows { tr { th scope="row" { (name) } (counts(changes)) } } }
            }
        }
    }
}

fn checks_section(checks: &UploadChecks) -> Markup {
    html! {
        h2 { "Tests" }
        p { (checks.tests.passed) " of " (checks.tests.run) " tests passed." }
        @if checks.tests.not_exercised.is_empty() {
            p { "Every policy of this version is exercised by a test." }
        } @else {
            p { "Policies no test exercises:" }
            ul { @for id in &checks.tests.not_exercised { li { code { (id) } } } }
        }
        h2 { "Proofs" }
        @match &checks.proofs {
            ProofsChecked::Proved { properties } => {
                p.outcome-good { "All " (properties) " properties of the built-in rules hold under this version, for every request." }
            }
            ProofsChecked::NotProved { reason } => { p.outcome-bad { "Not proved: " (reason) } }
        }
        h2 { "Change against the version in force" }
        @match &checks.change {
            ChangeChecked::Labelled { against, label, now_allowed, now_denied } => {
                p { "Against version " (against) ": " strong { (label_in_words(*label)) } }
                @if !now_allowed.is_empty() {
                    p { "Requests it allows that version " (against) " denies, for example:" }
                    ul { @for case in now_allowed { li { (case) } } }
                }
                @if !now_denied.is_empty() {
                    p { "Requests version " (against) " allows that it denies, for example:" }
                    ul { @for case in now_denied { li { (case) } } }
                }
            }
            ChangeChecked::NotLabelled { reason } => { p { "Not labelled: " (reason) } }
        }
        @if !checks.rule_files_changed.is_empty() {
            p.notice role="note" {
                "The label reads the Cedar policies only. These rule files change too; read their difference below: "
                @for (i, file) in checks.rule_files_changed.iter().enumerate() { @if i > 0 { ", " } code { (file) } }
                "."
            }
        }
        h2 { "Impact on recent decisions" }
        @match &checks.impact {
            ImpactChecked::Measured { against, since, erased, unreadable, impact } => {
                p {
                    (impact.replayed) " sending decisions made since " (when(since.0)) " were decided again under version " (against)
                    " and this one; " (impact.changed.decisions) " would have come out differently."
                    @if *erased > 0 { " " (erased) " more could not be replayed: their cases were erased." }
                    @if *unreadable > 0 { " " (unreadable) " could not be read." }
                }
                (impact_table("By recipient", impact.by_recipient.iter().map(|(k, v)| (k.clone(), v)).collect()))
                (impact_table("By purpose", impact.by_purpose.iter().map(|(k, v)| (k.to_string(), v)).collect()))
                (impact_table("By category", impact.by_category.iter().map(|(k, v)| (k.to_string(), v)).collect()))
            }
            ImpactChecked::NotMeasured { reason } => { p { "Not measured: " (reason) } }
        }
    }
}

/// Each file side by side with the version in force's, changes with some context.
fn diff_section(view: &PolicyVersionView, active: Option<&PolicyVersionView>) -> Markup {
    let Some(active) = active else {
        return html! {
            h2 { "Files" }
            @for (name, text) in &view.files {
                details { summary { code { (name) } } pre { code { (text) } } }
            }
        };
    };
    let mut names: Vec<&String> = view.files.keys().chain(active.files.keys()).collect();
    names.sort();
    names.dedup();
    html! {
        h2 { "Changes against version " (active.summary.number) " (in force)" }
        p.muted { "Each changed line is marked: + added, − removed, ~ changed." }
        @for name in names {
            @let (old, new) = (active.files.get(name), view.files.get(name));
            @if old != new {
                (file_diff(name, old, new, active.summary.number, view.summary.number))
            }
        }
        details {
            summary { "This version's files, whole" }
            @for (name, text) in &view.files { h3 { code { (name) } } pre { code { (text) } } }
        }
    }
}

/// One row of a side-by-side diff: the old line (number, text), the new one, and what changed.
struct Row<'a> {
    old: Option<(usize, &'a str)>,
    new: Option<(usize, &'a str)>,
    tag: DiffTag,
}

/// A line as shown: without its line end (a difference there is said in words).
fn shown_line(line: &str) -> &str {
    line.trim_end_matches('\n').trim_end_matches('\r')
}

fn file_diff(name: &str, old: Option<&String>, new: Option<&String>, old_number: i64, new_number: i64) -> Markup {
    let (old_text, new_text) = (old.map_or("", String::as_str), new.map_or("", String::as_str));
    let diff = TextDiff::from_lines(old_text, new_text);
    let (old_lines, new_lines) = (diff.old_slices(), diff.new_slices());
    let mut groups: Vec<Vec<Row<'_>>> = Vec::new();
    for group in diff.grouped_ops(DIFF_CONTEXT) {
        let mut rows = Vec::new();
        for op in group {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            let olds: Vec<(usize, &str)> = old_range.filter_map(|i| old_lines.get(i).map(|l| (i + 1, *l))).collect();
            let news: Vec<(usize, &str)> = new_range.filter_map(|i| new_lines.get(i).map(|l| (i + 1, *l))).collect();
            for k in 0..olds.len().max(news.len()) {
                rows.push(Row { old: olds.get(k).copied(), new: news.get(k).copied(), tag });
            }
        }
        groups.push(rows);
    }
    // What a cell's change is, in a class (colour) and a mark (words), never colour alone.
    let change = |tag: DiffTag, present: bool| match (tag, present) {
        (DiffTag::Equal, _) => ("same", " "),
        (_, false) => ("absent", " "),
        (DiffTag::Delete, true) => ("removed", "−"),
        (DiffTag::Insert, true) => ("added", "+"),
        (DiffTag::Replace, true) => ("changed", "~"),
    };
    let cell = |row: &Row<'_>, side: Option<(usize, &str)>, other: Option<(usize, &str)>| {
        let (class, mark) = change(row.tag, side.is_some());
        let ending_differs = matches!((side, other), (Some((_, a)), Some((_, b))) if a != b && shown_line(a) == shown_line(b));
        html! {
            td class=(class) {
                @if let Some((_, text)) = side {
                    span.mark aria-hidden="true" { (mark) " " }
                    @if mark != " " { span.visually-hidden { (class) ": " } }
                    code { (shown_line(text)) }
                    @if ending_differs { " " em { "(only its line end differs)" } }
                }
            }
        }
    };
    html! {
        table.diff {
            caption { code { (name) } @if old.is_none() { " (new file)" } @else if new.is_none() { " (removed)" } }
            thead { tr {
                th.number scope="col" { "Line in " (old_number) } th scope="col" { "Version " (old_number) }
                th.number scope="col" { "Line in " (new_number) } th scope="col" { "Version " (new_number) }
            } }
            @for (i, rows) in groups.iter().enumerate() {
                tbody {
                    @if i > 0 { tr { td colspan="4" class="muted" { "…" } } }
                    @for row in rows {
                        tr {
                            td.number { @if let Some((n, _)) = row.old { (n) } }
                            (cell(row, row.old, row.new))
                            td.number { @if let Some((n, _)) = row.new { (n) } }
                            (cell(row, row.new, row.old))
                        }
                    }
                }
            }
            @if groups.is_empty() {
                tbody { tr { td colspan="4" { "An empty file." } } }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    csrf: String,
    verdict: String,
    #[serde(default)]
    note: String,
}

impl CarriesCsrf for ReviewForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Approve or reject: the use case refuses the author's own vote, a second
/// vote, a version no longer a draft, as the API does.
pub async fn review(State(state): State<AppState>, Path(number): Path<String>, CheckedForm(session, form): CheckedForm<ReviewForm>) -> PageResult {
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    let number = version_number(&number)?;
    let verdict = match form.verdict.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        _ => return Err(PageError::App(crate::http::problem::Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "No verdict", "Choose Approve or Reject."))),
    };
    let note = Some(form.note.replace("\r\n", "\n").trim().to_owned()).filter(|n| !n.is_empty());
    state.gateway.review_policy(&caller, number, verdict, ReviewRequest { note }).await?;
    Ok(Redirect::to(&format!("/console/policies/{number}?reviewed={}", form.verdict)).into_response())
}

/// The form fields of a draft's files: `file:` and the file's name.
const FILE_FIELD: &str = "file:";

/// A new draft, written from the version in force: each file in a text box.
pub async fn new_draft(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    let list = state.gateway.policies(&caller).await?;
    let files = list.active.map(|active| active.files).unwrap_or_default();
    Ok(draft_page(&session, &files, "", None).into_response())
}

fn draft_page(session: &super::sessions::Session, files: &BTreeMap<String, String>, note: &str, refusal: Option<Markup>) -> Markup {
    page(
        "New draft",
        Some(session),
        html! {
            p.muted { "Your session ends after a while unused, and typing here is not use: write a long change elsewhere and paste it in." }
            p { "The files of the version in force, to change. On upload the gateway compiles them, runs their tests, proves the built-in rules still hold, labels the change and replays recent decisions; a draft then waits for the other DPOs' approval." }
            @if let Some(refusal) = refusal {
                div.notice.bad role="alert" { (refusal) }
            }
            (form_post("/console/policies", session, html! {
                @for (i, (name, text)) in files.iter().enumerate() {
                    @let id = format!("file-{i}");
                    label for=(id) { code { (name) } }
                    textarea id=(id) name=(format!("{FILE_FIELD}{name}")) rows=(text.lines().count().clamp(4, 30)) cols="100" spellcheck="false" {
                        // The parser drops one newline right after <textarea>: this one, never the file's own.
                        "\n" (text)
                    }
                }
                label for="note" { "Why this version (shown in the history)" }
                textarea id="note" name="note" rows="2" cols="60" maxlength="500" { (note) }
                p { button type="submit" { "Upload as a draft" } }
            }))
        },
    )
}

/// Uploads a draft from the form. A refused upload shows the form again,
/// with what the DPO wrote and why it was refused: nothing typed is lost.
pub async fn upload(State(state): State<AppState>, CheckedForm(session, fields): CheckedForm<Vec<(String, String)>>) -> PageResult {
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    // Browsers send a text box's line ends as CR LF.
    let files: BTreeMap<String, String> = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(FILE_FIELD).map(|name| (name.to_owned(), v.replace("\r\n", "\n"))))
        .collect();
    let note = fields.iter().find(|(k, _)| k == "note").map(|(_, v)| v.replace("\r\n", "\n").trim().to_owned()).unwrap_or_default();
    let upload = PolicyUpload { files: files.clone(), note: Some(note.clone()).filter(|n| !n.is_empty()), effective_from: None };
    match state.gateway.upload_policy(&caller, upload).await {
        Ok(stored) => Ok(Redirect::to(&format!("/console/policies/{}", stored.number)).into_response()),
        // Whatever went wrong, the form comes back with what was typed.
        Err(refused @ (AppError::PolicyInvalid(_) | AppError::PolicyRefused(_) | AppError::Invalid(_))) => {
            Ok((StatusCode::UNPROCESSABLE_ENTITY, draft_page(&session, &files, &note, Some(refusal(&refused)))).into_response())
        }
        Err(other) => {
            let status = crate::http::problem::Problem::from(other).status();
            let said = html! { p { "The gateway could not store the draft just now; nothing was stored. Your text is below: upload it again in a few minutes." } };
            Ok((status, draft_page(&session, &files, &note, Some(said))).into_response())
        }
    }
}

/// Why an upload was refused, in the DPO's words.
fn refusal(error: &AppError) -> Markup {
    html! {
        @match error {
            AppError::PolicyInvalid(problems) => {
                p { "The files do not compile:" }
                ul { @for p in problems { li { code { (p.file) ":" (p.line) ":" (p.column) } " " (p.problem) } } }
            }
            AppError::PolicyRefused(UploadRefusal::TestsInvalid(why)) => { p { "The tests cannot be run: " (why) } }
            AppError::PolicyRefused(UploadRefusal::TestsFailed(failed)) => {
                p { "Tests failed; nothing was stored:" }
                ul { @for (name, differences) in failed { li { code { (name) } ": " (differences.join("; ")) } } }
            }
            AppError::PolicyRefused(UploadRefusal::ProofRefuted(refuted)) => {
                p { "A built-in rule would no longer hold; nothing was stored. For example:" }
                ul { @for (property, examples) in refuted { li { strong { (property) } ul { @for e in examples { li { (e) } } } } } }
            }
            AppError::Invalid(problems) => {
                p { "The upload is not valid:" }
                ul { @for p in problems { li { code { (p.field) } " " (p.problem) } } }
            }
            _ => { p { "The upload was refused." } }
        }
    }
}
