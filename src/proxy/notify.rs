//! systemd service notifications (`Type=notify`): READY=1 once the config
//! is loaded and every listener is bound, STATUS= lines, RELOADING=1 around
//! a SIGHUP reload, STOPPING=1 on shutdown, and WATCHDOG=1 keep-alives at
//! half of `WatchdogSec`. Without `NOTIFY_SOCKET` every call is a no-op, so
//! the same binary runs under systemd, in a shell or in tests.
//!
//! The protocol is a datagram of `KEY=value` lines to the socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); a few
//! lines of std code do it without a dependency.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a missing or unusable socket disables notices
    /// (logged when set but unusable).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let name = name.to_string_lossy().into_owned();
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&name)
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(sock), Ok(addr)) => Notifier {
                target: Some((sock, addr)),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("NOTIFY_SOCKET={name} unusable: {e}");
                Notifier { target: None }
            }
        }
    }

    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!("systemd notification failed: {e}");
            }
        }
    }

    /// The keep-alive period systemd asked for (`WATCHDOG_USEC`, for this
    /// process per `WATCHDOG_PID`), halved as sd_watchdog_enabled advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let path = std::env::temp_dir().join(format!("mgw-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        let _ = std::fs::remove_file(&path);
        Notifier { target: None }.send("READY=1");
    }
}
