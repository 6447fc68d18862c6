//! nginx 1.22 as a TLS-terminating, re-encrypting reverse proxy: the
//! yardstick of the transparent rows. It does the same transport work as
//! the gateway (TLS in, whole request body read before forwarding, TLS
//! out) and no inspection: request and response buffering on, a
//! keep-alive upstream pool with TLS session reuse, access log off.
//!
//! It runs from a temp directory of its own (conf, pid, logs, temp paths)
//! in the gateway's namespace, as root (its workers as nginx's default
//! user), in a process group of its own: stopped with SIGTERM, and if the
//! master is still there when dropped (a panic), the whole group is
//! killed at once — killing workers one by one lets the master start new
//! ones, which outlive it.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use misp_guard_gw::tls::{der_to_pem, mint_leaf, CertificateAuthority};

use crate::procfs::children;

pub const BINARY: &str = "/usr/sbin/nginx";

/// Where and how nginx proxies.
pub struct Setup<'a> {
    /// Its prefix directory (created by the caller, removed with it).
    pub dir: &'a Path,
    /// Port it accepts TLS on (all addresses of its namespace).
    pub port: u16,
    /// The upstream server, reached over TLS and verified.
    pub upstream: SocketAddr,
    /// The name clients ask for (SNI) and the upstream certificate carries.
    pub server_name: &'a str,
    /// CA that signs nginx's own certificate (the gateway's, which the
    /// clients already trust) and its key.
    pub ca_cert: &'a Path,
    pub ca_key: &'a Path,
    /// The upstream server's CA.
    pub upstream_ca: &'a Path,
    /// worker_processes.
    pub workers: usize,
}

/// The configuration file for `s`, certificate files at `cert`/`key`.
fn conf(s: &Setup, cert: &Path, key: &Path) -> String {
    let d = s.dir.display();
    format!(
        r#"worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream misp {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen {port} ssl;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # The rows send thousands of requests per connection (default 1000).
        keepalive_requests 1000000;
        client_max_body_size 0;
        location / {{
            proxy_pass https://misp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_ssl_session_reuse on;
            proxy_ssl_server_name on;
            proxy_ssl_name {name};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {upstream_ca};
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }}
    }}
}}
"#,
        workers = s.workers,
        upstream = s.upstream,
        port = s.port,
        name = s.server_name,
        cert = cert.display(),
        key = key.display(),
        upstream_ca = s.upstream_ca.display(),
    )
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Master first, then the workers.
    pub pids: Vec<u32>,
}

impl Nginx {
    /// Writes certificate and configuration into `s.dir` and starts nginx
    /// in network namespace `netns`; returns once all its workers exist.
    /// `ready` must return true once the port accepts connections (the
    /// caller probes from inside the namespace); both waits are bounded.
    pub fn start(netns: &str, s: &Setup, sni_ip: IpAddr, ready: impl Fn() -> bool) -> Nginx {
        let ca = CertificateAuthority::from_pem_files(s.ca_cert, s.ca_key).expect("gateway CA");
        let leaf = mint_leaf(&ca, s.server_name, &[sni_ip]).expect("nginx leaf");
        let (cert, key) = (s.dir.join("leaf.crt"), s.dir.join("leaf.key"));
        std::fs::write(&cert, der_to_pem("CERTIFICATE", &leaf.cert_der)).unwrap();
        std::fs::write(
            &key,
            der_to_pem("PRIVATE KEY", leaf.key_der.secret_pkcs8_der()),
        )
        .unwrap();
        let conf_path = s.dir.join("nginx.conf");
        std::fs::write(&conf_path, conf(s, &cert, &key)).unwrap();
        let stderr = std::fs::File::create(s.dir.join("stderr.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, BINARY, "-p"])
            .arg(s.dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn nginx");
        // `ip netns exec` execs nginx: the child is nginx's master.
        let mut n = Nginx {
            pids: vec![child.id()],
            child,
            dir: s.dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited ({st}): {}", n.logs());
            }
            let workers = children(n.child.id());
            if workers.len() == s.workers && ready() {
                n.pids.extend(workers);
                return n;
            }
            assert!(Instant::now() < deadline, "nginx not ready: {}", n.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// SIGTERM (nginx's fast shutdown); true if it exited within 10 s.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A master that exited (stop) took its workers with it.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Workers do not follow a killed master: kill the group it leads
        // (its id is the master's, which is not reaped yet).
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
