//! Issue 11's targets, checked against the rows of one transparent run
//! (gateway against nginx on the same topology and upstream). Printed for
//! the reader; a benchmark on a shared machine is no pass/fail test.

use serde_json::Value;

fn row<'a>(rows: &'a [Value], key: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["row"] == key)
}

fn num(r: Option<&Value>, field: &str) -> Option<f64> {
    r?.get(field)?.as_f64()
}

/// The last row whose key matches `pred` (the largest size measured).
fn last(rows: &[Value], pred: impl Fn(&str) -> bool) -> Option<&Value> {
    rows.iter()
        .rev()
        .find(|r| r["row"].as_str().is_some_and(&pred))
}

/// One line per target: met, missed, or not measured in this run.
pub fn print(rows: &[Value]) {
    println!("issue 11 targets (this run)");
    let line = |what: &str, seen: String, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("  {verdict:<12} {what}: {seen}");
    };
    let push = last(rows, |k| k.starts_with("push ") && k.ends_with(" MB"));
    let (g, n) = (num(push, "added_ms"), num(push, "nginx_added_ms"));
    line(
        &format!("{} added time <= nginx's", key(push, "largest push")),
        format!("gateway +{} ms, nginx +{} ms", show(g), show(n)),
        g.zip(n).map(|(g, n)| g <= n),
    );
    let first = last(rows, |k| k.ends_with("blocked at first attribute"));
    let g = num(first, "gateway_ms");
    line(
        &format!(
            "{}: 403 within 50 ms of the head",
            key(first, "largest push blocked at first attribute")
        ),
        format!("{} ms", show(g)),
        g.map(|g| g <= 50.0),
    );
    for clients in [8, 64] {
        for (what, higher_is_better) in [("req/s", true), ("p99 µs", false)] {
            let k = format!("{clients} clients {what}");
            let r = row(rows, &k);
            let (g, n) = (num(r, "gateway"), num(r, "nginx"));
            line(
                &format!("{k} {} nginx's", if higher_is_better { ">=" } else { "<=" }),
                format!("gateway {}, nginx {}", show(g), show(n)),
                g.zip(n)
                    .map(|(g, n)| if higher_is_better { g >= n } else { g <= n }),
            );
        }
    }
    let r = row(rows, "8 clients new connection req/s");
    let (g, n) = (num(r, "gateway"), num(r, "nginx"));
    line(
        "new connection per request req/s >= nginx's",
        format!("gateway {}, nginx {}", show(g), show(n)),
        g.zip(n).map(|(g, n)| g >= n),
    );
    // The row key carries the body's size in MB ("push 52.4 MB").
    let mb = key(push, "largest push")
        .split_whitespace()
        .nth(1)
        .and_then(|m| m.parse::<f64>().ok());
    let rss = num(push, "gateway_peak_rss_mb");
    line(
        &format!(
            "{} gateway peak RSS <= 2 x body + 30 MB",
            key(push, "largest push")
        ),
        format!("{} MB", show(rss)),
        rss.zip(mb).map(|(rss, mb)| rss <= 2.0 * mb + 30.0),
    );
}

/// The row's key, or what it would be about when the run has no such row.
fn key<'a>(r: Option<&'a Value>, missing: &'a str) -> &'a str {
    r.and_then(|r| r["row"].as_str()).unwrap_or(missing)
}

fn show(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}
