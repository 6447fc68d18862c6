//! The measurements, each run for every route in turn on the same server:
//! small keep-alive requests, a new connection per request, transfers,
//! pushes the gateway refuses, and small requests during big pushes.
//! Every loop has a count and a time budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{event, get, push_head, Blocked, Client, Route, PULL};
use crate::procfs::{cpu_seconds, peak_rss_mb, reset_peak_rss};
use crate::support::{read_answer, Log};
use crate::table::Table;

/// Requests timed on one route, possibly over several rounds.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    /// Time the timed requests ran, all rounds together.
    secs: f64,
    /// TLS handshakes that were resumed (new-connection rows).
    resumed: usize,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.secs += other.secs;
        self.resumed += other.resumed;
    }
}

struct Latency {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Share of the TLS handshakes that were resumed (new-connection rows).
    resumed: f64,
}

impl Latency {
    fn of(s: Sample) -> Latency {
        let mut all = s.latencies;
        assert!(!all.is_empty(), "no request completed within the budget");
        all.sort();
        let pct =
            |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e6;
        Latency {
            rps: all.len() as f64 / s.secs,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            resumed: s.resumed as f64 / all.len() as f64,
        }
    }
}

/// Rounds of the request rows: the columns take turns, so a moment of
/// load elsewhere on the machine is spread over every column instead of
/// spoiling one.
const REQUEST_ROUNDS: u32 = 3;

/// Whether the command line asks to leave out one half of the rows.
fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// All rows, for every route; the JSON rows.
pub async fn measure(
    routes: &[Route],
    quick: bool,
    pull_body: &Mutex<Vec<u8>>,
    received: &Log,
) -> Vec<serde_json::Value> {
    let mut t = Table::new(routes.iter().map(|r| r.name).collect());
    for r in routes {
        println!("{:<8} client leg: {}", r.name, negotiated(r).await);
    }
    // --transfers-only / --small-only: one half of the rows (profiling).
    if !flag("--transfers-only") {
        small_rows(&mut t, routes, quick).await;
        new_connection_rows(&mut t, routes, quick).await;
    }
    if !flag("--small-only") {
        let sizes: &[usize] = match quick {
            true => &[1 << 20, 10 << 20],
            false => &[1 << 20, 10 << 20, 50 << 20],
        };
        transfer_rows(&mut t, routes, sizes, pull_body, received).await;
        if let Some(&size) = sizes.last() {
            during_pushes_rows(&mut t, routes, size, received).await;
        }
    }
    t.rows
}

/// What the client's TLS handshake on route `r` settled on: the columns
/// should differ in the proxy, not in the cipher or key exchange.
async fn negotiated(r: &Route) -> String {
    let (tls, _) = (r.connect)().await.into_parts();
    let c = tls.get_ref().1;
    let name = |d: Option<String>| d.unwrap_or_else(|| "?".into());
    format!(
        "{} {} {}",
        name(c.protocol_version().map(|v| format!("{v:?}"))),
        name(
            c.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
        ),
        name(
            c.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        )
    )
}

/// Small keep-alive requests with 1, 8 and 64 clients: req/s, p50/p99,
/// and the proxies' CPU while they ran.
async fn small_rows(t: &mut Table, routes: &[Route], quick: bool) {
    t.rate_header("small keep-alive requests (GET)");
    // Time-bound (the count is a cap): a few thousand requests take
    // milliseconds, too short for a CPU reading (10 ms ticks).
    let (cap, budget) = match quick {
        true => (20_000, Duration::from_millis(500)),
        false => (200_000, Duration::from_secs(2)),
    };
    for clients in [1, 8, 64] {
        let per_client = cap / clients / REQUEST_ROUNDS as usize;
        let mut samples: Vec<Sample> = routes.iter().map(|_| Sample::default()).collect();
        let mut cpu = vec![(0.0, 0.0); routes.len()];
        for _ in 0..REQUEST_ROUNDS {
            for ((r, sample), (used, secs)) in routes.iter().zip(&mut samples).zip(&mut cpu) {
                let (cpu0, t0) = (cpu_seconds(&r.pids), Instant::now());
                sample.add(small_requests(r, clients, per_client, budget / REQUEST_ROUNDS).await);
                *used += cpu_seconds(&r.pids) - cpu0;
                *secs += t0.elapsed().as_secs_f64();
            }
        }
        let lat: Vec<Latency> = samples.into_iter().map(Latency::of).collect();
        latency_rows(t, &format!("{clients} clients"), &lat, false);
        let cpu: Vec<_> = routes
            .iter()
            .zip(cpu)
            .map(|(r, (used, secs))| (!r.pids.is_empty()).then(|| used / secs * 100.0))
            .collect();
        t.rate_row(
            &format!("{clients} client(s) CPU %"),
            &format!("{clients} clients CPU %"),
            &cpu,
        );
    }
}

