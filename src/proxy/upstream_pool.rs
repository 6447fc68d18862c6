//! Idle upstream connections shared by every client connection, so a MISP
//! that opens a new connection per request (its sync client does) does not
//! cost the gateway a TCP and TLS handshake towards the server each time.
//!
//! A connection is only interchangeable with another of the same
//! [`PoolKey`]: same snapshot (policy and TLS material — a reload that
//! changes verification, an address or a listener never hands out a
//! connection made under the old one), same instance, same address, same
//! TLS server name (or plain). What may be pooled at all is decided by the
//! caller (`exchange::upstream`): instance destinations only, never a
//! connection carrying the client's own address (`transparent_source`).
//!
//! Bounded: at most [`MAX_IDLE_PER_KEY`] per key and [`MAX_IDLE_TOTAL`] in
//! all (the oldest goes first), and an entry idle for longer than the
//! caller's `idle` is dropped, never handed out. The pool knows no clock
//! (callers pass `now`), so its rules are unit-tested without sleeping; the
//! liveness check of a connection taken out is the caller's
//! ([`still_open`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use crate::policy::InstanceId;

/// Idle connections kept per key: more than a burst of parallel syncs to
/// one instance needs, few enough that a server's own limits are not hit.
pub const MAX_IDLE_PER_KEY: usize = 16;
/// Idle connections kept in all (each holds a socket and TLS state).
pub const MAX_IDLE_TOTAL: usize = 128;

/// What makes two upstream connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The snapshot the connection was made under (`TlsState::generation`).
    pub generation: u64,
    pub instance: InstanceId,
    pub addr: SocketAddr,
    /// The TLS server name the connection verified, None for plain TCP.
    pub tls_name: Option<String>,
}

struct Entry<C> {
    key: PoolKey,
    conn: C,
    /// When the connection finished its last exchange.
    idle_since: Instant,
}

struct Inner<C> {
    /// Only keys of this generation are kept (see [`UpstreamPool::clear`]).
    generation: u64,
    /// Oldest first.
    entries: Vec<Entry<C>>,
}

/// The shared pool. `C` is the connection (`BoxIo` in the gateway).
pub struct UpstreamPool<C> {
    inner: Mutex<Inner<C>>,
}

