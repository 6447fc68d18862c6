//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// Where misp-guard's conformance data lives. `MISP_GUARD_CONFORMANCE_DIR`
/// (set by `.ci/run`) makes a missing folder a failure; otherwise the default
/// `../shared/conformance/misp-guard` is used when present and the caller
/// skips (saying so) when it is not.
pub fn conformance_dir() -> Option<PathBuf> {
    match std::env::var_os("MISP_GUARD_CONFORMANCE_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("test_config.json").is_file(),
                "MISP_GUARD_CONFORMANCE_DIR={} has no test_config.json",
                dir.display()
            );
            Some(dir)
        }
        None => {
            let dir =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/misp-guard");
            if dir.join("test_config.json").is_file() {
                Some(dir)
            } else {
                eprintln!(
                    "SKIPPED: conformance data not found at {} (set MISP_GUARD_CONFORMANCE_DIR)",
                    dir.display()
                );
                None
            }
        }
    }
}

/// `./test/fixtures/X.json` in a scenario → the file in the conformance dir.
pub fn fixture_path(dir: &std::path::Path, fixture_file: &str) -> PathBuf {
    let name = fixture_file.rsplit('/').next().unwrap_or(fixture_file);
    dir.join("fixtures").join(name)
}