/// req/s, p50 and p99 rows (and the resumed share) of one measurement.
fn latency_rows(t: &mut Table, what: &str, lat: &[Latency], resumed: bool) {
    let col = |f: fn(&Latency) -> f64| lat.iter().map(|l| Some(f(l))).collect::<Vec<_>>();
    t.rate_row(
        &format!("{what} req/s"),
        &format!("{what} req/s"),
        &col(|l| l.rps),
    );
    t.rate_row(
        &format!("{what} p50 µs"),
        &format!("{what} p50 µs"),
        &col(|l| l.p50_us),
    );
    t.rate_row(
        &format!("{what} p99 µs"),
        &format!("{what} p99 µs"),
        &col(|l| l.p99_us),
    );
    if resumed {
        let share = col(|l| l.resumed * 100.0);
        t.rate_row(
            &format!("{what} TLS resumed %"),
            &format!("{what} TLS resumed %"),
            &share,
        );
    }
}

/// `clients` keep-alive connections issuing GETs for `per_client` requests
/// or `budget`, whichever ends first.
async fn small_requests(r: &Route, clients: usize, per_client: usize, budget: Duration) -> Sample {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = (r.connect)().await;
        // One untimed request first: through a proxy it opens the upstream
        // connection (TCP + TLS handshake), which a direct client did in
        // connect(). Timed rows are then keep-alive steady state.
        c.write_all(&get(false)).await.unwrap();
        assert_eq!(
            read_answer(&mut c, "GET").await.expect("answer").status,
            200
        );
        conns.push(c);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let req = get(false);
            for _ in 0..per_client {
                if started.elapsed() > budget {
                    break;
                }
                let t = Instant::now();
                c.write_all(&req).await.unwrap();
                let a = read_answer(&mut c, "GET").await.expect("answer");
                assert_eq!(a.status, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    Sample {
        latencies: all,
        secs: started.elapsed().as_secs_f64(),
        resumed: 0,
    }
}

/// 8 clients, each opening a new TLS connection per request
/// (`Connection: close`): the handshake is part of every request's time.
async fn new_connection_rows(t: &mut Table, routes: &[Route], quick: bool) {
    t.rate_header("new connection per request (8 clients)");
    let (clients, per_client, budget) = match quick {
        true => (8, 100, Duration::from_secs(1)),
        false => (8, 1000, Duration::from_secs(3)),
    };
    let mut samples: Vec<Sample> = routes.iter().map(|_| Sample::default()).collect();
    for _ in 0..REQUEST_ROUNDS {
        for (r, sample) in routes.iter().zip(&mut samples) {
            let per_round = per_client / REQUEST_ROUNDS as usize;
            let budget = budget / REQUEST_ROUNDS;
            sample.add(new_connection_requests(r, clients, per_round, budget).await);
        }
    }
    let lat: Vec<Latency> = samples.into_iter().map(Latency::of).collect();
    latency_rows(t, "8 clients new connection", &lat, true);
}

async fn new_connection_requests(
    r: &Route,
    clients: usize,
    per_client: usize,
    budget: Duration,
) -> Sample {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let connect = r.connect.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut resumed) = (Vec::with_capacity(per_client), 0);
            for _ in 0..per_client {
                if started.elapsed() > budget {
                    break;
                }
                let t = Instant::now();
                let mut c = connect().await;
                c.write_all(&get(true)).await.unwrap();
                let a = read_answer(&mut c, "GET").await.expect("answer");
                assert_eq!(a.status, 200);
                lat.push(t.elapsed());
                let (tls, _) = c.into_parts();
                resumed +=
                    usize::from(tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed));
            }
            (lat, resumed)
        }));
    }
    let (mut all, mut resumed) = (Vec::new(), 0);
    for t in tasks {
        let (l, r) = t.await.unwrap();
        all.extend(l);
        resumed += r;
    }
    Sample {
        latencies: all,
        secs: started.elapsed().as_secs_f64(),
        resumed,
    }
}

