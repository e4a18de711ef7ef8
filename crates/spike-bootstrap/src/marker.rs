//! The done-marker: a small file under the state directory saying bootstrap completed.
//!
//! It holds no secrets: completion time (RFC 3339, UTC), the Nexus URL and the Shamir
//! parameters. It is written atomically (temporary file, `fsync`, `rename`, directory
//! `fsync`) with mode 0600, in a directory created with mode 0700.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::error::BootstrapError;

/// File name of the marker inside the state directory.
pub const MARKER_NAME: &str = "bootstrap.done";

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerInfo {
    /// The Nexus base URL.
    pub nexus_api_url: String,
    /// Total shares.
    pub shares: u16,
    /// Threshold.
    pub threshold: u16,
    /// Why the marker was written (`"bootstrapped"` or `"nexus already initialized"`).
    pub reason: &'static str,
}

/// Whether the marker exists at `path`.
pub fn exists(path: &Path) -> bool {
    path.is_file()
}

/// Writes the marker atomically at `path`.
///
/// # Errors
/// [`BootstrapError::Marker`] with the path.
pub fn write(path: &Path, info: &MarkerInfo) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Marker {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned());
    let content = format!(
        "# Written by spike-bootstrap. Delete it only to bootstrap again (which re-keys).\n\
         completed_at = \"{now}\"\n\
         result = \"{}\"\n\
         nexus_api_url = \"{}\"\n\
         shamir_shares = {}\n\
         shamir_threshold = {}\n",
        info.reason, info.nexus_api_url, info.shares, info.threshold
    );
    let tmp: PathBuf = dir.join(format!(".{MARKER_NAME}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let written = file
        .write_all(content.as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    // Make the rename durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn marker_is_atomic_private_and_secret_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/sub").join(MARKER_NAME);
        assert!(!exists(&path));
        let info = MarkerInfo {
            nexus_api_url: "https://nexus:8553".to_owned(),
            shares: 3,
            threshold: 2,
            reason: "bootstrapped",
        };
        write(&path, &info).unwrap();
        assert!(exists(&path));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("nexus_api_url = \"https://nexus:8553\""),
            "{text}"
        );
        assert!(text.contains("shamir_shares = 3") && text.contains("shamir_threshold = 2"));
        assert!(text.contains("completed_at = \"20"), "{text}");
        // Rewriting replaces it; no temporary files stay behind.
        write(&path, &info).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
