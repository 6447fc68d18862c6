//! Engine throughput and memory benchmark (`cargo bench --bench engine`).
//!
//! Generates MISP-shaped events of about 1, 10 and 50 MB (thousands of
//! attributes with tags, objects, sharing groups, escaped strings), then
//! times the engine's push (request body) and pull (response) inspection on
//! one core, allowed (full walk) and blocked at the very last attribute.
//! Peak heap during one inspection is measured with a counting allocator.
//! Writes `target/bench/engine.json`. `--quick` runs only the 1 MB rows;
//! `--only TEXT` only the rows whose name holds TEXT (to profile one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use misp_guard_gw::config;
use misp_guard_gw::engine::{self, RequestHead, Response, Scheme};
use misp_guard_gw::policy::Policy;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"low": ["low", "high"], "high": ["low", "high"]}},
  "instances": {
    "src": {"ip": "10.1.0.1", "host": "src.example", "port": 443, "compartment_id": "low", "affiliation": "",
      "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {"tlp": ["tlp:clear", "tlp:green"]},
                           "blocked_tags": ["tlp:red", "tlp:amber", "pap:red", "internal:restricted"]},
      "blocked_distribution_levels": ["0"],
      "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb", "0d2d2f4c-8b5a-4a39-9f0e-3b5c1d2e4f60"],
      "blocked_attribute_types": ["passport-number", "email", "phone-number"],
      "blocked_attribute_categories": ["Person"], "blocked_object_types": ["person"]},
    "dst": {"ip": "10.2.0.1", "host": "dst.example", "port": 443, "compartment_id": "high", "affiliation": "",
      "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {"tlp": ["tlp:clear", "tlp:green"]},
                           "blocked_tags": ["tlp:red", "tlp:amber", "pap:red", "internal:restricted"]},
      "blocked_distribution_levels": ["0"],
      "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
      "blocked_attribute_types": ["passport-number", "email", "phone-number"],
      "blocked_attribute_categories": ["Person"], "blocked_object_types": ["person"]}
  }
}"#;

/// A small deterministic generator (no rand dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a as u32,
            (a >> 32) as u16,
            b as u16 & 0xfff,
            (b >> 16) as u16 & 0xfff,
            self.next() & 0xffff_ffff_ffff
        )
    }
}

const TYPES: &[(&str, &str)] = &[
    ("ip-dst", "Network activity"),
    ("domain", "Network activity"),
    ("url", "Network activity"),
    ("md5", "Payload delivery"),
    ("sha256", "Payload delivery"),
    ("filename", "Payload delivery"),
    ("text", "Other"),
];

fn attribute(out: &mut String, rng: &mut Lcg, id: usize, tags: &[&str], with_sg: bool) {
    use std::fmt::Write;
    let (kind, category) = TYPES[(rng.next() % TYPES.len() as u64) as usize];
    let _ = write!(
        out,
        r#"{{"id":"{id}","type":"{kind}","category":"{category}","to_ids":true,"uuid":"{}","event_id":"1","distribution":"{}","timestamp":"{}","comment":"seen in \"campaign\" caf\u00e9 \\ batch {}","sharing_group_id":"{}","deleted":false,"disable_correlation":false,"object_id":"0","object_relation":null,"first_seen":null,"last_seen":null,"value":"value-{}-{:x}.example.org","Galaxy":[],"ShadowAttribute":[],"Tag":["#,
        rng.uuid(),
        if with_sg { 4 } else { 5 },
        1_700_000_000 + id,
        id % 97,
        if with_sg { 3 } else { 0 },
        id,
        rng.next(),
    );
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r##"{{"id":"{}","name":"{t}","colour":"#33FF00","exportable":true,"user_id":"0","hide_tag":false,"numerical_value":null,"is_galaxy":false,"is_custom_galaxy":false,"local_only":false,"local":0,"relationship_type":null}}"##,
            i + 1
        );
    }
    out.push(']');
    if with_sg {
        let _ = write!(
            out,
            r#","SharingGroup":{{"id":"3","name":"partners","releasability":"partners only","description":"","uuid":"{}","organisation_uuid":"{}","org_id":"1","sync_user_id":"0","active":true,"created":"2024-01-01 00:00:00","modified":"2024-01-01 00:00:00","local":true,"roaming":false,"Organisation":{{"id":"1","name":"ORG","uuid":"{}"}},"SharingGroupOrg":[{{"id":"1","sharing_group_id":"3","org_id":"1","extend":true,"Organisation":{{"name":"ORG","uuid":"{}"}}}}],"SharingGroupServer":[{{"all_orgs":false,"server_id":"0","sharing_group_id":"3","Server":[]}}]}}"#,
            rng.uuid(),
            rng.uuid(),
            rng.uuid(),
            rng.uuid()
        );
    }
    out.push('}');
}