/// Per size: allowed push and pull on every route (time, added time, peak
/// RSS), then pushes blocked at their first and at their last attribute
/// on the routes that filter (time from the request head to the 403).
async fn transfer_rows(
    t: &mut Table,
    routes: &[Route],
    sizes: &[usize],
    pull_body: &Mutex<Vec<u8>>,
    received: &Log,
) {
    t.transfer_header("push/pull (allowed, TLS both legs)");
    for &size in sizes {
        let body = event(size, Blocked::Nowhere);
        let mb = body.len() as f64 / 1e6;
        *pull_body.lock().unwrap() = body.clone();
        for (what, push) in [("push", true), ("pull", false)] {
            let best = best_transfers(routes, push, &body, received).await;
            let times: Vec<_> = best.into_iter().map(Some).collect();
            // Each row reports the peak RSS of its own transfers.
            let rss: Vec<_> = routes
                .iter()
                .map(|r| (!r.pids.is_empty()).then(|| peak_rss_mb(&r.pids)))
                .collect();
            t.transfer_row(
                &format!("{what} {mb:.1} MB"),
                &format!("{what} {mb:.1} MB"),
                &times,
                &rss,
            );
        }
        for (blocked, at) in [(Blocked::First, "first"), (Blocked::Last, "last")] {
            let body = event(size, blocked);
            let (mut times, mut rss) = (Vec::new(), Vec::new());
            for r in routes {
                if !r.filters {
                    times.push(None);
                    rss.push(None);
                    continue;
                }
                reset_peak_rss(&r.pids);
                received.lock().unwrap().clear();
                times.push(best_refusal(r, &body).await);
                assert!(
                    received.lock().unwrap().is_empty(),
                    "a push blocked at its {at} attribute reached the server"
                );
                rss.push(Some(peak_rss_mb(&r.pids)));
            }
            t.transfer_row(
                &format!("push {mb:.1} MB blocked at {at} attr: to 403"),
                &format!("push {mb:.1} MB blocked at {at} attribute"),
                &times,
                &rss,
            );
        }
    }
}

/// Transfers per route and row: the best of them is reported.
const ROUNDS: usize = 5;

/// The best of [`ROUNDS`] pushes (`push`) or pulls of `body` per route,
/// one connection per route. Rounds go through the routes in turn, so a
/// moment of load elsewhere on the machine is spread over every column
/// instead of spoiling one. Resets the routes' peak-RSS marks first.
async fn best_transfers(
    routes: &[Route],
    push: bool,
    body: &[u8],
    received: &Log,
) -> Vec<Duration> {
    let mut conns = Vec::new();
    for r in routes {
        reset_peak_rss(&r.pids);
        conns.push((r.connect)().await);
    }
    let mut best = vec![Duration::MAX; routes.len()];
    for _ in 0..ROUNDS {
        for (c, b) in conns.iter_mut().zip(best.iter_mut()) {
            let t = match push {
                true => timed_push(c, body).await,
                false => timed_pull(c, body.len()).await,
            };
            *b = (*b).min(t);
            // The server keeps what it received: not every big body at once.
            received.lock().unwrap().clear();
        }
    }
    best
}

/// Longest a single transfer may take (writes included: a proxy that
/// stops reading fails the run instead of hanging it).
const TRANSFER_LIMIT: Duration = Duration::from_secs(60);

async fn timed_pull(c: &mut Client, len: usize) -> Duration {
    let t = Instant::now();
    tokio::time::timeout(TRANSFER_LIMIT, c.write_all(PULL))
        .await
        .expect("pull request sent within the limit")
        .unwrap();
    let a = read_answer(c, "GET").await.expect("answer");
    assert_eq!((a.status, a.body.len()), (200, len));
    t.elapsed()
}

async fn timed_push(c: &mut Client, body: &[u8]) -> Duration {
    let mut req = push_head(body.len());
    req.extend_from_slice(body);
    let t = Instant::now();
    tokio::time::timeout(TRANSFER_LIMIT, c.write_all(&req))
        .await
        .expect("push sent within the limit")
        .unwrap();
    let a = read_answer(c, "POST").await.expect("answer");
    assert_eq!(a.status, 200);
    t.elapsed()
}

