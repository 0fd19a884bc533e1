//! The console for DPOs and auditors (issue 20 §1): its sessions, CSRF and
//! headers over plain HTTPS requests, then a real browser signing in with
//! the OpenID provider.

use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{client_builder_for, client_for, send, fixture, fixture_time, personal_values, personal_values_of, policy_files, spawn_app_with, variant, Backend, TestApp, Who};
use crate::peers::{status_of, wait_for, Federation};
use crate::policy_signoff::NO_HEALTH;
use crate::statistics::november_referrals;
use referral_gateway::app::Clock;
use referral_gateway::config::{ConsoleConfig, ConsoleOidcConfig, OidcConfig};
use crate::oidc_provider::{OidcProvider, ProviderOptions, AUDIENCE};

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A console page fetched as a browser would, without following redirects.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    /// The session cookie this answer sets, whole (attributes and all).
    fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Host-rgw-console="))
            .map(str::to_owned)
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self.html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
        self.html[at..].split('"').next().unwrap().to_owned()
    }
}

struct Visitor {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Visitor {
    fn new(app: &TestApp, who: Who) -> Self {
        Self::at(&app.app.base_url(), who)
    }

    /// A visitor of the gateway at `base` (`https://127.0.0.1:PORT`).
    fn at(base: &str, who: Who) -> Self {
        let client = client_builder_for(who).redirect(Policy::none()).build().unwrap();
        Self { client, base: base.to_owned(), cookie: None }
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        };
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let html = response.text().await.unwrap();
        if headers.get("content-type").is_some_and(|t| t.to_str().unwrap().starts_with("text/html")) {
            // Every page, whatever it is: no script, no inline style (the policy would block it).
            assert_eq!(headers.get(CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap()), Some(CSP));
            assert!(!html.contains("<script") && !html.contains("style="), "{html}");
        }
        Page { status, headers, html }
    }

    async fn get(&self, path: &str) -> Page {
        self.read(self.client.get(format!("{}{path}", self.base))).await
    }

    /// A multipart form: text fields, and files as (field, file name, content).
    async fn post_multipart(&self, path: &str, fields: &[(&str, &str)], files: &[(&str, &str, &str)], headers: &[(&str, &str)]) -> Page {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        for (name, file_name, content) in files {
            form = form.part(name.to_string(), reqwest::multipart::Part::text(content.to_string()).file_name(file_name.to_string()));
        }
        let mut request = self.client.post(format!("{}{path}", self.base)).multipart(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.read(request).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.read(request).await
    }

    /// Signs in with the client certificate, from the sign-in page's form; keeps the session cookie.
    async fn sign_in_with_certificate(&mut self) -> Page {
        let page = self.post("/console/sign-in/certificate", &[], &[("sec-fetch-site", "same-origin")]).await;
        if let Some(cookie) = page.session_cookie() {
            self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        }
        page
    }
}

async fn console_gateway(backend: Backend) -> TestApp {
    spawn_app_with(backend, fixture_time(), "[console]\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_strict_cookies_and_every_form_needs_its_token() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = console_gateway(backend).await;
        // A case in the log, whose personal data no page may show.
        assert_eq!(app.submit(Who::IomRome, &variant("trafficking_victim_reintegration", "console-0001", None)).await.status, 202);

        // Nobody signed in: every page leads to the sign-in page, itself under the policy.
        let mut dpo = Visitor::new(&app, Who::Dpo);
        for path in ["/console/", "/console/audit", "/console/audit/chain"] {
            let page = dpo.get(path).await;
            assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, Some("/console/sign-in")), "{path}");
        }
        let sign_in = dpo.get("/console/sign-in").await;
        assert_eq!(sign_in.status, StatusCode::OK);
        assert_eq!(sign_in.headers.get("cache-control").unwrap(), "no-store");
        assert_eq!(sign_in.headers.get("referrer-policy").unwrap(), "same-origin");
        assert_eq!(sign_in.headers.get("strict-transport-security").unwrap(), "max-age=31536000");
        assert!(!sign_in.html.contains("organisation's account"), "no provider sign-in without [console.oidc]");

