//! `misp-guard-gw check-config --config FILE`: validate and summarise.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::policy::{CompartmentId, Policy};

pub fn run(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(policy) => {
            print!("{}", summary(path, &policy));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
