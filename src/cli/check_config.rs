//! `misp-guard-gw check-config --config FILE [--strict] [--user NAME]`:
//! validate, check what `run` would hit (see [`super::preflight`]) and
//! summarise.

use std::path::Path;
use std::process::ExitCode;

use super::preflight::{self, Finding, Identity, Reader, Severity, SERVICE_USER};
use crate::config;
use crate::policy::{CompartmentId, Policy};

pub fn run(path: &Path, strict: bool, user: Option<&str>) -> ExitCode {
    let policy = match config::load(path) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut findings = Vec::new();
    let reader = match choose_reader(user) {
        Ok((reader, note)) => {
            findings.extend(note);
            reader
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    findings.extend(preflight::check(&policy, &reader));
    let failing = |f: &Finding| f.severity == Severity::Error || strict;
    let mut failed = false;
    for f in findings.iter().filter(|f| failing(f)) {
        let strict_note = if f.severity == Severity::Warning {
            " (a warning; --strict makes it an error)"
        } else {
            ""
        };
        eprintln!(
            "error: {}: {}: {}{strict_note}",
            path.display(),
            f.at,
            f.message
        );
        failed = true;
    }
    if strict {
        for w in &policy.warnings {
            eprintln!(
                "error: {}: {w} (a warning; --strict makes it an error)",
                path.display()
            );
            failed = true;
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    print!("{}", summary(path, &policy));
    println!("files: readable by {}", reader.describe());
    for f in &findings {
        println!("warning: {}: {}", f.at, f.message);
    }
    ExitCode::SUCCESS
}

/// Whose access to check: `--user NAME`, else (as root) the service user
/// when it exists, else this process. Without root another user's access
/// cannot be judged; that is said as a warning.
fn choose_reader(user: Option<&str>) -> Result<(Reader, Option<Finding>), String> {
    let root = nix::unistd::geteuid().is_root();
    let lookup = |name: &str| Identity::lookup(name).map_err(|e| format!("--user {name}: {e}"));
    match (root, user) {
        (true, Some(name)) => lookup(name)?
            .map(|id| (Reader::User(id), None))
            .ok_or_else(|| format!("--user {name}: no such user")),
        (true, None) => Ok(match lookup(SERVICE_USER)? {
            Some(id) => (Reader::User(id), None),
            None => (Reader::Process, None),
        }),
        (false, Some(name)) => {
            let me = Reader::Process.describe();
            let note = (!me.starts_with(&format!("user {name} "))).then(|| Finding {
                severity: Severity::Warning,
                at: "(files)".into(),
                message: format!(
                    "cannot judge access as user {name} without root; checked as {me}"
                ),
            });
            Ok((Reader::Process, note))
        }
        (false, None) => Ok((Reader::Process, None)),
    }
}

/// A short human summary: instances, compartments, who can reach whom.
pub fn summary(path: &Path, policy: &Policy) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", path.display());
    let _ = writeln!(out, "instances ({}):", policy.instances.len());
    for inst in &policy.instances {
        let _ = writeln!(
            out,
            "  {:<20} {:<40} ip {:<39} compartment {}",
            inst.id,
            format!("{}:{}", inst.host, inst.port),
            inst.ip,
            policy.compartments[inst.compartment.0 as usize]
        );
    }
    let _ = writeln!(out, "mode (gateway.mode): {}", policy.gateway.mode.as_str());
    for (i, inst) in policy.instances.iter().enumerate() {
        let mode = match policy.gateway.mode_of(i) {
            crate::policy::Mode::Enforce => "enforce",
            crate::policy::Mode::Monitor => {
                "MONITOR (content blocks logged as would_block, forwarded)"
            }
        };
        let _ = writeln!(out, "  {:<20} {mode}", inst.id);
    }
    let _ = writeln!(out, "compartments ({}):", policy.compartments.len());
    for (i, name) in policy.compartments.iter().enumerate() {
        let src = CompartmentId(i as u16);
        let reach: Vec<&str> = policy
            .compartments
            .iter()
            .enumerate()
            .filter(|(j, _)| policy.can_reach(src, CompartmentId(*j as u16)))
            .map(|(_, n)| n.as_str())
            .collect();
        let reach = if reach.is_empty() {
            "(nothing)".to_string()
        } else {
            reach.join(", ")
        };
        let _ = writeln!(out, "  {name} can reach: {reach}");
    }
    let _ = writeln!(out, "who can reach whom:");
    for src in &policy.instances {
        let dsts: Vec<&str> = policy
            .instances
            .iter()
            .filter(|d| policy.can_reach(src.compartment, d.compartment))
            .map(|d| d.id.as_str())
            .collect();
        let dsts = if dsts.is_empty() {
            "(nobody)".to_string()
        } else {
            dsts.join(", ")
        };
        let _ = writeln!(out, "  {} -> {dsts}", src.id);
    }
    let _ = writeln!(
        out,
        "allowlist: {} url(s), {} domain(s)",
        policy.allow_urls_len(),
        policy.allow_domains_len()
    );
    let l = &policy.limits;
    let _ = writeln!(
        out,
        "limits: body {} B, decoded body {} B, decompression ratio {}:1 above {} B",
        l.max_body_bytes,
        l.max_decoded_body_bytes,
        l.max_decompression_ratio,
        l.decompression_ratio_floor_bytes
    );
    for w in &policy.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
