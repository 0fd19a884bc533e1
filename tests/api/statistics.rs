//! Statistics without re-identification (issue 20 §2), end to end over a
//! real federation: the predefined tables of a closed month, rounded and
//! suppressed, asylum-linked referrals never by country, signed by each
//! gateway and merged by the coordinating body after checking each
//! signature against the directory.

use std::process::Command;
use std::time::Duration;

use referral_gateway::app::statistics::{period_records, period_records_in_pages};
use referral_gateway::domain::statistics::Period;
use serde_json::{json, Value};

use crate::helpers::{personal_values, send, client_for, variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation};

on_both_backends!(a_closed_month_is_released_rounded_signed_and_merged);

const LIMIT: Duration = Duration::from_secs(40);

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
}

/// The referrals cells of an answer, as (purpose, partner country, asylum-linked, outcome) → count.
fn referrals(tables: &Value) -> Vec<(String, Value, bool, String, Value)> {
    tables["referrals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["purpose"].as_str().unwrap().to_owned(), c["partner_country"].clone(), c["asylum_linked"].as_bool().unwrap(), c["outcome"].as_str().unwrap().to_owned(), c["count"].clone())
        })
        .collect()
}

/// Italy's November, at the fixtures' date: twelve referrals for a clinic in
/// Lagos, delivered (their ids), and three for the Gambia's immigration
/// department, denied. Idempotency keys start with `key`.
pub async fn november_referrals(federation: &Federation, key: &str) -> Vec<String> {
    let ita = federation.peer("ITA");
    let mut delivered = Vec::new();
    for n in 0..12 {
        let reply = ita.submit(Who::IomRome, &variant("returnee_hiv_reintegration", &format!("{key}-{n}"), None)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        delivered.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    for n in 0..3 {
        let reply = ita.submit(Who::IomRome, &variant("returnee_hiv_reintegration", &format!("{key}-denied-{n}"), Some("gmb-immigration"))).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
    }
    for id in &delivered {
        wait_for(&format!("{id} delivered"), LIMIT, || async { status_of(ita, Who::IomRome, id).await == "delivered" }).await;
    }
    delivered
}

async fn a_closed_month_is_released_rounded_signed_and_merged(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let delivered = november_referrals(&federation, "statistics").await;
    let ita = federation.peer("ITA");
    // And twelve asylum-linked returns to IOM Banjul.
    for n in 0..12 {
        let reply = ita.submit(Who::IomRome, &variant("rejected_asylum_avr", &format!("statistics-avr-{n}"), None)).await;
        assert!(reply.status == 202 || reply.status == 422, "{}", reply.text);
    }

    // November is open until it ends.
    let open = ita.get(Who::Coordinator, "/v1/statistics?period=2026-11").await;
    assert_eq!((open.status, open.problem()), (409, "statistics-period-open"), "{}", open.text);
    federation.clock.advance(chrono::Duration::days(8));
    let ita = federation.peer("ITA");

    let reply = ita.get(Who::Coordinator, "/v1/statistics?period=2026-11").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A period is answered once: an hour on (and whatever changed since), the same signed answer.
    federation.clock.advance(chrono::Duration::hours(1));
    let ita = federation.peer("ITA");
    let again = ita.get(Who::Dpo, "/v1/statistics?period=2026-11").await;
    assert_eq!(again.body, reply.body, "the first answer, kept");
    // The store's pages, however small, hold every record once.
    let november = Period::parse("2026-11").unwrap();
    let store = ita.app().gateway().store.clone();
    let records = period_records(store.as_ref(), november).await.unwrap();
    assert_eq!((records.decided.len(), records.timelines.len()), (27, 27), "every referral of November, each with its timeline");
    assert_eq!(records.timelines.iter().map(|t| t.steps.len()).sum::<usize>(), 27 + 12, "queued or denied, and 12 delivered");
    for page in [1, 2, 5] {
        assert_eq!(period_records_in_pages(store.as_ref(), november, page).await.unwrap(), records, "pages of {page}");
    }
    let statistics = &reply.body["statistics"];
    assert_eq!(statistics["gateway"], "ITA");
    assert_eq!(statistics["method"], json!({ "name": "rgw-statistics/1", "rounding_base": 5, "threshold": 10, "time_step_minutes": 15, "erasure_deadline_hours": 72 }));
    let tables = &statistics["tables"];
    assert_eq!(tables["period"], "2026-11");
    let cells = referrals(tables);
    assert!(cells.contains(&("reintegration".into(), json!("NGA"), false, "allow".into(), json!({ "flag": "released", "value": 10 }))), "12 rounded to 10: {cells:?}");
    assert!(cells.contains(&("reintegration".into(), json!("GMB"), false, "deny".into(), json!({ "flag": "suppressed" }))), "3 is under 10: {cells:?}");
    let returns: Vec<_> = cells.iter().filter(|c| c.0 == "return").collect();
    assert!(!returns.is_empty() && returns.iter().all(|c| c.1.is_null() && c.2), "asylum-linked returns are never counted by country: {returns:?}");
    assert_eq!(tables["delivery"]["count"], json!({ "flag": "released", "value": 10 }));
    assert!(tables["delivery"]["p50_minutes"].as_u64().is_some_and(|m| m % 15 == 0));
    assert!(!tables["withheld"].as_array().unwrap().is_empty());
    for value in personal_values() {
        assert!(!reply.text.contains(&value), "a personal value is in the statistics");
    }
    for id in &delivered {
        assert!(!reply.text.contains(id.as_str()), "a referral id is in the statistics");
    }

    // Predefined tables only: the period is the one parameter, and it must be one.
    for (query, status) in [("", 400), ("?period=2026-13", 400), ("?period=2026-11&purpose=return", 400), ("?period=2026-12", 409), ("?period=2026-Q4", 409)] {
        let refused = ita.get(Who::Dpo, &format!("/v1/statistics{query}")).await;
        assert_eq!(refused.status, status, "{query}: {}", refused.text);
    }
    assert_eq!(ita.get(Who::IomRome, "/v1/statistics?period=2026-11").await.status, 403, "a submitter reads no statistics");
    for who in [Who::Dpo, Who::Auditor] {
        assert_eq!(ita.get(who, "/v1/statistics?period=2026-11").await.status, 200);
    }
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'statistics.read' AND outcome = 'ok' AND reasons LIKE '%2026-11%'").await, 4, "the coordinator's two reads, the DPO's and the auditor's");

    // The same tables at a terminal, as of the same time; and Nigeria's, from its own terminal.
    let at = federation.clock_now().to_rfc3339();
    let release = |peer: &str| {
        let output = cli().args(["report", "statistics", "--period", "2026-11", "--at", &at, "--config"]).arg(&federation.peer(peer).config_path).output().unwrap();
        assert!(output.status.success(), "{peer}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let printed = release("ITA");
    assert_eq!(printed["statistics"]["tables"], *tables);
    let nigeria = release("NGA");
    assert_eq!(nigeria["statistics"]["gateway"], "NGA");
    assert_eq!(referrals(&nigeria["statistics"]["tables"]), [], "Nigeria sent nothing");

    // The coordinating body merges both, each checked against the directory.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let italy_file = write("ita.json", &reply.text);
    let nigeria_file = write("nga.jws", nigeria["signed"].as_str().unwrap());
    let directory = &federation.peer("ITA").config.directory;
    let merge = |files: &[&std::path::Path]| {
        cli().args(["report", "statistics", "--directory"]).arg(&directory.file).arg("--coordinator-key").arg(&directory.coordinator_key).arg("--merge").args(files).output().unwrap()
    };
    let merged = merge(&[&italy_file, &nigeria_file]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    let merged: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let sources: Vec<&str> = merged["sources"].as_array().unwrap().iter().map(|s| s["gateway"].as_str().unwrap()).collect();
    assert_eq!(sources, ["ITA", "NGA"]);
    assert_eq!(referrals(&merged["tables"]), referrals(tables), "Nigeria adds true zeros");
    assert_eq!(merged["tables"]["delivery"]["ITA"], tables["delivery"]);

    // Changed after signing, given twice, or signed by another gateway than it names: refused, nothing printed.
    let signed = reply.body["signed"].as_str().unwrap();
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(base64_decode(&parts[1])).unwrap().replace("\"value\":10", "\"value\":15");
    parts[1] = base64_encode(payload.as_bytes());
    let tampered = write("tampered.jws", &parts.join("."));
    // Signed with Nigeria's own key, but not what a gateway releases: each refused.
    let keys = referral_gateway::crypto::federation_keys::load(federation.peer("NGA").keys_dir()).unwrap();
    let nigeria_key = &keys.signing[0];
    let sign_as_nigeria = |name: &str, change: &dyn Fn(&mut Value), typ: &str| {
        let mut statistics = nigeria["statistics"].clone();
        change(&mut statistics);
        write(name, &referral_gateway::crypto::signed_json::sign(&statistics, nigeria_key, typ).unwrap())
    };
    const TYP: &str = referral_gateway::app::statistics::STATISTICS_JWS_TYPE;
    let resigned = sign_as_nigeria("resigned.jws", &|_| {}, TYP);
    let as_italy = sign_as_nigeria("as-italy.jws", &|s| s["gateway"] = json!("ITA"), TYP);
    let raw_count = sign_as_nigeria("raw.jws", &|s| s["tables"]["withdrawals"]["whole"] = json!({ "flag": "released", "value": 3 }), TYP);
    let too_early = sign_as_nigeria("early.jws", &|s| s["issued_at"] = json!("2026-12-01T00:30:00Z"), TYP);
    let weak = sign_as_nigeria("weak.jws", &|s| s["method"]["threshold"] = json!(3), TYP);
    let other_type = sign_as_nigeria("case.jws", &|_| {}, referral_gateway::crypto::case_push::CASE_JWS_TYPE);
    assert!(merge(&[&italy_file, &resigned]).status.success(), "the control: Nigeria's answer signed again merges");
    for files in [
        vec![&tampered, &nigeria_file],
        vec![&italy_file, &italy_file],
        vec![&italy_file, &as_italy],
        vec![&italy_file, &raw_count],
        vec![&italy_file, &too_early],
        vec![&italy_file, &weak],
        vec![&italy_file, &other_type],
    ] {
        let refused = merge(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>());
        assert_eq!(refused.status.code(), Some(2), "{files:?}");
        assert!(refused.stdout.is_empty());
    }

    // A gateway no longer active in the directory: its answers are not merged.
    federation.peer_mut("NGA").status = referral_gateway::directory::MemberStatus::Suspended;
    federation.publish().await;
    let directory = &federation.peer("ITA").config.directory;
    let refused = cli().args(["report", "statistics", "--directory"]).arg(&directory.file).arg("--coordinator-key").arg(&directory.coordinator_key).arg("--merge").arg(&italy_file).arg(&nigeria_file).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stdout));
    let anonymous = send(client_for(Who::Nobody).get(federation.peer("ITA").url("/v1/statistics?period=2026-11"))).await;
    assert_eq!(anonymous.status, 401);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
