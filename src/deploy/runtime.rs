//! The running gateway keeps its own nftables tables loaded (`run
//! --nftables MODE`): it loads the guard and capture tables rendered from
//! the policy it runs at start and on reload (before the new policy is
//! committed, so a ruleset nftables refuses fails the reload and the old
//! rules and policy stay), then checks every second that the kernel still
//! holds exactly what it loaded. A firewall reload (`flush ruleset` at the
//! top of Debian's /etc/nftables.conf), a hand edit or a stray `nft delete`
//! is logged as an error and undone by loading the same ruleset again.
//!
//! It execs `nft` (found on PATH; /usr/sbin under systemd): `nft -f -` to
//! load, `nft -s list table inet NAME` to compare (stateless: counters
//! differ between listings). Under the unit that needs only the ambient
//! CAP_NET_ADMIN, which `nft` inherits (it is not set-uid, so
//! NoNewPrivileges does not matter), and netlink, which
//! RestrictAddressFamilies allows.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::nftables::{self, CAPTURE_TABLE, GUARD_TABLE};
use crate::policy::{ListenMode, Policy};

/// How often the kernel's tables are compared with what was loaded.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What was loaded last, and how the kernel listed it right after.
struct Loaded {
    ruleset: String,
    listing: String,
}

/// Owner of the gateway's tables while it runs.
pub struct RulesKeeper {
    mode: ListenMode,
    program: String,
    loaded: Mutex<Option<Loaded>>,
    restorations: AtomicU64,
}

impl std::fmt::Debug for RulesKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesKeeper")
            .field("mode", &self.mode)
            .field("restorations", &self.restorations())
            .finish()
    }
}

impl RulesKeeper {
    pub fn new(mode: ListenMode) -> RulesKeeper {
        RulesKeeper::with_program(mode, "nft")
    }

    /// `program` replaces `nft` (tests use a fake one).
    pub fn with_program(mode: ListenMode, program: &str) -> RulesKeeper {
        RulesKeeper {
            mode,
            program: program.to_string(),
            loaded: Mutex::new(None),
            restorations: AtomicU64::new(0),
        }
    }

    /// Renders `policy`'s tables and loads them (one transaction: the old
    /// tables stay if nftables refuses the new ones). Call before the
    /// policy is committed; an error means it must not be.
    pub fn apply(&self, policy: &Policy) -> Result<(), String> {
        let ruleset = nftables::render(policy, self.mode, "the running policy")?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        self.load(&ruleset)?;
        let listing = self.listing()?;
        *loaded = Some(Loaded { ruleset, listing });
        Ok(())
    }

