//! Request-path hardening (POLICY.md §4): web servers in front of MISP
//! resolve dot-segments and percent-encoded dots/slashes before routing, so a
//! path like `/events/add/../../events/restSearch` reaches a different
//! endpoint than the allowlist regex saw. Such paths never match a sync
//! endpoint legitimately, so they are refused outright.

/// Why a path is refused, or Ok for a path safe to match literally.
pub fn check(path_and_query: &str) -> Result<(), &'static str> {
    if !path_and_query.starts_with('/') {
        return Err("path must start with /");
    }
    if path_and_query.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err("path contains control, space or non-ASCII characters");
    }
    if path_and_query.contains('#') {
        return Err("path contains a fragment");
    }
    let path = path_and_query.split('?').next().unwrap_or_default();
    if path.contains('\\') {
        return Err("path contains a backslash");
    }
    let lower = path.to_ascii_lowercase();
    for (enc, what) in [
        ("%2e", "path contains an encoded dot"),
        ("%2f", "path contains an encoded slash"),
        ("%5c", "path contains an encoded backslash"),
        ("%25", "path contains an encoded percent sign"),
        ("%00", "path contains an encoded NUL"),
    ] {
        if lower.contains(enc) {
            return Err(what);
        }
    }
    if path.contains("//") {
        return Err("path contains an empty segment");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("path contains a dot-segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn sync_paths_pass() {
        for p in [
            "/events/add/metadata:1",
            "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56/deleted[]:0/deleted[]:1/excludeGalaxy:1",
            "/analyst_data/index/Note/uuid[]:6f847552-aaab-4378-aa5f-369c416822d1.json",
            "/torlist/?exit",
            "/servers/getVersion",
            "/a?next=../x",
            "/events/add/",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        for p in [
            "/events/add/../../events/restSearch",
            "/events/add/./x",
            "/events/add/..",
            "/events/add/%2e%2e/x",
            "/events/add/%2E./x",
            "/events/add%2fx",
            "/events/add/%5C..",
            "/events/add\\..\\x",
            "/events//add",
            "/events/add/%252e%252e/",
            "/events/add/%00",
            "/events/add x",
            "/events/add/\u{e9}",
            "/events/add#x",
            "events/add",
            "/events/add\t",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
    }
}
