//! Noticing that mounted files changed. Kubernetes updates a mounted Secret by
//! swapping a symlink, so the contents are compared rather than modification
//! times (which can stay within the same second in tests, and which a symlink
//! swap does not always change). The files are small; reading them every few
//! seconds costs nothing that matters.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::SecurityError;

/// A group of files read together, remembering what they held last time.
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    last: Mutex<Vec<Vec<u8>>>,
}

impl WatchedFiles {
    /// Reads every file now; fails if one cannot be read.
    pub fn read(paths: Vec<PathBuf>) -> Result<(WatchedFiles, Vec<Vec<u8>>), SecurityError> {
        let contents = read_all(&paths)?;
        let watched = WatchedFiles {
            paths,
            last: Mutex::new(contents.clone()),
        };
        Ok((watched, contents))
    }

    /// The new contents when any file changed since the last call, else `None`.
    /// A file that cannot be read is reported and counts as unchanged.
    pub fn changed(&self) -> Option<Vec<Vec<u8>>> {
        let contents = match read_all(&self.paths) {
            Ok(contents) => contents,
            Err(error) => {
                tracing::warn!(%error, "keeping the previous version");
                return None;
            }
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == contents {
            return None;
        }
        *last = contents.clone();
        Some(contents)
    }

    /// The first file's path, to name the group in messages.
    pub fn path(&self) -> &Path {
        &self.paths[0]
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, SecurityError> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|source| SecurityError::Read {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_change_once_and_ignores_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a");
        std::fs::write(&file, "one").unwrap();
        let (watched, first) = WatchedFiles::read(vec![file.clone()]).unwrap();
        assert_eq!(first, vec![b"one".to_vec()]);
        assert_eq!(watched.changed(), None);
        std::fs::write(&file, "two").unwrap();
        assert_eq!(watched.changed(), Some(vec![b"two".to_vec()]));
        assert_eq!(watched.changed(), None);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(watched.changed(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
