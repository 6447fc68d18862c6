//! A plain-HTTP MISP-like upstream for load tests (threads, keep-alive):
//! it counts the request bodies it received whole and those cut short, so
//! a test can tell that no push was half-forwarded, and answers every
//! request with one stored event (what MISP answers to `events/add`, and a
//! valid `events/view` pull): a small one unless told otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const STORED_UUID: &str = "5c1f4a7e-3b2d-4e8f-9a61-0d7c2b9e4f13";

/// The event the upstream answers with.
pub fn stored_event() -> Vec<u8> {
    serde_json::json!({"Event": {"uuid": STORED_UUID, "info": "stored", "distribution": "1",
        "Tag": [{"name": "tlp:green"}], "Attribute": [], "Object": []}})
    .to_string()
    .into_bytes()
}

/// An event push of about `size` bytes: `tlp:green`, distribution 1, and
/// enough attributes to reach the size.
pub fn event_of_size(uuid: &str, size: usize) -> Vec<u8> {
    let attribute = |i: usize| {
        format!(
            r#"{{"uuid":"00000000-0000-4000-8000-{i:012}","type":"text","category":"Other","value":"{}","distribution":"1","to_ids":false}}"#,
            "v".repeat(200)
        )
    };
    let mut out = format!(
        r#"{{"Event":{{"uuid":"{uuid}","info":"load","distribution":"1","Tag":[{{"name":"tlp:green"}}],"Object":[],"Attribute":["#
    );
    let mut i = 0;
    while out.len() < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&attribute(i));
        i += 1;
    }
    out.push_str("]}}");
    out.into_bytes()
}

/// What the upstream has seen.
#[derive(Default, Debug)]
pub struct Counts {
    /// Request bodies received as long as their Content-Length said.
    pub complete: AtomicU64,
    /// Request bodies the connection ended in the middle of.
    pub partial: AtomicU64,
    /// Body bytes received in complete bodies.
    pub bytes: AtomicU64,
}

impl Counts {
    pub fn complete(&self) -> u64 {
        self.complete.load(Ordering::SeqCst)
    }
    pub fn partial(&self) -> u64 {
        self.partial.load(Ordering::SeqCst)
    }
}

/// Starts the upstream on `ip` (port chosen by the system).
pub fn counting_upstream(ip: &str) -> (SocketAddr, Arc<Counts>) {
    counting_upstream_slow(ip, Duration::ZERO)
}

/// The same, waiting `delay` after each request head before reading its
/// body (a busy server: the gateway holds the body meanwhile).
pub fn counting_upstream_slow(ip: &str, delay: Duration) -> (SocketAddr, Arc<Counts>) {
    counting_upstream_answering(ip, delay, stored_event())
}

/// The same, answering every request with `answer` (a JSON event).
pub fn counting_upstream_answering(
    ip: &str,
    delay: Duration,
    answer: Vec<u8>,
) -> (SocketAddr, Arc<Counts>) {
    let answer = Arc::new(answer);
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let (c, answer) = (c.clone(), answer.clone());
            std::thread::spawn(move || serve(s, &c, delay, &answer));
        }
    });
    (addr, counts)
}

/// Reads a head; its declared Content-Length (0 without one).
pub fn read_head(s: &mut TcpStream) -> Option<usize> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}

fn serve(mut s: TcpStream, counts: &Counts, delay: Duration, ev: &[u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    while let Some(len) = read_head(&mut s) {
        std::thread::sleep(delay);
        // Read in pieces: a body is counted only when all of it came.
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < len {
            match s.read(&mut buf[..(len - got).min(64 * 1024)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got < len {
            counts.partial.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if len > 0 {
            counts.complete.fetch_add(1, Ordering::SeqCst);
            counts.bytes.fetch_add(len as u64, Ordering::SeqCst);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            ev.len()
        );
        if s.write_all(head.as_bytes()).is_err() || s.write_all(ev).is_err() {
            return;
        }
    }
}

/// A plain-HTTP client talking to the gateway as an explicit proxy.
pub fn request_head(
    method: &str,
    host: &str,
    port: u16,
    path: &str,
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut h = format!(
        "{method} http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
    );
    if let Some(n) = body_len {
        h.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {n}\r\n"
        ));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Reads an answer: status, head text and body (by Content-Length).
pub fn read_response(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((status, head, body))
}
