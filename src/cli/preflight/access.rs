//! Can the service's user read a file? `check-config` runs either as that
//! user (the unit's `ExecStartPre`: just open the file) or as root on its
//! behalf (an operator checking before a start): then the owner, group and
//! mode bits of the file and of every directory above it decide, as the
//! kernel would without ACLs.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user `run` is started as by the shipped unit and package.
pub const SERVICE_USER: &str = "misp-guard-gw";

/// A user by name, with every group it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Identity {
    /// Looks `name` up in the user database; None when there is no such user.
    pub fn lookup(name: &str) -> io::Result<Option<Identity>> {
        let Some(user) = nix::unistd::User::from_name(name).map_err(io::Error::from)? else {
            return Ok(None);
        };
        let cname =
            CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let gids = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(io::Error::from)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Some(Identity {
            name: user.name,
            uid: user.uid.as_raw(),
            gids,
        }))
    }
}

/// Who the files are checked for.
#[derive(Debug, Clone)]
pub enum Reader {
    /// This process: what it can open is what it can read.
    Process,
    /// Another user, judged from permission bits (needs root to see them all).
    User(Identity),
}

impl Reader {
    pub fn describe(&self) -> String {
        match self {
            Reader::Process => {
                let uid = nix::unistd::geteuid();
                match nix::unistd::User::from_uid(uid) {
                    Ok(Some(u)) => format!("user {} (this process)", u.name),
                    _ => format!("uid {uid} (this process)"),
                }
            }
            Reader::User(id) => format!("user {} (uid {})", id.name, id.uid),
        }
    }

    /// The groups the reader is in (for the CA key's group-read rule).
    pub fn gids(&self) -> Vec<u32> {
        match self {
            Reader::Process => crate::tls::ca::process_groups(),
            Reader::User(id) => id.gids.clone(),
        }
    }

    /// Ok when the reader can open `path` for reading; else why not.
    pub fn check_read(&self, path: &Path) -> Result<(), String> {
        let shown = path.display();
        match self {
            Reader::Process => fs::File::open(path).map(drop).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    format!("{shown}: does not exist")
                } else {
                    format!("{shown}: cannot be read by {}: {e}", self.describe())
                }
            }),
            Reader::User(id) => {
                let path = absolute(path);
                let meta = fs::metadata(&path).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        format!("{shown}: does not exist")
                    } else {
                        format!("{shown}: {e}")
                    }
                })?;
                if !meta.is_file() {
                    return Err(format!("{shown}: not a regular file"));
                }
                // Every directory on the way must be searchable (x).
                for dir in path.ancestors().skip(1) {
                    let d = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    if !allows(d.mode(), d.uid(), d.gid(), id, 0o1) {
                        return Err(format!(
                            "{shown}: not readable by {}: directory {} is mode {:04o} owner {}:{}",
                            self.describe(),
                            dir.display(),
                            d.mode() & 0o7777,
                            d.uid(),
                            d.gid()
                        ));
                    }
                }
                if !allows(meta.mode(), meta.uid(), meta.gid(), id, 0o4) {
                    return Err(format!(
                        "{shown}: not readable by {}: mode {:04o} owner {}:{}",
                        self.describe(),
                        meta.mode() & 0o7777,
                        meta.uid(),
                        meta.gid()
                    ));
                }
                Ok(())
            }
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Does `mode` (owner `uid`, group `gid`) give `who` every bit of `want`
/// (0o4 read, 0o1 search)? One class applies, as in the kernel: owner,
/// else group, else others. Root passes (it has CAP_DAC_OVERRIDE).
pub fn allows(mode: u32, uid: u32, gid: u32, who: &Identity, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let class = if uid == who.uid {
        (mode >> 6) & 0o7
    } else if who.gids.contains(&gid) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    class & want == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Identity {
        Identity {
            name: "svc".into(),
            uid: 990,
            gids: vec![990],
        }
    }

    #[test]
    fn one_class_decides() {
        let svc = service();
        // The package's CA key: 0640 root:svc.
        assert!(allows(0o640, 0, 990, &svc, 0o4));
        // 0600 root:root: locked out.
        assert!(!allows(0o600, 0, 0, &svc, 0o4));
        // Owner class applies even when group/others would allow more.
        assert!(!allows(0o044, 990, 990, &svc, 0o4));
        // Others.
        assert!(allows(0o644, 0, 0, &svc, 0o4));
        // A private directory on the way.
        assert!(!allows(0o700, 0, 0, &svc, 0o1));
        assert!(allows(0o750, 0, 990, &svc, 0o1));
        // Root reads everything.
        let root = Identity {
            name: "root".into(),
            uid: 0,
            gids: vec![0],
        };
        assert!(allows(0o000, 5, 5, &root, 0o4));
    }

    #[test]
    fn check_read_reports_missing_and_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("mgw-access-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        fs::write(&file, "x").unwrap();
        let missing = dir.join("missing.pem");
        assert!(Reader::Process
            .check_read(&missing)
            .unwrap_err()
            .ends_with("does not exist"));
        Reader::Process.check_read(&file).unwrap();
        // A user that owns nothing here and is in no group of it: only the
        // "others" bits count.
        let nobody = Identity {
            name: "nobody-test".into(),
            uid: 65533,
            gids: vec![65533],
        };
        let reader = Reader::User(nobody);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let err = reader.check_read(&file).unwrap_err();
        assert!(err.contains("not readable by user nobody-test"), "{err}");
        assert!(err.contains("mode 0600"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        reader.check_read(&file).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(reader.check_read(&file).unwrap_err().contains("directory"));
        assert!(reader
            .check_read(&missing)
            .unwrap_err()
            .ends_with("does not exist"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