        // Not from another site's page (the browser's certificate would go with it).
        let elsewhere = dpo.post("/console/sign-in/certificate", &[], &[("sec-fetch-site", "cross-site")]).await;
        assert_eq!((elsewhere.status, elsewhere.session_cookie()), (StatusCode::FORBIDDEN, None));
        // The DPO's browser certificate signs in: a Strict, Secure, HttpOnly __Host- cookie.
        let signed_in = dpo.sign_in_with_certificate().await;
        assert_eq!((signed_in.status, signed_in.location()), (StatusCode::SEE_OTHER, Some("/console/")));
        let cookie = signed_in.session_cookie().expect("a session cookie");
        assert!(cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"), "{cookie}");

        let audit = dpo.get("/console/audit").await;
        assert_eq!(audit.status, StatusCode::OK, "{}", audit.html);
        assert_eq!(audit.headers.get(CONTENT_SECURITY_POLICY).unwrap(), CSP);
        assert!(audit.html.contains("referral.submit"), "the submission is in the log");
        for value in personal_values() {
            assert!(!audit.html.contains(&value), "the audit page shows a personal value");
        }
        let filtered = dpo.get("/console/audit?action=referral.submit").await;
        assert!(filtered.html.contains("<code>referral.submit</code>") && !filtered.html.contains("<code>audit.read</code>"));
        let wrong = dpo.get("/console/audit?action=referral.delete").await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        assert!(wrong.html.contains("action is not one of the listed actions"));
        let chain = dpo.get("/console/audit/chain").await;
        assert_eq!(chain.status, StatusCode::OK);
        assert!(chain.html.contains("The chain holds"), "{}", chain.html);

        // A form without the session's token, or started by another site, changes nothing.
        let csrf = audit.csrf();
        let forged = [
            dpo.post("/console/sign-out", &[], &[]).await,
            dpo.post("/console/sign-out", &[("csrf", "not-the-token")], &[]).await,
            dpo.post("/console/sign-out", &[("csrf", &csrf)], &[("sec-fetch-site", "cross-site")]).await,
            dpo.post("/console/sign-out", &[("csrf", &csrf)], &[("origin", "https://attacker.example")]).await,
        ];
        for page in &forged {
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
            assert!(page.html.contains("Nothing was changed"));
        }
        assert_eq!(dpo.get("/console/audit").await.status, StatusCode::OK, "still signed in");
        // From the console itself, it signs out, and the cookie is good for nothing after.
        let origin = app.app.base_url();
        let out = dpo.post("/console/sign-out", &[("csrf", &csrf)], &[("sec-fetch-site", "same-origin"), ("origin", &origin)]).await;
        assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, Some("/console/sign-in")));
        assert!(out.session_cookie().unwrap().contains("Max-Age=0"));
        assert_eq!(dpo.get("/console/audit").await.location(), Some("/console/sign-in"));

        // The API never takes the console's cookie for a credential...
        let mut auditor = Visitor::new(&app, Who::Auditor);
        auditor.sign_in_with_certificate().await;
        let mut cookie_only = Visitor::new(&app, Who::Nobody);
        cookie_only.cookie = auditor.cookie.clone();
        assert_eq!(cookie_only.get("/v1/audit").await.status, StatusCode::UNAUTHORIZED);
        // ...nor answers what another site's page made a browser with the certificate send.
        for site in ["cross-site", "same-site"] {
            let request = auditor.client.get(format!("{}/v1/disclosures?subject_ref=ITA-2026-000417", auditor.base)).header("sec-fetch-site", site);
            let refused = auditor.read(request).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.html);
            assert!(refused.html.contains("cross_site_request"), "{}", refused.html);
        }
        let from_the_api_client = auditor.read(auditor.client.get(format!("{}/v1/audit", auditor.base))).await;
        assert_eq!(from_the_api_client.status, StatusCode::OK, "a client that sends no Sec-Fetch-Site is served");
        let overview = auditor.get("/console/").await;
        assert!(overview.html.contains("You are signed in as an auditor"), "{}", overview.html);

        // Neither a submitter nor a browser without a registered certificate gets a session.
        let submitter = Visitor::new(&app, Who::ItaNrm).sign_in_with_certificate().await;
        assert_eq!(submitter.status, StatusCode::FORBIDDEN);
        assert!(submitter.html.contains("neither role"), "{}", submitter.html);
        assert!(submitter.session_cookie().is_none());
        let stranger = Visitor::new(&app, Who::Stranger).sign_in_with_certificate().await;
        assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
        assert!(stranger.session_cookie().is_none());
        let refusals = app.get_query(Who::Auditor, "/v1/audit", &[("action", "access.refused")]).await;
        let codes: Vec<&str> = refusals.body["entries"].as_array().unwrap().iter().filter_map(|e| e["reasons"][0].as_str()).collect();
        assert!(
            codes.ends_with(&["missing_credentials", "cross_site_request", "cross_site_request", "missing_role", "console_no_certificate"]),
            "{codes:?}"
        );
        assert!(!refusals.text.contains("ITA-2026-000417"), "the refused request's subject reference is not kept");

        // Without [console.oidc] there is no provider sign-in to come back to.
        let no_provider = auditor.get("/console/callback?code=stolen&state=unknown").await;
        assert_eq!(no_provider.status, StatusCode::NOT_FOUND);

        // Every form of the console refuses a request without the session's token or from another site.
        let token = auditor.get("/console/audit").await.csrf();
        for path in ["/console/simulate", "/console/people", "/console/policies", "/console/policies/1/review", "/console/sign-out"] {
            for (fields, headers) in [
                (vec![("subject_ref", "ITA-2026-000417")], vec![("sec-fetch-site", "same-origin")]),
                (vec![("csrf", token.as_str()), ("subject_ref", "ITA-2026-000417")], vec![("sec-fetch-site", "cross-site")]),
            ] {
                let refused = auditor.post(path, &fields, &headers).await;
                assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}: {}", refused.html);
                assert!(refused.html.contains("Nothing was changed"), "{path}: {}", refused.html);
            }
        }

        // A page the console does not have is a page too, under the same policy.
        let missing = auditor.get("/console/nothing-here").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.headers.get(CONTENT_SECURITY_POLICY).unwrap(), CSP);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_written_reviewed_and_approved_on_the_policy_pages() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = console_gateway(backend).await;
        let (mut author, mut second, mut auditor) = (Visitor::new(&app, Who::Dpo), Visitor::new(&app, Who::SecondDpo), Visitor::new(&app, Who::Auditor));
        for visitor in [&mut author, &mut second, &mut auditor] {
            assert_eq!(visitor.sign_in_with_certificate().await.status, StatusCode::SEE_OTHER);
        }

        // The author writes a draft from the version in force: its files, in text boxes.
        let new = author.get("/console/policies/new").await;
        assert_eq!(new.status, StatusCode::OK, "{}", new.html);
        for (name, _) in policy_files() {
            assert!(new.html.contains(&format!(r#"name="file:{name}""#)), "{name}");
        }
        let csrf = new.csrf();
        let origin = app.app.base_url();
        let same_site = [("sec-fetch-site", "same-origin"), ("origin", origin.as_str())];
        let mut fields: Vec<(String, String)> = policy_files().into_iter().map(|(name, text)| (format!("file:{name}"), text.replace('\n', "\r\n"))).collect();
        fields.push(("file:30-no-health.cedar".to_owned(), NO_HEALTH.to_owned()));

        // A draft that does not compile is shown again, as typed, with the problem.
        let mut broken = fields.clone();
        broken.push(("file:40-broken.cedar".to_owned(), "permit (principal, action, resource) when { nonsense".to_owned()));
        broken.push(("note".to_owned(), "a note kept".to_owned()));
        broken.push(("csrf".to_owned(), csrf.clone()));
        let refused = author.post("/console/policies", &pairs(&broken), &same_site).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
        assert!(refused.html.contains("do not compile") && refused.html.contains("40-broken.cedar:1:"), "{}", refused.html);
        assert!(refused.html.contains("when { nonsense") && refused.html.contains("a note kept"), "what was typed is kept");

        fields.push(("note".to_owned(), "no health data abroad".to_owned()));
        fields.push(("csrf".to_owned(), csrf.clone()));
        let stored = author.post("/console/policies", &pairs(&fields), &same_site).await;
        assert_eq!((stored.status, stored.location()), (StatusCode::SEE_OTHER, Some("/console/policies/2")), "{}", stored.html);
        let draft = app.get(Who::Dpo, "/v1/policies/2").await;
        assert_eq!((draft.body["state"].as_str(), draft.body["note"].as_str()), (Some("draft"), Some("no health data abroad")));
        assert_eq!(draft.body["files"]["10-permits.cedar"].as_str(), policy_files().get("10-permits.cedar").map(String::as_str), "CR LF back to LF");

        // The version's page: its checks, and the new file side by side with the version in force.
        let page = author.get("/console/policies/2").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.html.contains("Changes against version 1 (in force)") && page.html.contains("30-no-health.cedar</code> (new file)"), "{}", page.html);
        assert!(
            page.html.contains(r#"<td class="added"><span class="mark" aria-hidden="true">+ </span><span class="visually-hidden">added: </span><code>forbid (principal, action, resource == Category::&quot;health&quot;);</code></td>"#),
            "the added line, marked in words as well as colour: {}",
            page.html
        );
        assert!(page.html.contains("tests passed") && page.html.contains("Not proved: no SMT solver"), "{}", page.html);

        // Its author cannot approve it: the refusal is shown, the draft stays.
        let review = |verdict: &str, csrf: &str| vec![("csrf".to_owned(), csrf.to_owned()), ("verdict".to_owned(), verdict.to_owned()), ("note".to_owned(), "looked at it".to_owned())];
        let own = author.post("/console/policies/2/review", &pairs(&review("approve", &csrf)), &same_site).await;
        assert_eq!(own.status, StatusCode::CONFLICT, "{}", own.html);
        // An auditor sees no policy page and approves nothing, with a token of his own.
        assert_eq!(auditor.get("/console/policies").await.status, StatusCode::FORBIDDEN);
        assert!(!auditor.get("/console/").await.html.contains(r#"href="/console/policies""#));
        let auditor_csrf = auditor.get("/console/audit").await.csrf();
        let by_auditor = auditor.post("/console/policies/2/review", &pairs(&review("approve", &auditor_csrf)), &same_site).await;
        assert_eq!(by_auditor.status, StatusCode::FORBIDDEN, "{}", by_auditor.html);
        // Nor does the second DPO with the author's token.
        assert_eq!(second.post("/console/policies/2/review", &pairs(&review("approve", &csrf)), &same_site).await.status, StatusCode::FORBIDDEN);
        assert_eq!(app.get(Who::Dpo, "/v1/policies/2").await.body["state"], "draft");

        // The second DPO approves: it takes effect.
        let second_csrf = second.get("/console/policies/2").await.csrf();
        let approved = second.post("/console/policies/2/review", &pairs(&review("approve", &second_csrf)), &same_site).await;
        assert_eq!((approved.status, approved.location()), (StatusCode::SEE_OTHER, Some("/console/policies/2?reviewed=approve")), "{}", approved.html);
        let shown = second.get("/console/policies/2?reviewed=approve").await;
        assert!(shown.html.contains("Your approval is recorded") && shown.html.contains("looked at it"), "{}", shown.html);
        let listed = second.get("/console/policies").await;
        assert!(listed.html.contains(r#"<a href="/console/policies/2">Version 2</a>"#), "{}", listed.html);
        assert_eq!(app.get(Who::Dpo, "/v1/policies/2").await.body["state"], "approved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulations_and_people_show_categories_and_rules_never_a_withheld_value() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = console_gateway(backend).await;
        let (mut dpo, mut auditor) = (Visitor::new(&app, Who::Dpo), Visitor::new(&app, Who::Auditor));
        dpo.sign_in_with_certificate().await;
        auditor.sign_in_with_certificate().await;
        let origin = app.app.base_url();
        let same_site = [("sec-fetch-site", "same-origin"), ("origin", origin.as_str())];

        // A returnee's health data never goes to an employment service.
        let form = dpo.get("/console/simulate").await;
        assert!(form.html.contains(r#"<option value="nga-employment-service">"#), "the directory's organisations to choose from");
        let referral = fixture("returnee_hiv_reintegration");
        let text = serde_json::to_string_pretty(&referral).unwrap();
        let csrf = form.csrf();
        let decided = dpo.post_multipart("/console/simulate", &[("csrf", &csrf), ("referral", &text), ("to", "nga-employment-service")], &[], &same_site).await;
        assert_eq!(decided.status, StatusCode::OK, "{}", decided.html);
        assert!(decided.html.contains("<strong>allow</strong>") && decided.html.contains("nga-employment-service in NGA"), "{}", decided.html);
        let withheld = decided.html.split("<caption>Withheld").nth(1).expect("the withheld table");
        assert!(withheld.contains(r#"<th scope="row">health</th>"#), "{withheld}");
        for value in personal_values_of([referral.clone()]).into_iter().chain(withheld_health(&referral)) {
            assert!(!decided.html.contains(&value), "the decided page shows {value:?}");
        }
        // A referral file does as well as pasted text, and takes its place.
        let from_file = dpo
            .post_multipart("/console/simulate", &[("csrf", &csrf), ("referral", "not this"), ("to", "nga-employment-service")], &[("referral_file", "referral.json", &text)], &same_site)
            .await;
        assert_eq!(from_file.status, StatusCode::OK, "{}", from_file.html);
        assert!(from_file.html.contains("<strong>allow</strong>") && from_file.html.contains(r#"<option value="nga-employment-service" selected>"#));
        // What is not a referral comes back as typed, with what is wrong.
        let broken = dpo.post_multipart("/console/simulate", &[("csrf", &csrf), ("referral", "{\"purpose\": "), ("to", "")], &[], &same_site).await;
        assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(broken.html.contains("This is not JSON") && broken.html.contains("{&quot;purpose&quot;: "), "{}", broken.html);
        assert_eq!(auditor.get("/console/simulate").await.status, StatusCode::FORBIDDEN, "simulation is the DPO's");

        // The people page: a subject reference typed in, answered in the page, never in its address or title.
        let submitted = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", "console-people-1", None)).await;
        assert_eq!(submitted.status, 202, "{}", submitted.text);
        let referral_id = submitted.body["referral_id"].as_str().unwrap().to_owned();
        let subject_ref = referral["subject_ref"].as_str().unwrap().to_owned();
        for visitor in [&dpo, &auditor] {
            let form = visitor.get("/console/people").await;
            let found = visitor.post("/console/people", &[("csrf", &form.csrf()), ("subject_ref", &subject_ref)], &same_site).await;
            assert_eq!(found.status, StatusCode::OK, "{}", found.html);
            assert!(found.html.contains(&referral_id) && found.html.contains("Who received what"), "{}", found.html);
            assert!(found.html.contains("<title>People · referral-gateway console</title>"));
            for value in personal_values_of([referral.clone()]).into_iter().filter(|v| *v != subject_ref) {
                assert!(!found.html.contains(&value), "the people page shows {value:?}");
            }
        }
        let csrf = dpo.get("/console/people").await.csrf();
        let malformed = dpo.post("/console/people", &[("csrf", &csrf), ("subject_ref", "short")], &same_site).await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
        let looks = app.get_query(Who::Auditor, "/v1/audit", &[("action", "subject.report")]).await;
        assert_eq!(looks.body["entries"].as_array().unwrap().len(), 2, "each look is audited");
    }
}

/// Italy's gateway of a federation with Nigeria's, its console on, November's referrals delivered.
async fn federation_with_a_console(backend: Backend) -> (Federation, Vec<String>) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("ITA").await;
    federation.peer_mut("ITA").config.console = Some(ConsoleConfig { public_url: None, idle_minutes: 30, session_hours: 8, oidc: None });
    federation.start_peer("ITA", true).await;
    let delivered = november_referrals(&federation, "console").await;
    (federation, delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_page_counts_per_partner_and_shows_erasures_awaited() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (mut federation, delivered) = federation_with_a_console(backend).await;
        let base = federation.peer("ITA").app().base_url();
        let mut dpo = Visitor::at(&base, Who::Dpo);
        dpo.sign_in_with_certificate().await;
        let row = |html: &str, caption: &str| html.split(caption).nth(1).unwrap().split("</table>").next().unwrap().to_owned();

        let page = dpo.get("/console/deliveries").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let packets = row(&page.html, "<caption>Packets by partner gateway");
        assert!(
            packets.contains(r#"<th scope="row" rowspan="2">NGA</th><td>referrals</td><td class="number">0</td><td class="number">0</td><td class="number">12</td>"#),
            "12 referrals delivered to Nigeria: {packets}"
        );

        // Nigeria's gateway is down when a consent is withdrawn: the erasure is awaited, then overdue.
        federation.stop_peer("NGA").await;
        let ita = federation.peer("ITA");
        let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{}/consent-withdrawal", delivered[0]))).json(&json!({}))).await;
        assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
        let erasures = row(&dpo.get("/console/deliveries").await.html, "<caption>Erasures awaited");
        assert!(erasures.contains(r#"<th scope="row">NGA</th><td class="number">1</td><td class="number">0</td>"#), "{erasures}");
        federation.clock.advance(chrono::Duration::hours(73));
        dpo.sign_in_with_certificate().await;
        let page = dpo.get("/console/deliveries").await;
        let erasures = row(&page.html, "<caption>Erasures awaited");
        assert!(erasures.contains(r#"<td class="number">1</td><td class="number outcome-bad">1</td>"#), "72 hours passed: {erasures}");
        let packets = row(&page.html, "<caption>Packets by partner gateway");
        assert!(packets.contains(r#"<td>statuses, withdrawals, replies</td><td class="number">"#), "{packets}");
        for value in personal_values() {
            assert!(!page.html.contains(&value));
        }
        for id in &delivered {
            assert!(!page.html.contains(id.as_str()), "counts only");
        }

        // Nigeria's gateway back: the withdrawal reaches it, its erasure is reported, nothing is awaited any more.
        federation.start_peer("NGA", true).await;
        let ita = federation.peer("ITA");
        wait_for("the erasure reported to Italy", std::time::Duration::from_secs(40), || async { status_of(ita, Who::IomRome, &delivered[0]).await != "withdrawn" }).await;
        let erasures = row(&dpo.get("/console/deliveries").await.html, "<caption>Erasures awaited");
        assert!(erasures.contains(r#"<th scope="row">NGA</th><td class="number">0</td><td class="number">0</td>"#), "{erasures}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistics_page_shows_the_released_tables_with_bars() {
    let (federation, _) = federation_with_a_console(Backend::Sqlite).await;
    let base = federation.peer("ITA").app().base_url();
    let mut auditor = Visitor::at(&base, Who::Auditor);
    auditor.sign_in_with_certificate().await;

    // November is open at first; once closed, its tables are shown.
    let open = auditor.get("/console/statistics?period=2026-11").await;
    assert_eq!(open.status, StatusCode::CONFLICT, "{}", open.html);
    federation.clock.advance(chrono::Duration::days(8));
    assert_eq!(auditor.get("/console/statistics").await.location(), Some("/console/sign-in"), "the session ended with the days passed");
    auditor.sign_in_with_certificate().await;
    let page = auditor.get("/console/statistics").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains(r#"<option value="2026-11" selected>2026-11</option>"#), "the last closed month by default");
    let rows = page.html.split("<caption>Referrals by purpose").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(rows.contains(r#"<th scope="row">reintegration → NGA: allow</th><td class="number">10</td>"#), "12 rounded to 10: {rows}");
    assert!(rows.contains(r#"<th scope="row">reintegration → GMB: deny</th><td class="number">suppressed</td><td></td>"#), "3 suppressed, with no bar: {rows}");
    assert!(rows.contains(r##"<rect x="0" y="1" height="12" width="240" fill="#0b3d62">"##), "the largest count's bar is the longest: {rows}");
    for value in personal_values() {
        assert!(!page.html.contains(&value), "a personal value is on the statistics page");
    }
    let wrong = auditor.get("/console/statistics?period=2026-13").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
}

/// The health details of a referral (conditions, medication): what a decision that withholds health must never show.
fn withheld_health(referral: &serde_json::Value) -> Vec<String> {
    let health = &referral["case"]["health"];
    let mut values: Vec<String> = ["conditions", "medication_needs"]
        .iter()
        .flat_map(|key| health[key].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(values.iter().any(|v| v.contains("HIV")), "the fixture's health details: {health}");
    values.retain(|v| !v.is_empty());
    values
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpos_and_an_auditor_sign_in_with_the_provider_in_a_real_browser() {
    let provider = OidcProvider::start().await;
    let extra = format!(
        "[auth.oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\n\n[console]\n\n[console.oidc]\nclient_id = \"ita-console\"\nclient_secret = \"ita-console-secret\"\nscopes = [\"referrals\"]\n",
        provider.issuer()
    );
    let app = spawn_app_with(Backend::Sqlite, fixture_time(), &extra).await;
    // The console's own address (the listen address): the provider sends browsers back there.
    let console = app.app.base_url();
    provider.allow_console_redirect(&format!("{console}/console/callback")).await;
    let browser = Browser::start().await;

    // A DPO opens the console, is sent to sign in, and signs in at the provider.
    sign_in(&browser, &console, &provider, "dpo-1").await;
    assert!(browser.text().await.contains("Signed in as dpo-1 of ita-nrm (dpo)"), "{}", browser.text().await);
    assert_eq!(browser.title().await, "Overview · referral-gateway console");
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name() == "__Host-rgw-console").expect("the session cookie");
    assert_eq!((session.http_only(), session.secure()), (Some(true), Some(true)));
    assert_eq!(session.same_site().map(|s| s.to_string()).as_deref(), Some("Strict"));
    browser.screenshot("overview").await;

    // The audit log, filtered, then the chain verified on the page.
    browser.click_link("Audit log").await;
    browser.wait_for_path("/console/audit").await;
    browser.screenshot("audit").await;
    let action = browser.client.find(fantoccini::Locator::Css("select#action")).await.unwrap();
    action.select_by_value("access.refused").await.unwrap();
    browser.click("form.filters button[type=submit]").await;
    browser.wait_for_path_starting("/console/audit?action=access.refused").await;
    browser.click_link("Verify the whole chain").await;
    browser.wait_for_path("/console/audit/chain").await;
    assert!(browser.text().await.contains("The chain holds"), "{}", browser.text().await);

    // A simulation: a returnee's referral decided for an employment service, health withheld.
    browser.click_link("Simulate").await;
    browser.wait_for_path("/console/simulate").await;
    let referral = fixture("returnee_hiv_reintegration");
    browser.fill("textarea#referral", &serde_json::to_string(&referral).unwrap()).await;
    let to = browser.client.find(fantoccini::Locator::Css("select#to")).await.unwrap();
    to.select_by_value("nga-employment-service").await.unwrap();
    browser.click("main form button[type=submit]").await;
    // The answer comes back to the same address.
    browser.wait_for_text("The decision").await;
    assert!(browser.text().await.contains("health"));
    let source = browser.client.source().await.unwrap();
    for value in personal_values_of([referral.clone()]).into_iter().chain(withheld_health(&referral)) {
        assert!(!source.contains(&value), "the simulation page shows {value:?}");
    }
    browser.screenshot("simulate").await;

    // The people page: the reference typed in; the address and the title stay the page's own.
    let submitted = app.submit(Who::IomRome, &referral).await;
    assert_eq!(submitted.status, 202, "{}", submitted.text);
    browser.click_link("People").await;
    browser.wait_for_path("/console/people").await;
    browser.fill("input#subject_ref", referral["subject_ref"].as_str().unwrap()).await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for_text(submitted.body["referral_id"].as_str().unwrap()).await;
    assert_eq!((browser.path().await.as_str(), browser.title().await.as_str()), ("/console/people", "People · referral-gateway console"));
    browser.screenshot("people").await;

    // The first DPO writes a draft: a comment added to the restrictions.
    browser.click_link("Policies").await;
    browser.wait_for_path("/console/policies").await;
    browser.click_link("Write a new draft from the version in force").await;
    browser.wait_for_path("/console/policies/new").await;
    let restrictions = browser.client.find(fantoccini::Locator::Css(r#"textarea[name="file:20-restrictions.cedar"]"#)).await.unwrap();
    restrictions.send_keys("\n// Reviewed in the console.\n").await.unwrap();
    browser.fill("textarea#note", "a comment, reviewed in the browser").await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for_path("/console/policies/2").await;
    let text = browser.text().await;
    assert!(text.contains("draft") && text.contains("Reviewed in the console.") && text.contains("1 of 2"), "{text}");
    browser.screenshot("policy-draft").await;
    browser.element_screenshot("table.diff", "policy-diff").await;

    // Signing out ends the session; the second DPO approves the draft.
    browser.click("header form button[type=submit]").await;
    browser.wait_for_path("/console/sign-in").await;
    browser.goto(&format!("{console}/console/audit")).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    sign_in(&browser, &console, &provider, "dpo-2").await;
    assert!(browser.text().await.contains("Signed in as dpo-2 of ita-nrm (dpo)"));
    browser.goto(&format!("{console}/console/policies/2")).await;
    browser.fill("textarea#note", "a comment only: nothing shared changes").await;
    browser.click(r#"button[value="approve"]"#).await;
    browser.wait_for_path("/console/policies/2?reviewed=approve").await;
    let text = browser.text().await;
    assert!(text.contains("Your approval is recorded") && text.contains("dpo-2 approved"), "{text}");
    assert_eq!(app.get(Who::Dpo, "/v1/policies/2").await.body["state"], "approved");
    browser.screenshot("policy-approved").await;
    browser.click("header form button[type=submit]").await;
    browser.wait_for_path("/console/sign-in").await;

    // The auditor reads, and reaches no policy page.
    sign_in(&browser, &console, &provider, "auditor-1").await;
    let text = browser.text().await;
    assert!(text.contains("Signed in as auditor-1 of ita-nrm (auditor)") && text.contains("change nothing"), "{text}");
    assert!(browser.client.find(fantoccini::Locator::LinkText("Policies")).await.is_err());
    browser.goto(&format!("{console}/console/policies/2")).await;
    assert!(browser.text().await.contains("Forbidden"), "{}", browser.text().await);
    browser.goto(&format!("{console}/console/")).await;
    browser.click("header form button[type=submit]").await;
    browser.wait_for_path("/console/sign-in").await;

    // Someone the provider knows with no organisation or role here gets no session.
    start_sign_in(&browser, &console, &provider, "visitor-9").await;
    browser.wait_for_path_starting("/console/callback?").await;
    assert!(browser.text().await.contains("Sign-in failed"), "{}", browser.text().await);

    // A submitter of the same organisation is refused, and the refusal audited.
    start_sign_in(&browser, &console, &provider, "submitter-1").await;
    browser.wait_for_path_starting("/console/callback?").await;
    let text = browser.text().await;
    assert!(text.contains("Not for this account") && text.contains("neither role"), "{text}");
    assert!(browser.client.get_all_cookies().await.unwrap().iter().all(|c| c.name() != "__Host-rgw-console"), "no session");
    // The provider's answer is good once: the same callback again signs no one in.
    let callback = browser.client.current_url().await.unwrap();
    browser.goto(callback.as_str()).await;
    assert!(browser.text().await.contains("Sign-in failed"), "{}", browser.text().await);
    // A callback this browser never started (another site's link, say) signs no one in
    // and leaves the browser's own sign-in under way alone.
    let forged = client_builder_for(Who::Nobody).redirect(Policy::none()).build().unwrap();
    let answer = forged
        .get(format!("{console}/console/callback?code=stolen&state=made-up"))
        .header(COOKIE, "__Host-rgw-console-sign-in=another-state")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().get(SET_COOKIE).is_none(), "no cookie set or expired");
    let refusals = app.get_query(Who::Auditor, "/v1/audit", &[("action", "access.refused")]).await;
    let codes: Vec<&str> = refusals.body["entries"].as_array().unwrap().iter().filter_map(|e| e["reasons"][0].as_str()).collect();
    assert!(codes.ends_with(&["token_missing_claims", "missing_role", "console_unknown_sign_in", "console_unknown_sign_in"]), "{codes:?}");
    let role_refusal = &refusals.body["entries"].as_array().unwrap()[codes.len() - 3];
    assert_eq!(role_refusal["actor"]["subject"].as_str(), Some("submitter-1"));
    // Each DPO's and the auditor's reads are theirs in the log.
    let reads = app.get_query(Who::Auditor, "/v1/audit", &[("action", "audit.read")]).await;
    let readers: Vec<&str> = reads.body["entries"].as_array().unwrap().iter().filter_map(|e| e["actor"]["subject"].as_str()).collect();
    assert!(readers.contains(&"dpo-1"), "{readers:?}");
    browser.close().await;
    provider.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_statistics_in_a_real_browser() {
    let (mut federation, delivered) = federation_with_a_console(Backend::Sqlite).await;
    // A withdrawal Nigeria's gateway, down, cannot confirm; then November closes.
    federation.stop_peer("NGA").await;
    let ita = federation.peer("ITA");
    let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{}/consent-withdrawal", delivered[0]))).json(&json!({}))).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    federation.clock.advance(chrono::Duration::days(8));

    // Italy's console signs in with the provider, whose clock starts at the federation's.
    let provider = OidcProvider::start_with(ProviderOptions { clock_start: Some(federation.clock.now()), ..ProviderOptions::default() }).await;
    federation.stop_peer("ITA").await;
    {
        let config = &mut federation.peer_mut("ITA").config;
        config.auth.oidc = Some(OidcConfig {
            issuer: provider.issuer().to_owned(),
            audience: AUDIENCE.to_owned(),
            org_claim: "org_id".to_owned(),
            roles_claim: "roles".to_owned(),
            leeway_seconds: 30,
            jwks_min_refresh_seconds: 10,
        });
        let oidc = ConsoleOidcConfig { client_id: "ita-console".to_owned(), client_secret: "ita-console-secret".to_owned(), scopes: vec!["referrals".to_owned()] };
        config.console = Some(ConsoleConfig { public_url: None, idle_minutes: 30, session_hours: 8, oidc: Some(oidc) });
    }
    federation.start_peer("ITA", true).await;
    let base = federation.peer("ITA").app().base_url();
    provider.allow_console_redirect(&format!("{base}/console/callback")).await;
    let browser = Browser::start().await;
    sign_in(&browser, &base, &provider, "auditor-1").await;

    browser.click_link("Deliveries").await;
    browser.wait_for_path("/console/deliveries").await;
    let text = browser.text().await;
    assert!(text.contains("Erasures awaited") && text.contains("NGA"), "{text}");
    browser.screenshot("deliveries").await;
    browser.click_link("Statistics").await;
    browser.wait_for_path("/console/statistics").await;
    assert!(browser.text().await.contains("Referrals by purpose"), "{}", browser.text().await);
    browser.screenshot("statistics").await;
    browser.close().await;
    provider.stop().await;
}

/// From the console's sign-in page through the provider's login form, as `login`.
async fn start_sign_in(browser: &Browser, console: &str, provider: &OidcProvider, login: &str) {
    // The provider remembers who signed in last: forget it, as another person's browser would.
    browser.goto(&format!("{}/.well-known/openid-configuration", provider.issuer())).await;
    browser.client.delete_all_cookies().await.unwrap();
    browser.goto(&format!("{console}/console/")).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.click_link("Sign in with your organisation's account").await;
    browser.fill("input[name=login]", login).await;
    browser.fill("input[name=password]", "any password").await;
    browser.click("button[type=submit]").await;
}

async fn sign_in(browser: &Browser, console: &str, provider: &OidcProvider, login: &str) {
    start_sign_in(browser, console, provider, login).await;
    browser.wait_for_path("/console/").await;
}
