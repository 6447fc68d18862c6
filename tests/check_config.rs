//! `check-config` catches what `run` would hit, through the binary: missing
//! files, a key that does not belong to its certificate, TLS listeners with
//! no certificate source, CA key permissions (the package's 0640 with the
//! service group passes, world-readable warns), `--strict`, and (as root)
//! access judged for another user.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::{gateway_ca, instance_json, TempDir};

fn config(dir: &Path, gateway: Value) -> std::path::PathBuf {
    let cfg = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c2"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", 8443, "c2"),
        },
        "gateway": gateway,
    });
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// The usual gateway section: an explicit listener, the CA in `ca/`, the
/// same CA trusted upstream (so no trust warnings).
fn gateway(extra_tls: Value) -> Value {
    let mut tls = json!({"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                         "upstream_ca": "ca/ca.crt", "use_system_roots": false});
    if let (Some(t), Some(e)) = (tls.as_object_mut(), extra_tls.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                t.remove(k);
            } else {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    json!({"listeners": [{"mode": "explicit", "listen": "127.0.0.1:3128"}], "tls": tls})
}

/// Exit code, stdout, stderr.
fn check(cfg: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .arg("check-config")
        .arg("--config")
        .arg(cfg)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// As root the default reader is the misp-guard-gw user if it exists; the
/// tests below want this process's own access unless they say otherwise.
fn as_me() -> Vec<&'static str> {
    if is_root() {
        vec!["--user", "root"]
    } else {
        vec![]
    }
}

#[test]
fn valid_config_passes_with_the_package_permissions() {
    let dir = TempDir::new("check-ok");
    gateway_ca(&dir.0.join("ca"));
    let key = dir.0.join("ca/ca.key");
    // What the package sets: 0640, group = the service's group (here: the
    // group this process runs with).
    let gid = nix::unistd::getegid().as_raw();
    std::os::unix::fs::chown(&key, None, Some(gid)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().gid(), gid);
    let cfg = config(&dir.0, gateway(json!({})));
    let (code, out, err) = check(&cfg, &[&as_me()[..], &["--strict"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": OK"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn missing_files_are_errors_naming_file_and_json_path() {
    let dir = TempDir::new("check-missing");
    let cfg = config(&dir.0, gateway(json!({})));
    let (code, _, err) = check(&cfg, &as_me());
    assert_eq!(code, 1, "{err}");
    let ca_cert = dir.0.join("ca/ca.crt");
    assert!(
        err.contains(&format!(
            "error: {}: gateway.tls.ca_cert: {}: does not exist",
            cfg.display(),
            ca_cert.display()
        )),
        "{err}"
    );
    assert!(err.contains("gateway.tls.ca_key: "), "{err}");
    assert!(err.contains("gateway.tls.upstream_ca: "), "{err}");
}

#[test]
fn key_of_another_certificate_is_an_error() {
    let dir = TempDir::new("check-mismatch");
    gateway_ca(&dir.0.join("ca"));
    gateway_ca(&dir.0.join("other"));
    let cfg = config(&dir.0, gateway(json!({"ca_key": "other/ca.key"})));
    let (code, _, err) = check(&cfg, &as_me());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gateway.tls.ca_key: "), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // The same for an instance's own certificate (a CA pair stands in for
    // a server certificate and key).
    let mut g = gateway(json!({}));
    g["instances"] = json!({"b": {"cert": "ca/ca.crt", "key": "other/ca.key"}});
    let cfg = config(&dir.0, g);
    let (code, _, err) = check(&cfg, &as_me());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gateway.instances.b.key: "), "{err}");
}

#[test]
fn tls_listeners_without_certificate_source_are_an_error() {
    let dir = TempDir::new("check-nocert");
    gateway_ca(&dir.0.join("ca"));
    let cfg = config(&dir.0, gateway(json!({"ca_cert": null, "ca_key": null})));
    let (code, _, err) = check(&cfg, &as_me());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gateway.tls: no certificate source"), "{err}");
}

#[test]
fn world_readable_ca_key_warns_and_strict_fails() {
    let dir = TempDir::new("check-mode");
    gateway_ca(&dir.0.join("ca"));
    let key = dir.0.join("ca/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config(&dir.0, gateway(json!({})));
    let (code, out, err) = check(&cfg, &as_me());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning: gateway.tls.ca_key: ") && out.contains("lets everyone read the key"),
        "{out}"
    );
    let (code, _, err) = check(&cfg, &[&as_me()[..], &["--strict"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--strict makes it an error"), "{err}");
}

/// As root: readability is judged for the service's user from the
/// permission bits, so a key only root can read is an error for `nobody`.
#[test]
fn root_checks_access_for_the_named_user() {
    if !is_root() {
        eprintln!("SKIP root_checks_access_for_the_named_user: not root");
        return;
    }
    let dir = TempDir::new("check-user");
    gateway_ca(&dir.0.join("ca"));
    // The temp dir and ca/ must be searchable by others for the key's own
    // mode to be what decides.
    for d in [&dir.0, &dir.0.join("ca")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cfg = config(&dir.0, gateway(json!({})));
    let (code, _, err) = check(&cfg, &["--user", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gateway.tls.ca_key: ") && err.contains("not readable by user nobody"),
        "{err}"
    );
    let (code, _, err) = check(&cfg, &["--user", "no-such-user-mgw"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--user no-such-user-mgw: no such user"),
        "{err}"
    );
}