/// Best of three refused pushes, each on a new connection (a proxy may
/// close after a refusal); None if one was not answered 403.
async fn best_refusal(r: &Route, body: &[u8]) -> Option<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        match time_to_refusal((r.connect)().await, body).await {
            Ok(t) => best = best.min(t),
            Err(e) => {
                eprintln!("{}: a blocked push was not answered 403: {e}", r.name);
                return None;
            }
        }
    }
    Some(best)
}

/// Sends the head of a push, then its body while reading the answer: the
/// time from the head to the 403's head, however much of the body the
/// proxy has read by then. The body ends with a flush: a TLS stream can
/// hold the last records of a completed write (without it the proxy
/// waits for them and the push hangs).
async fn time_to_refusal(c: Client, body: &[u8]) -> Result<Duration, String> {
    let (tls, buffered) = c.into_parts();
    assert!(buffered.is_empty(), "bytes before the request");
    let (mut rd, mut wr) = tokio::io::split(tls);
    wr.write_all(&push_head(body.len()))
        .await
        .map_err(|e| format!("sending the head: {e}"))?;
    let t = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let (mut head, mut buf, mut sent, mut done) = (Vec::new(), [0u8; 4096], 0, false);
    let seen = |h: &[u8]| String::from_utf8_lossy(&h[..h.len().min(40)]).into_owned();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let chunk = &body[sent..body.len().min(sent + (64 << 10))];
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => return Err(format!("closed after {:?} (read {:?})", t.elapsed(), seen(&head))),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("{e} after {:?} (read {:?})", t.elapsed(), seen(&head))),
            },
            // The body in chunks, then a flush (TLS may still hold its
            // end). The proxy may answer and stop reading before it is all
            // sent: a failed write is expected then and ends the writing.
            sending = async {
                match chunk.is_empty() {
                    true => wr.flush().await.map(|()| 0),
                    false => wr.write(chunk).await,
                }
            }, if !done => match sending {
                Ok(n) if n > 0 => sent += n,
                _ => done = true,
            },
            _ = &mut deadline => return Err(format!("no answer within 30 s (read {:?})", seen(&head))),
        }
    }
    let elapsed = t.elapsed();
    match head.starts_with(b"HTTP/1.1 403") {
        true => Ok(elapsed),
        false => Err(format!("answered {:?}", seen(&head))),
    }
}

/// One client's small requests while another connection pushes the
/// largest event over and over: does moving (and inspecting) it stall
/// the rest?
async fn during_pushes_rows(t: &mut Table, routes: &[Route], size: usize, received: &Log) {
    let body = event(size, Blocked::Nowhere);
    let mb = body.len() as f64 / 1e6;
    t.rate_header(&format!("1 client during {mb:.0} MB pushes"));
    let mut lat = Vec::new();
    for r in routes {
        lat.push(small_during_pushes(r, &body, received).await);
    }
    let p50: fn(&Latency) -> f64 = |l| l.p50_us;
    for (what, f) in [("p50 µs", p50), ("p99 µs", |l| l.p99_us)] {
        let values: Vec<_> = lat.iter().map(|l| Some(f(l))).collect();
        t.rate_row(
            &format!("during {mb:.0} MB pushes: {what}"),
            &format!("1 client during {mb:.0} MB pushes {what}"),
            &values,
        );
    }
}

/// Small requests on one connection while another pushes `body`
/// repeatedly (at most 3 s or 20 pushes).
async fn small_during_pushes(r: &Route, body: &[u8], received: &Log) -> Latency {
    let stop = Arc::new(AtomicBool::new(false));
    let mut pusher = (r.connect)().await;
    let (stop2, body, received) = (stop.clone(), body.to_vec(), received.clone());
    let pushes = tokio::spawn(async move {
        for _ in 0..20 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            timed_push(&mut pusher, &body).await;
            // The server keeps what it received: not 20 big bodies at once.
            received.lock().unwrap().clear();
        }
    });
    let lat = Latency::of(small_requests(r, 1, 100_000, Duration::from_secs(3)).await);
    stop.store(true, Ordering::Relaxed);
    pushes.await.unwrap();
    lat
}
