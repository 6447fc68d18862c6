//! Command-line interface. The subcommands and their flags are a contract
//! with operators' tooling (see README "Command line"): extend, never break.

mod check_config;
pub mod evaluate;
pub mod preflight;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::policy::ListenMode;
use crate::proxy;

#[derive(Parser)]
#[command(
    name = "misp-guard-gw",
    version,
    about = "Transparent MISP sync filtering gateway (misp-guard policy)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and what `run` would need (files readable by
    /// the service user, certificate and key matching, a certificate source
    /// for TLS listeners), then summarise it (exit 1 on any error).
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Treat warnings as errors (exit 1).
        #[arg(long)]
        strict: bool,
        /// Check file access for this user (as root; default: the
        /// misp-guard-gw user when it exists).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Run the gateway (until SIGTERM/SIGINT; SIGHUP reloads the policy).
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Explicit HTTP proxy listener (CONNECT and absolute-form), repeatable.
        #[arg(long, value_name = "ADDR")]
        explicit: Vec<String>,
        /// Transparent listener for nftables redirect/dnat, repeatable.
        #[arg(long, value_name = "ADDR")]
        redirect: Vec<String>,
        /// Transparent listener for nftables tproxy, repeatable.
        #[arg(long, value_name = "ADDR")]
        tproxy: Vec<String>,
        /// Gateway CA certificate (PEM) that signs the leaves shown to clients.
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// Gateway CA private key (PEM, PKCS#8).
        #[arg(long, value_name = "FILE", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Extra CA (PEM) trusted for upstream servers.
        #[arg(long, value_name = "FILE")]
        upstream_ca: Option<PathBuf>,
        /// Do not verify upstream certificates (logged as a warning).
        #[arg(long)]
        insecure_upstream: bool,
        /// Keep this mode's guard and capture tables loaded: applied at
        /// start and on reload, restored when they disappear or change.
        #[arg(long, value_name = "MODE", value_parser = capture_mode)]
        nftables: Option<ListenMode>,
        /// Append one JSON line per decided exchange to FILE (replaces
        /// gateway.audit_log; reopened on SIGHUP).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
        /// Serve /healthz, /readyz and /metrics on ADDR (replaces
        /// gateway.metrics.listen; off by default).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Reload when the config file's content changes (the default,
        /// unless gateway.watch_config is false; checked every second; a
        /// broken file keeps the running policy).
        #[arg(long, conflicts_with = "no_watch_config")]
        watch_config: bool,
        /// Reload on SIGHUP only, never on a change of the config file.
        #[arg(long)]
        no_watch_config: bool,
        /// Level of the log line for each allowed exchange: off, error,
        /// warn, info, debug or trace (replaces gateway.log_allowed;
        /// default debug).
        #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
        log_allowed: Option<crate::policy::LogLevel>,
    },
    /// Print the nftables rules for the policy (guard and capture tables;
    /// sets rendered from the instances, listener port, capture interfaces).
    Nft {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "MODE", default_value = "redirect", value_parser = capture_mode)]
        mode: ListenMode,
        /// Only the guard table (the include file for /etc/nftables.conf).
        #[arg(long, conflicts_with = "mode")]
        guard_only: bool,
    },
    /// Write a new gateway CA certificate and key (mode 0600) into DIR.
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Decide flows offline: one JSON flow per line in, one verdict per line out.
    Evaluate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// JSON-lines flows file; standard input when absent.
        #[arg(value_name = "FLOWS.jsonl")]
        flows: Option<PathBuf>,
    },
}

