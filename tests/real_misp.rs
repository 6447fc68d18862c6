//! A real MISP 2.5 behind the running gateway (issue 14, item 6).
//!
//! The gateway runs as an explicit proxy; the test client plays the pushing
//! MISP (its socket bound to 127.0.0.7, the policy's source instance) and
//! sends MISP's sync requests in absolute form, as MISP's client does with
//! `Proxy.host`, to the kit's real MISP (`../shared/realmisp/setup.sh`,
//! plain HTTP). Each case then reads back, directly from MISP, what MISP
//! stored: everything for allowed pushes, nothing forbidden for refused ones.
//!
//! Every case is first sent straight to MISP (the "control") with its own
//! fresh uuids, and what the case expects stored and what it calls
//! forbidden must then all be stored (or answered): this proves the body is
//! one MISP really imports, so the gateway case can fail.
//!
//! The cases are one table (`cases()` in `real_misp/cases.rs`, bodies in
//! `real_misp/bodies.rs`); an audit row is added there. A case
//! marked `gap` is a known hole in the engine: it must still fail (the
//! run says how), and a gap that starts passing fails the run so the marker
//! is removed. Skips when no MISP is reachable, unless
//! MISP_GW_REQUIRE_REALMISP=1. MISP_REAL_URL / MISP_REAL_KEY override the
//! kit's files.

#[path = "real_misp/bodies.rs"]
mod bodies;
#[path = "real_misp/cases.rs"]
mod cases;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bodies::*;
use cases::*;
use serde_json::{json, Value};
use support::realmisp::{fresh_uuid, RealMisp};
use support::*;

/// The test client's address: the policy's source instance.
const CLIENT_IP: &str = "127.0.0.7";
/// Cases in flight at once.
const PARALLEL_CASES: usize = 3;

// ---- running a case ----

/// What MISP holds about the case's objects, as one lower-cased text: the
/// event, the galaxy cluster and the standalone notes, read directly.
async fn stored_text(misp: &RealMisp, i: &Ids) -> Result<String, String> {
    let mut parts = vec![misp.event(&i.ev).await?, misp.cluster(&i.gc).await?];
    for kind in ["Note", "Opinion", "Relationship"] {
        parts.push(misp.analyst_data(kind, &i.n1).await?);
        parts.push(misp.analyst_data(kind, &i.n2).await?);
    }
    let text: Vec<String> = parts
        .drain(..)
        .flatten()
        .map(|v| v.to_string().to_lowercase())
        .collect();
    Ok(text.join("\n"))
}

