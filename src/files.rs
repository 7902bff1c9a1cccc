//! Replacing files so that a crash leaves the old content or the new, never a mix: the
//! agent's checkpoints and ids, the HAProxy sidecar's config and state files.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `path` with `.suffix` appended (`haproxy.cfg` gives `haproxy.cfg.lkg`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `data` to `path` atomically and durably: a sibling temp file, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = sibling(path, "tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_and_atomic_writes() {
        assert_eq!(sibling(Path::new("/etc/haproxy/haproxy.cfg"), "lkg"), Path::new("/etc/haproxy/haproxy.cfg.lkg"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state");
        write_atomic(&f, b"1\n").unwrap();
        write_atomic(&f, b"2\n").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"2\n");
        assert!(!sibling(&f, "tmp").exists());
    }
}