    /// Compares the kernel's tables with what was loaded; on any
    /// difference logs an error and loads the same ruleset again.
    /// Returns whether it restored.
    pub fn check(&self) -> Result<bool, String> {
        let mut guard = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let Some(loaded) = guard.as_mut() else {
            return Ok(false);
        };
        let reason = match self.listing() {
            Ok(now) if now == loaded.listing => return Ok(false),
            Ok(_) => "changed".to_string(),
            Err(e) => format!("missing: {e}"),
        };
        let n = self.restorations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            "nftables tables {GUARD_TABLE}/{CAPTURE_TABLE} {reason}; restoring them from the running policy (restoration {n})"
        );
        self.load(&loaded.ruleset)?;
        loaded.listing = self.listing()?;
        Ok(true)
    }

    /// Are the loaded tables in the kernel, unchanged? (`/readyz`; does not
    /// restore them — [`RulesKeeper::check`] does, within a second.)
    pub fn verify(&self) -> Result<(), String> {
        let guard = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let Some(loaded) = guard.as_ref() else {
            return Err("nftables tables not loaded yet".into());
        };
        match self.listing() {
            Ok(now) if now == loaded.listing => Ok(()),
            Ok(_) => Err(format!(
                "nftables tables {GUARD_TABLE}/{CAPTURE_TABLE} changed"
            )),
            Err(e) => Err(format!("nftables tables missing: {e}")),
        }
    }

    /// How many times the tables had to be restored since start.
    pub fn restorations(&self) -> u64 {
        self.restorations.load(Ordering::Relaxed)
    }

    fn load(&self, ruleset: &str) -> Result<(), String> {
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .map_err(|e| format!("{} -f -: {e}", self.program))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{} -f -: {e}", self.program))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nftables refused the rules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Both tables as the kernel lists them, without counters.
    fn listing(&self) -> Result<String, String> {
        let mut all = String::new();
        for table in [GUARD_TABLE, CAPTURE_TABLE] {
            let out = Command::new(&self.program)
                .args(["-s", "list", "table", "inet", table])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", self.program))?;
            if !out.status.success() {
                return Err(format!("table inet {table} is not loaded"));
            }
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(all)
    }
}

/// Checks every [`CHECK_EVERY`] until `stop` turns true.
pub async fn watch(keeper: Arc<RulesKeeper>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => return,
        }
        let k = keeper.clone();
        match tokio::task::spawn_blocking(move || k.check()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("cannot restore the nftables tables: {e}"),
            Err(e) => tracing::error!("nftables check failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fake `nft` keeping one "kernel" in a file: `-f -` stores stdin
    /// there (or refuses a ruleset naming instance `refuse_me`), `list`
    /// fails when it is empty and otherwise prints how often the table
    /// appears (so any edit of the file changes the listing or not, as
    /// the check must see it).
    fn fake_nft(dir: &Path) -> String {
        let state = dir.join("kernel");
        let script = format!(
            "#!/bin/sh\nset -e\nif [ \"$1\" = -f ]; then in=$(cat); case \"$in\" in *refuse_me*) echo refused >&2; exit 1;; esac; printf '%s' \"$in\" > {k}; exit 0; fi\n[ -s {k} ] || exit 1\ngrep -c \"table inet $5 \" {k}\n",
            k = state.display()
        );
        let path = dir.join("nft");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn policy(port: u16) -> Policy {
        policy_named("one", port)
    }

    fn policy_named(id: &str, port: u16) -> Policy {
        let cfg = format!(
            r#"{{"allowlist": {{}}, "compartments_rules": {{"can_reach": {{"a": ["a"]}}}},
            "instances": {{"{id}": {{"ip": "192.0.2.1", "host": "one.example", "port": {port}, "compartment_id": "a",
                "affiliation": "", "taxonomies_rules": {{}}, "blocked_distribution_levels": [],
                "blocked_sharing_groups_uuids": [], "blocked_attribute_types": [],
                "blocked_attribute_categories": [], "blocked_object_types": []}}}},
            "gateway": {{"listeners": [{{"mode": "redirect", "listen": "[::]:15001"}}]}}}}"#
        );
        crate::config::from_slice(cfg.as_bytes(), Path::new("t.json")).unwrap()
    }

    #[test]
    fn restores_what_disappeared_and_counts_it() {
        let dir = std::env::temp_dir().join(format!("mgw-keeper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keeper = RulesKeeper::with_program(ListenMode::Redirect, &fake_nft(&dir));
        assert!(!keeper.check().unwrap(), "nothing loaded yet");
        keeper.apply(&policy(443)).unwrap();
        let kernel = dir.join("kernel");
        let loaded = std::fs::read_to_string(&kernel).unwrap();
        assert!(loaded.contains("192.0.2.1 . 443"), "{loaded}");
        assert!(!keeper.check().unwrap(), "unchanged");
        // `flush ruleset`.
        std::fs::write(&kernel, "").unwrap();
        assert!(keeper.check().unwrap());
        assert_eq!(std::fs::read_to_string(&kernel).unwrap(), loaded);
        assert_eq!(keeper.restorations(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn readiness_sees_missing_tables_without_restoring_them() {
        let dir = std::env::temp_dir().join(format!("mgw-keeper-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keeper = RulesKeeper::with_program(ListenMode::Redirect, &fake_nft(&dir));
        assert!(keeper.verify().unwrap_err().contains("not loaded yet"));
        keeper.apply(&policy(443)).unwrap();
        assert_eq!(keeper.verify(), Ok(()));
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, "").unwrap();
        let why = keeper.verify().unwrap_err();
        assert!(why.contains("missing"), "{why}");
        assert_eq!(
            std::fs::read_to_string(&kernel).unwrap(),
            "",
            "verify restores nothing"
        );
        assert!(keeper.check().unwrap());
        assert_eq!(keeper.verify(), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_ruleset_keeps_the_old_one() {
        let dir = std::env::temp_dir().join(format!("mgw-keeper-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nft = fake_nft(&dir);
        let keeper = RulesKeeper::with_program(ListenMode::Redirect, &nft);
        keeper.apply(&policy(443)).unwrap();
        // Refused by nft, not renderable, or no nft at all: an error each
        // time, and the kernel keeps the old tables.
        let e = keeper.apply(&policy_named("refuse_me", 8443)).unwrap_err();
        assert!(e.contains("nftables refused the rules: refused"), "{e}");
        let bad = RulesKeeper::with_program(ListenMode::Redirect, &format!("{nft}-missing"));
        let e = bad.apply(&policy(8443)).unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
        let e = keeper.apply(&policy_with_tproxy_only()).unwrap_err();
        assert!(e.contains("no redirect listener"), "{e}");
        let kernel = std::fs::read_to_string(dir.join("kernel")).unwrap();
        assert!(kernel.contains("192.0.2.1 . 443"), "{kernel}");
        assert!(!keeper.check().unwrap(), "still what it loaded");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn policy_with_tproxy_only() -> Policy {
        let mut p = policy(8443);
        p.gateway.listeners[0].mode = ListenMode::Tproxy;
        p
    }
}