/// `--nftables MODE` / `nft --mode MODE`: a mode the rules capture for.
fn capture_mode(s: &str) -> Result<ListenMode, String> {
    ListenMode::parse_capture(s).ok_or_else(|| format!("{s:?} is not redirect or tproxy"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig {
            config,
            strict,
            user,
        } => check_config::run(&config, strict, user.as_deref()),
        Command::Evaluate { config, flows } => evaluate::run(&config, flows.as_deref()),
        Command::Run {
            config,
            explicit,
            redirect,
            tproxy,
            ca_cert,
            ca_key,
            upstream_ca,
            insecure_upstream,
            nftables,
            audit_log,
            metrics,
            watch_config,
            no_watch_config,
            log_allowed,
        } => {
            let metrics = match metrics.map(|m| m.parse::<std::net::SocketAddr>()) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => {
                    eprintln!("error: --metrics: not ip:port");
                    return ExitCode::FAILURE;
                }
            };
            let mut listeners = Vec::new();
            for (mode, addrs) in [
                (ListenMode::Explicit, explicit),
                (ListenMode::Redirect, redirect),
                (ListenMode::Tproxy, tproxy),
            ] {
                for a in addrs {
                    match proxy::listener_flag(mode, &a) {
                        Ok(l) => listeners.push(l),
                        Err(e) => {
                            eprintln!("error: --{}: {e}", mode.as_str());
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            if nftables.is_some() && !listeners.is_empty() {
                // The rules are rendered from the config's listeners (also
                // on reload): a flag-only listener would not be captured.
                eprintln!("error: --nftables takes the listeners from gateway.listeners; drop --explicit/--redirect/--tproxy");
                return ExitCode::FAILURE;
            }
            let opts = proxy::RunOptions {
                listeners,
                tls: proxy::TlsOverrides {
                    ca_cert,
                    ca_key,
                    upstream_ca,
                    insecure_upstream,
                },
                rules: nftables
                    .map(|m| std::sync::Arc::new(crate::deploy::runtime::RulesKeeper::new(m))),
                audit_log,
                metrics,
                // Neither flag: the config's gateway.watch_config decides.
                watch_config: match (watch_config, no_watch_config) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                log_allowed,
                config_read: None,
            };
            run_gateway(&config, opts)
        }
        Command::Nft {
            config,
            mode,
            guard_only,
        } => {
            let label = config.file_name().map_or_else(
                || config.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match crate::config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|p| match guard_only {
                    true => Ok(crate::deploy::nftables::render_guard(&p, &label)),
                    false => crate::deploy::nftables::render(&p, mode, &label),
                }) {
                Ok(ruleset) => {
                    print!("{ruleset}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ca { out } => match proxy::write_ca(&out) {
            Ok((cert, key)) => {
                println!("{}\n{}", cert.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_gateway(config_path: &std::path::Path, opts: proxy::RunOptions) -> ExitCode {
    // Read once: the policy and the content the reload watcher starts from
    // come from the same bytes.
    let loaded = crate::config::read(config_path).and_then(|bytes| {
        let policy = crate::config::from_slice(&bytes, config_path)?;
        Ok((policy, proxy::config_watch::fingerprint_of(&bytes)))
    });
    let (policy, read_from) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = proxy::RunOptions {
        config_read: Some(read_from),
        ..opts
    };
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy::run(config_path, policy, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_log_level(s: &str) -> Result<crate::policy::LogLevel, String> {
    crate::policy::LogLevel::parse(s)
        .ok_or_else(|| format!("{s:?} is not off, error, warn, info, debug or trace"))
}

/// Logs go to standard error (journald picks them up under systemd);
/// `RUST_LOG` overrides the default `info` level. When standard error is
/// the journal, lines carry no timestamp of their own: journald stamps
/// every line, and a second one only clutters `journalctl`.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_target(false);
    let _ = match (format, journal) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, true) => builder.json().flatten_event(true).without_time().try_init(),
    };
}

/// Is standard error the journal stream systemd announced? `JOURNAL_STREAM`
/// is `DEV:INODE` of that stream; it is inherited by children whose stderr
/// may have been redirected since, so it only counts when it matches.
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_counts_only_when_it_is_our_stderr() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        let ours = format!("{}:{}", m.dev(), m.ino());
        assert!(stderr_is_journal(Some(&ours)));
        let other = format!("{}:{}", m.dev(), m.ino() + 1);
        assert!(!stderr_is_journal(Some(&other)));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(None));
    }
}