impl<C> UpstreamPool<C> {
    /// An empty pool accepting connections of `generation`.
    pub fn new(generation: u64) -> Self {
        UpstreamPool {
            inner: Mutex::new(Inner {
                generation,
                entries: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C>> {
        // A panic elsewhere while holding the lock leaves a valid Vec.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `conn` idle under `key`. Returns what must be closed (the
    /// connection itself when its snapshot is gone or `idle` is zero, else
    /// entries evicted to stay within bounds or expired), so sockets are
    /// closed outside the lock.
    pub fn put(
        &self,
        key: PoolKey,
        conn: C,
        idle_since: Instant,
        now: Instant,
        idle: Duration,
    ) -> Vec<C> {
        let mut inner = self.lock();
        let mut out = expire(&mut inner.entries, now, idle);
        if key.generation != inner.generation || expired(idle_since, now, idle) {
            out.push(conn);
            return out;
        }
        let same_key = inner.entries.iter().filter(|e| e.key == key).count();
        if same_key >= MAX_IDLE_PER_KEY {
            // The oldest of this key: the least likely to still be open.
            if let Some(i) = inner.entries.iter().position(|e| e.key == key) {
                out.push(inner.entries.remove(i).conn);
            }
        } else if inner.entries.len() >= MAX_IDLE_TOTAL {
            out.push(inner.entries.remove(0).conn);
        }
        // Kept in order of idle_since, so "oldest first" holds for
        // connections given back late (a client that idled first).
        let at = inner
            .entries
            .iter()
            .position(|e| e.idle_since > idle_since)
            .unwrap_or(inner.entries.len());
        inner.entries.insert(
            at,
            Entry {
                key,
                conn,
                idle_since,
            },
        );
        out
    }

    /// The most recently used idle connection of `key` (the likeliest to be
    /// open), or None. Expired entries are dropped on the way (the second
    /// value: to be closed by the caller outside the lock).
    pub fn take(&self, key: &PoolKey, now: Instant, idle: Duration) -> (Option<C>, Vec<C>) {
        let mut inner = self.lock();
        let closed = expire(&mut inner.entries, now, idle);
        let found = inner
            .entries
            .iter()
            .rposition(|e| &e.key == key)
            .map(|i| inner.entries.remove(i).conn);
        (found, closed)
    }

    /// A reload committed `generation`: every idle connection of an older
    /// snapshot is returned to be closed, and none is accepted again. Cannot
    /// fail (the reload's commit calls it).
    pub fn clear(&self, generation: u64) -> Vec<C> {
        let mut inner = self.lock();
        inner.generation = generation;
        inner.entries.drain(..).map(|e| e.conn).collect()
    }

    /// Drops the entries idle for `idle` or longer (a periodic sweep, so a
    /// quiet gateway does not hold sockets the server has long closed);
    /// returns them to be closed outside the lock.
    pub fn expire(&self, now: Instant, idle: Duration) -> Vec<C> {
        expire(&mut self.lock().entries, now, idle)
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.lock().entries.len()
    }
}

fn expired(idle_since: Instant, now: Instant, idle: Duration) -> bool {
    now.saturating_duration_since(idle_since) >= idle
}

/// Removes the entries idle for `idle` or longer.
fn expire<C>(entries: &mut Vec<Entry<C>>, now: Instant, idle: Duration) -> Vec<C> {
    // Oldest first: the expired ones are a prefix.
    let n = entries
        .iter()
        .take_while(|e| expired(e.idle_since, now, idle))
        .count();
    entries.drain(..n).map(|e| e.conn).collect()
}

/// Is an idle connection still usable? One read that must not wait: still
/// waiting for data (nothing arrived) means open; end of stream (the
/// server closed it, or its TLS close_notify), an error (reset) or any byte
/// (an idle HTTP/1.1 server has nothing to say; whatever it is would be
/// taken for the next answer) means discard. TLS records that carry no data
/// (a TLS 1.3 session ticket) are consumed by the TLS layer and count as
/// nothing.
pub fn still_open<S: AsyncRead + Unpin + ?Sized>(io: &mut S) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    // A waker that is never woken: this poll is only a question; the next
    // real read registers its own.
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(io).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(4);

    fn key(generation: u64, instance: u16, tls: Option<&str>) -> PoolKey {
        PoolKey {
            generation,
            instance: InstanceId(instance),
            addr: "192.0.2.1:443".parse().unwrap(),
            tls_name: tls.map(str::to_string),
        }
    }

    #[test]
    fn a_connection_comes_back_only_under_its_own_key() {
        let pool = UpstreamPool::new(1);
        let t = Instant::now();
        assert!(pool.put(key(1, 0, Some("a")), 7, t, t, IDLE).is_empty());
        // Other instance, plain instead of TLS, other name, other address.
        for other in [
            key(1, 1, Some("a")),
            key(1, 0, None),
            key(1, 0, Some("b")),
            PoolKey {
                addr: "192.0.2.1:8443".parse().unwrap(),
                ..key(1, 0, Some("a"))
            },
        ] {
            assert_eq!(pool.take(&other, t, IDLE).0, None, "{other:?}");
        }
        assert_eq!(pool.take(&key(1, 0, Some("a")), t, IDLE).0, Some(7));
        // Taken means gone.
        assert_eq!(pool.take(&key(1, 0, Some("a")), t, IDLE).0, None);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_most_recently_used_is_taken_first() {
        let pool = UpstreamPool::new(1);
        let t = Instant::now();
        let k = key(1, 0, None);
        pool.put(k.clone(), 1, t, t, IDLE);
        pool.put(k.clone(), 2, t + Duration::from_secs(1), t, IDLE);
        // Given back late but idle since earlier than 2.
        pool.put(k.clone(), 3, t + Duration::from_millis(500), t, IDLE);
        let now = t + Duration::from_secs(1);
        assert_eq!(pool.take(&k, now, IDLE).0, Some(2));
        assert_eq!(pool.take(&k, now, IDLE).0, Some(3));
        assert_eq!(pool.take(&k, now, IDLE).0, Some(1));
    }

    #[test]
    fn idle_connections_expire() {
        let pool = UpstreamPool::new(1);
        let t = Instant::now();
        let k = key(1, 0, None);
        pool.put(k.clone(), 1, t, t, IDLE);
        pool.put(k.clone(), 2, t + Duration::from_secs(2), t, IDLE);
        // 1 has been idle for exactly IDLE: gone; 2 is still fresh.
        let (got, closed) = pool.take(&k, t + IDLE, IDLE);
        assert_eq!((got, closed), (Some(2), vec![1]));
        // Already idle too long when given back: refused at once.
        let late = t + Duration::from_secs(10);
        assert_eq!(pool.put(k.clone(), 3, t, late, IDLE), vec![3]);
        // Idle 0 turns pooling off.
        assert_eq!(pool.put(k.clone(), 4, t, t, Duration::ZERO), vec![4]);
        assert_eq!(pool.idle(), 0);
        // Expired entries of another key are dropped by any put or take.
        pool.put(key(1, 1, None), 5, t, t, IDLE);
        assert_eq!(pool.take(&k, t + IDLE, IDLE), (None, vec![5]));
        // ... and by the sweep, which keeps the fresh ones.
        pool.put(key(1, 1, None), 6, t, t, IDLE);
        pool.put(key(1, 1, None), 7, t + Duration::from_secs(2), t, IDLE);
        assert_eq!(pool.expire(t + IDLE, IDLE), vec![6]);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_reload_closes_every_idle_connection_and_refuses_old_ones() {
        let pool = UpstreamPool::new(1);
        let t = Instant::now();
        pool.put(key(1, 0, None), 1, t, t, IDLE);
        pool.put(key(1, 1, Some("a")), 2, t, t, IDLE);
        let mut closed = pool.clear(2);
        closed.sort();
        assert_eq!(closed, vec![1, 2]);
        assert_eq!(pool.idle(), 0);
        // A client connection still holding a generation-1 connection
        // gives it back after the reload: closed, not kept.
        assert_eq!(pool.put(key(1, 0, None), 3, t, t, IDLE), vec![3]);
        assert!(pool.put(key(2, 0, None), 4, t, t, IDLE).is_empty());
        assert_eq!(pool.take(&key(1, 0, None), t, IDLE).0, None);
        assert_eq!(pool.take(&key(2, 0, None), t, IDLE).0, Some(4));
    }

    #[test]
    fn bounded_per_key_and_in_all() {
        let pool = UpstreamPool::new(1);
        let t = Instant::now();
        let k = key(1, 0, None);
        for i in 0..MAX_IDLE_PER_KEY {
            assert!(pool.put(k.clone(), i, t, t, IDLE).is_empty());
        }
        // One more of the same key pushes out that key's oldest.
        assert_eq!(pool.put(k.clone(), 100, t, t, IDLE), vec![0]);
        assert_eq!(pool.idle(), MAX_IDLE_PER_KEY);
        // Fill the rest with other keys, up to the total.
        let mut n = 1000;
        let mut instance = 1;
        while pool.idle() < MAX_IDLE_TOTAL {
            for _ in 0..MAX_IDLE_PER_KEY {
                if pool.idle() < MAX_IDLE_TOTAL {
                    assert!(pool.put(key(1, instance, None), n, t, t, IDLE).is_empty());
                    n += 1;
                }
            }
            instance += 1;
        }
        // Over the total: the oldest of all goes (key 0's second entry).
        let newcomer = key(1, 999, None);
        assert_eq!(pool.put(newcomer.clone(), 5000, t, t, IDLE), vec![1]);
        assert_eq!(pool.idle(), MAX_IDLE_TOTAL);
        assert_eq!(pool.take(&newcomer, t, IDLE).0, Some(5000));
    }

    #[tokio::test]
    async fn liveness_sees_close_bytes_and_silence() {
        use tokio::io::AsyncWriteExt;
        // Silence: open.
        let (mut near, mut far) = tokio::io::duplex(64);
        assert!(still_open(&mut near));
        // A stray byte: not usable for the next answer.
        far.write_all(b"x").await.unwrap();
        assert!(!still_open(&mut near));
        // End of stream.
        let (mut near, far) = tokio::io::duplex(64);
        drop(far);
        assert!(!still_open(&mut near));
    }

    #[tokio::test]
    async fn liveness_over_tcp_sees_the_server_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut client = client.unwrap();
        let (server, _) = accepted.unwrap();
        assert!(still_open(&mut client));
        drop(server);
        // The FIN arrives asynchronously; a bounded wait for it.
        let mut open = true;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            // A readiness wait, so the noop-waker poll sees the FIN.
            let _ = tokio::time::timeout(Duration::from_millis(10), client.readable()).await;
            open = still_open(&mut client);
            if !open {
                break;
            }
        }
        assert!(!open);
    }
}
