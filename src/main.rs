//! The `misp-guard-gw` binary: a thin shell over [`misp_guard_gw::cli`].

fn main() -> std::process::ExitCode {
    misp_guard_gw::cli::main()
}