/// An event of about `target` bytes; `poison` puts `tlp:red` on the very
/// last attribute of the last object.
fn event(target: usize, poison: bool) -> Vec<u8> {
    let mut rng = Lcg(42);
    let mut out = String::with_capacity(target + 4096);
    out.push_str(r#"{"Event":{"id":"1","orgc_id":"1","org_id":"1","date":"2026-11-01","threat_level_id":"2","info":"benchmark event","published":true,"uuid":"385283a1-b5e0-4e10-a532-dce11c365a56","analysis":"2","timestamp":"1700000000","distribution":"1","sharing_group_id":"0","Tag":[{"name":"tlp:green"},{"name":"misp:tool=\"bench\""}],"EventReport":[{"distribution":"1","name":"report","content":"text"}],"Galaxy":[],"Attribute":["#);
    let tags: &[&[&str]] = &[
        &["tlp:green"],
        &["tlp:green", "type:OSINT"],
        &["tlp:clear", "kill-chain:Delivery", "source:feed"],
    ];
    // 80% of the body in plain attributes, the rest in objects.
    let mut id = 0;
    while out.len() < target * 8 / 10 {
        if id > 0 {
            out.push(',');
        }
        let t = tags[id % tags.len()];
        attribute(&mut out, &mut rng, id, t, id % 10 == 0);
        id += 1;
    }
    out.push_str(r#"],"Object":["#);
    let mut first_obj = true;
    while out.len() < target {
        if !first_obj {
            out.push(',');
        }
        first_obj = false;
        out.push_str(r#"{"id":"1","name":"file","meta-category":"file","description":"File object","template_uuid":"688c46fb-5edb-40a3-8273-1af7923e2215","template_version":"24","event_id":"1","uuid":"11111111-2222-4333-8444-555555555555","timestamp":"1700000000","distribution":"5","sharing_group_id":"0","comment":"","deleted":false,"ObjectReference":[],"Attribute":["#);
        for j in 0..4 {
            if j > 0 {
                out.push(',');
            }
            attribute(&mut out, &mut rng, id, &["tlp:green"], false);
            id += 1;
        }
        out.push_str("]}");
    }
    if poison {
        // Replace the last attribute's tag list with one carrying tlp:red.
        let at = out.rfind(r#""name":"tlp:green""#).expect("a tag to poison");
        out.replace_range(
            at..at + r#""name":"tlp:green""#.len(),
            r#""name":"tlp:red"  "#,
        );
    }
    out.push_str("]}}");
    out.into_bytes()
}

struct Row {
    name: String,
    mb: f64,
    /// Best run: least disturbed by other load on a shared machine.
    best: Duration,
    median: Duration,
    mbps: f64,
    peak_heap: usize,
}

fn measure(
    name: &str,
    body: &[u8],
    max_iters: usize,
    mut inspect: impl FnMut() -> Result<(), String>,
) -> Option<Row> {
    if !selected(name) {
        return None;
    }
    // One measured run for memory.
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    let base = CURRENT.load(Ordering::Relaxed);
    inspect().unwrap_or_else(|e| panic!("{name}: {e}"));
    let peak_heap = PEAK.load(Ordering::Relaxed) - base;
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < max_iters && (times.len() < 3 || started.elapsed() < Duration::from_secs(1))
    {
        let t = Instant::now();
        inspect().unwrap_or_else(|e| panic!("{name}: {e}"));
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let best = times[0];
    let mb = body.len() as f64 / 1e6;
    Some(Row {
        name: name.to_string(),
        mb,
        best,
        median,
        mbps: mb / best.as_secs_f64(),
        peak_heap,
    })
}

/// `--only TEXT`: run just the rows whose name holds TEXT (to profile one).
fn selected(name: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only") {
        Some(i) => args.get(i + 1).is_some_and(|t| name.contains(t.as_str())),
        None => true,
    }
}

/// The head stage for `method path` from the source to the destination
/// instance (the same for every iteration, as in the gateway).
fn head<'a>(
    policy: &Policy,
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> Result<engine::Exchange, String> {
    let head = RequestHead {
        client_ip: "10.1.0.1".parse().unwrap(),
        host: "dst.example",
        port: 443,
        scheme: Scheme::Https,
        dst_ip: None,
        method,
        path,
        headers,
    };
    engine::request_head(policy, &head).map_err(|b| b.reason)
}

const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

fn push(policy: &Policy, body: &[u8], expect_block: Option<&str>) -> Result<(), String> {
    let x = head(policy, "POST", "/events/add/metadata:1", JSON)?;
    outcome(engine::request_body(policy, &x, JSON, body), expect_block)
}

/// The gateway's way: the body fed as it arrives in `piece`-byte reads,
/// then the verdict once the last byte is in. Returns the time spent after
/// the last byte (what is left on the push's critical path).
fn push_arriving(
    policy: &Policy,
    body: &[u8],
    piece: usize,
    expect_block: Option<&str>,
) -> Result<Duration, String> {
    let x = head(policy, "POST", "/events/add/metadata:1", JSON)?;
    let mut reader =
        engine::request_body_reader(policy, &x, JSON).ok_or("no incremental reader")?;
    let mut end = 0;
    while end < body.len() {
        end = (end + piece).min(body.len());
        if let Some(b) = reader.feed(policy, &body[..end]) {
            return outcome(Err(b), Some("early")).map(|_| Duration::ZERO);
        }
    }
    let t = Instant::now();
    let verdict = reader.finish(policy, JSON, body);
    let left = t.elapsed();
    outcome(verdict, expect_block).map(|_| left)
}

fn pull(policy: &Policy, body: &[u8], expect_block: Option<&str>) -> Result<(), String> {
    let x = head(
        policy,
        "GET",
        "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56",
        JSON,
    )?;
    let resp = Response {
        status: 200,
        headers: JSON,
        body,
    };
    outcome(engine::response(policy, &x, &resp), expect_block)
}

/// A benchmark that silently measured the wrong path would be worthless.
fn outcome(r: Result<(), engine::Block>, expect_block: Option<&str>) -> Result<(), String> {
    match (r, expect_block) {
        (Ok(()), None) => Ok(()),
        (Err(b), Some(want)) if b.reason == want => Ok(()),
        (Ok(()), Some(want)) => Err(format!("expected block {want:?}, got allow")),
        (Err(b), _) => Err(format!("unexpected block: {}", b.reason)),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let policy = config::from_slice(POLICY.as_bytes(), Path::new("bench-policy.json"))
        .expect("bench policy");
    let sizes: &[usize] = if quick {
        &[1_000_000]
    } else {
        &[1_000_000, 10_000_000, 50_000_000]
    };
    let iters = if quick { 2 } else { 15 };
    let red = Some("attribute with a blocked tag: tlp:red");
    let mut rows = Vec::new();
    let mut after_last_byte = Vec::new();
    for &size in sizes {
        let ok = event(size, false);
        let bad = event(size, true);
        let mb = size / 1_000_000;
        rows.extend(measure(
            &format!("push {mb} MB allowed"),
            &ok,
            iters,
            || push(&policy, &ok, None),
        ));
        rows.extend(measure(
            &format!("push {mb} MB blocked at end"),
            &bad,
            iters,
            || push(&policy, &bad, red),
        ));
        let mut left = Duration::MAX;
        rows.extend(measure(
            &format!("push {mb} MB as it arrives"),
            &ok,
            iters,
            || {
                let l = push_arriving(&policy, &ok, 16 * 1024, None)?;
                left = left.min(l);
                Ok(())
            },
        ));
        if left != Duration::MAX {
            after_last_byte.push((mb, left));
        }
        rows.extend(measure(
            &format!("pull {mb} MB allowed"),
            &ok,
            iters,
            || pull(&policy, &ok, None),
        ));
    }
    println!(
        "{:<28} {:>6} {:>9} {:>10} {:>10} {:>13} {:>7}",
        "row", "MB", "best ms", "median ms", "MB/s/core", "peak heap MB", "x body"
    );
    let mut json = Vec::new();
    for r in &rows {
        let ratio = r.peak_heap as f64 / (r.mb * 1e6);
        println!(
            "{:<28} {:>6.1} {:>9.2} {:>10.2} {:>10.0} {:>13.1} {:>7.2}",
            r.name,
            r.mb,
            r.best.as_secs_f64() * 1e3,
            r.median.as_secs_f64() * 1e3,
            r.mbps,
            r.peak_heap as f64 / 1e6,
            ratio
        );
        json.push(format!(
            r#"{{"row":"{}","mb":{:.3},"best_ms":{:.3},"median_ms":{:.3},"mb_per_s_per_core":{:.1},"peak_heap_bytes":{},"peak_heap_over_body":{:.3}}}"#,
            r.name,
            r.mb,
            r.best.as_secs_f64() * 1e3,
            r.median.as_secs_f64() * 1e3,
            r.mbps,
            r.peak_heap,
            ratio
        ));
    }
    for (mb, left) in &after_last_byte {
        println!(
            "push {mb} MB as it arrives (16 KiB reads): {:.2} ms left after the last byte (best)",
            left.as_secs_f64() * 1e3
        );
        json.push(format!(
            r#"{{"row":"push {mb} MB left after last byte","best_ms":{:.3}}}"#,
            left.as_secs_f64() * 1e3
        ));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("engine.json");
    std::fs::write(&path, format!("[{}]\n", json.join(",\n"))).expect("write results");
    println!("results: {}", path.display());
}
