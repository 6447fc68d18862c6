//! The printed tables and the JSON rows: one column per route (direct,
//! gateway, and nginx in the transparent run), `n/a` where a route has no
//! value (a direct connection has no proxy CPU; nginx refuses nothing).

use serde_json::{json, Map, Value};
use std::time::Duration;

pub struct Table {
    routes: Vec<&'static str>,
    pub rows: Vec<Value>,
}

const LABEL: usize = 40;

fn cell(v: Option<f64>, width: usize, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.decimals$}"),
        None => format!("{:>width$}", "n/a"),
    }
}

impl Table {
    pub fn new(routes: Vec<&'static str>) -> Table {
        Table {
            routes,
            rows: Vec::new(),
        }
    }

    fn index(&self, route: &str) -> Option<usize> {
        self.routes.iter().position(|r| *r == route)
    }

    /// The gateway's value over another route's, when both exist.
    fn gateway_over(&self, values: &[Option<f64>], other: &str) -> Option<f64> {
        let g = values[self.index("gateway")?]?;
        let o = values[self.index(other)?]?;
        Some(g / o)
    }

    fn has_nginx(&self) -> bool {
        self.index("nginx").is_some()
    }

    /// Header of a table of rates or latencies.
    pub fn rate_header(&self, title: &str) {
        let mut line = format!("{title:<LABEL$}");
        for r in &self.routes {
            line += &format!(" {r:>10}");
        }
        line += &format!(" {:>9}", "gw/direct");
        if self.has_nginx() {
            line += &format!(" {:>9}", "gw/nginx");
        }
        println!("{line}");
    }

    /// One rate, latency or CPU row: a value per route (in route order).
    pub fn rate_row(&mut self, shown: &str, key: &str, values: &[Option<f64>]) {
        let mut line = format!("{shown:<LABEL$}");
        let mut row = Map::new();
        row.insert("row".into(), json!(key));
        for (r, v) in self.routes.iter().zip(values) {
            line += &format!(" {}", cell(*v, 10, 0));
            row.insert((*r).into(), json!(v));
        }
        let vs_direct = self.gateway_over(values, "direct");
        line += &format!(" {}", cell(vs_direct, 9, 2));
        row.insert("ratio".into(), json!(vs_direct));
        if self.has_nginx() {
            let vs_nginx = self.gateway_over(values, "nginx");
            line += &format!(" {}", cell(vs_nginx, 9, 2));
            row.insert("gateway_vs_nginx".into(), json!(vs_nginx));
        }
        println!("{line}");
        self.rows.push(Value::Object(row));
    }

    /// Header of a table of transfers: time per route, time added over
    /// the direct connection, peak RSS of each proxy.
    pub fn transfer_header(&self, title: &str) {
        let mut line = format!("{title:<LABEL$}");
        for r in &self.routes {
            line += &format!(" {:>10}", format!("{r} ms"));
        }
        for r in self.proxies() {
            line += &format!(" {:>9}", format!("+{r} ms"));
        }
        for r in self.proxies() {
            line += &format!(" {:>9}", format!("{r} MB"));
        }
        println!("{line}");
        println!(
            "{:<LABEL$} (+X ms: time added over direct; X MB: peak RSS of the process(es))",
            ""
        );
    }

    fn proxies(&self) -> impl Iterator<Item = &&'static str> {
        self.routes.iter().filter(|r| **r != "direct")
    }

    /// One transfer row: time per route (None: not measured) and the peak
    /// RSS of each route's processes (None: none, or not measured).
    /// JSON: `<route>_ms`, `added_ms` (the gateway's, over direct),
    /// `<route>_added_ms` for other proxies, `<route>_peak_rss_mb`.
    pub fn transfer_row(
        &mut self,
        shown: &str,
        key: &str,
        times: &[Option<Duration>],
        rss_mb: &[Option<f64>],
    ) {
        let ms: Vec<Option<f64>> = times
            .iter()
            .map(|t| t.map(|t| t.as_secs_f64() * 1e3))
            .collect();
        let direct = self.index("direct").and_then(|i| ms[i]);
        let mut line = format!("{shown:<LABEL$}");
        let mut row = Map::new();
        row.insert("row".into(), json!(key));
        for (r, v) in self.routes.iter().zip(&ms) {
            line += &format!(" {}", cell(*v, 10, 1));
            row.insert(format!("{r}_ms"), json!(v));
        }
        let mut added_cells = String::new();
        let mut rss_cells = String::new();
        for (i, r) in self.routes.iter().enumerate() {
            if *r == "direct" {
                continue;
            }
            let added = ms[i].zip(direct).map(|(v, d)| v - d);
            added_cells += &format!(" {}", cell(added, 9, 1));
            let name = match *r {
                "gateway" => "added_ms".to_string(),
                other => format!("{other}_added_ms"),
            };
            row.insert(name, json!(added));
            rss_cells += &format!(" {}", cell(rss_mb[i], 9, 1));
            row.insert(format!("{r}_peak_rss_mb"), json!(rss_mb[i]));
        }
        println!("{line}{added_cells}{rss_cells}");
        self.rows.push(Value::Object(row));
    }
}