async fn seed(misp: &RealMisp, i: &Ids, tags: &[&str]) -> Result<(), String> {
    let a = misp
        .direct("POST", "/events/add/metadata:1", Some(&seed_event(i, tags)))
        .await?;
    if a.status != 200 {
        return Err(format!(
            "seeding event {}: HTTP {}: {}",
            i.ev,
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    Ok(())
}

/// The start of an answer body, on one line.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// The case sent straight to MISP: what it must store and what it must not
/// (and what its answer must not carry) are all there, so the case can fail.
async fn control(misp: &RealMisp, case: &Case, sg: &BlockedSg) -> Result<(), String> {
    let i = Ids::fresh(sg);
    if case.seed {
        seed(misp, &i, case.seed_tags).await?;
    }
    let body = case.request_body(&i);
    let a = misp
        .direct(case.method, &(case.path)(&i), body.as_ref())
        .await?;
    let text = stored_text(misp, &i).await?;
    let mut missing: Vec<String> = (case.stored)(&i)
        .into_iter()
        .chain((case.forbidden)(&i))
        .filter(|m| !text.contains(&m.to_lowercase()))
        .collect();
    let answer = answer_text(&a.body);
    missing.extend(
        (case.answer_forbidden)(&i)
            .into_iter()
            .filter(|m| !answer.contains(&answer_marker(m)))
            .map(|m| format!("{m} (in its answer)")),
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "control: MISP (HTTP {}) did not store or answer {missing:?}, so this case proves nothing: {}",
            a.status,
            excerpt(&a.body)
        ))
    }
}

/// The case through the gateway; Err says what went wrong.
async fn through_gateway(
    misp: &RealMisp,
    proxy: SocketAddr,
    case: &Case,
    sg: &BlockedSg,
) -> Result<(), String> {
    let i = Ids::fresh(sg);
    if case.seed {
        seed(misp, &i, case.seed_tags).await?;
    }
    let client: IpAddr = CLIENT_IP.parse().unwrap();
    let body = case.request_body(&i);
    let a = misp
        .via_gateway(proxy, client, case.method, &(case.path)(&i), body.as_ref())
        .await?;
    let text = stored_text(misp, &i).await?;
    let mut wrong = Vec::new();
    if a.status != case.status {
        wrong.push(format!(
            "gateway answered {} (expected {}): {}",
            a.status,
            case.status,
            excerpt(&a.body)
        ));
    }
    let missing: Vec<String> = (case.stored)(&i)
        .into_iter()
        .filter(|m| !text.contains(&m.to_lowercase()))
        .collect();
    if !missing.is_empty() {
        wrong.push(format!("MISP did not store {missing:?}"));
    }
    let leaked: Vec<String> = (case.forbidden)(&i)
        .into_iter()
        .filter(|m| text.contains(&m.to_lowercase()))
        .collect();
    if !leaked.is_empty() {
        wrong.push(format!("MISP stored forbidden {leaked:?}"));
    }
    let answer = answer_text(&a.body);
    let answered: Vec<String> = (case.answer_forbidden)(&i)
        .into_iter()
        .filter(|m| answer.contains(&answer_marker(m)))
        .collect();
    if !answered.is_empty() {
        wrong.push(format!(
            "the gateway's answer carried forbidden {answered:?}"
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// An answer as compared with `answer_forbidden` markers: lower case and
/// without white space, so a marker matches MISP's pretty-printed JSON.
fn answer_text(body: &[u8]) -> String {
    answer_marker(&String::from_utf8_lossy(body))
}

fn answer_marker(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Makes the run's blocked sharing group on MISP (an event shared with it,
/// sent directly) so that cases can name it by MISP's local id too.
async fn blocked_sharing_group(misp: &RealMisp) -> BlockedSg {
    let uuid = fresh_uuid();
    let i = Ids::fresh(&BlockedSg {
        uuid: uuid.clone(),
        local_id: String::new(),
    });
    let body = event(
        &i,
        json!({"distribution": "4", "SharingGroup": sharing_group(&i)}),
    );
    let a = misp
        .direct("POST", "/events/add/metadata:1", Some(&body))
        .await
        .expect("creating the blocked sharing group");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let view = misp
        .read(&format!("/sharing_groups/view/{uuid}.json"))
        .await
        .expect("reading the sharing group")
        .expect("MISP did not store the sharing group");
    let local_id = view["SharingGroup"]["id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| view["SharingGroup"]["id"].as_u64().map(|n| n.to_string()))
        .expect("sharing group id");
    BlockedSg { uuid, local_id }
}

fn gateway_config(dir: &std::path::Path, misp: &RealMisp, sg: &str) -> std::path::PathBuf {
    let rules = |v: &mut Value| {
        v["taxonomies_rules"]["blocked_tags"] = json!(["tlp:red"]);
        v["blocked_distribution_levels"] = json!(["0"]);
        v["blocked_sharing_groups_uuids"] = json!([sg]);
        v["blocked_attribute_types"] = json!(["passport-number"]);
        v["blocked_attribute_categories"] = json!(["Person"]);
        v["blocked_object_types"] = json!(["person"]);
    };
    let mut client = instance_json(CLIENT_IP, "client.realmisp.test", 443, "c1");
    let mut server = instance_json(
        &misp.addr.ip().to_string(),
        "misp.realmisp.test",
        misp.addr.port(),
        "c2",
    );
    rules(&mut client);
    rules(&mut server);
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"]}},
        "instances": {"client": client, "misp": server},
        "gateway": {"limits": {"max_body_bytes": 10_000_000}}
    });
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_misp_stores_only_what_the_policy_allows() {
    let Some(misp) = RealMisp::find("real_misp_stores_only_what_the_policy_allows").await else {
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("realmisp");
    let sg = blocked_sharing_group(&misp).await;
    let cfg = gateway_config(&dir.0, &misp, &sg.uuid);
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));

    // Cases are independent (fresh uuids), so a few run at once; MISP's
    // php-fpm pool serves several requests in parallel.
    let all = Arc::new(cases());
    let (misp, sg) = (Arc::new(misp), Arc::new(sg));
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_CASES));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..all.len() {
        let (all, misp, sg, limit) = (all.clone(), misp.clone(), sg.clone(), limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let case = &all[n];
            let control = control(&misp, case, &sg).await;
            let outcome = match control {
                Err(e) => Err(e),
                Ok(()) => through_gateway(&misp, proxy, case, &sg).await,
            };
            (n, outcome)
        });
    }
    let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; all.len()];
    while let Some(done) = tasks.join_next().await {
        let (n, outcome) = done.expect("case task panicked");
        outcomes[n] = Some(outcome);
    }

    let (mut failed, mut gaps_fixed, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    for (case, outcome) in all.iter().zip(outcomes) {
        let outcome = outcome.expect("every case ran");
        let line = match (&outcome, case.gap) {
            (Ok(()), None) => format!("pass      {}", case.name),
            (Err(e), None) => {
                failed.push(format!("{}: {e}", case.name));
                format!("FAIL      {}: {e}", case.name)
            }
            (Ok(()), Some(_)) => {
                gaps_fixed.push(case.name);
                format!("GAP FIXED {} (remove its gap marker)", case.name)
            }
            (Err(e), Some(why)) => {
                gaps.push(case.name);
                format!("known gap {} ({why}): {e}", case.name)
            }
        };
        eprintln!("{line}");
    }
    eprintln!(
        "{} cases in {:.1?}: {} failed, {} known gaps, {} gaps fixed",
        all.len(),
        started.elapsed(),
        failed.len(),
        gaps.len(),
        gaps_fixed.len()
    );
    assert!(
        failed.is_empty() && gaps_fixed.is_empty(),
        "failed: {failed:#?}\ngaps now passing (remove `gap`): {gaps_fixed:#?}\ngateway log:\n{}",
        gw.logs()
    );
}
