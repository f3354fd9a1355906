//! Termination messages as the kubelet keeps them: what the container wrote to
//! its `terminationMessagePath` (found on the host through its bind mounts), or,
//! with `FallbackToLogsOnError` and a failed exit, the tail of its log.

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::volumes::Mount;

/// The kubelet's default `terminationMessagePath`.
const DEFAULT_PATH: &str = "/dev/termination-log";
/// The most of the message file the kubelet keeps.
const MOST_BYTES: u64 = 4096;
/// The most of a log's tail the kubelet falls back to.
const TAIL_BYTES: usize = 2048;
const TAIL_LINES: usize = 80;

/// Where one container's termination message comes from.
#[derive(Clone, Debug)]
pub struct MessageSource {
    /// The host file behind `terminationMessagePath`, when a mount holds it (the
    /// default `/dev/termination-log` is on no mount here, so it has none).
    file: Option<PathBuf>,
    /// The container's log file.
    log: PathBuf,
    /// `terminationMessagePolicy: FallbackToLogsOnError`.
    fallback_to_logs: bool,
}

impl MessageSource {
    /// The source for `container`, started with `mounts` and logging to `log`.
    pub fn new(container: &Container, mounts: &[Mount], log: &Path) -> Self {
        let path = container
            .termination_message_path
            .as_deref()
            .unwrap_or(DEFAULT_PATH);
        Self {
            file: host_path(Path::new(path), mounts),
            log: log.to_path_buf(),
            fallback_to_logs: container.termination_message_policy.as_deref()
                == Some("FallbackToLogsOnError"),
        }
    }

    /// Removes an earlier run's message (the kubelet gives each run a new file).
    pub fn clear(&self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// The message of a run that exited with `exit_code`, if there is one.
    pub fn read(&self, exit_code: i32) -> Option<String> {
        let written = self.file.as_deref().and_then(|file| {
            let mut text = String::new();
            std::fs::File::open(file)
                .ok()?
                .take(MOST_BYTES)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        });
        match written.filter(|t| !t.trim().is_empty()) {
            Some(text) => Some(text),
            None if self.fallback_to_logs && exit_code != 0 => log_tail(&self.log),
            None => None,
        }
    }
}

/// The host file that `path` is inside the container: below the mount whose
/// target is its longest prefix.
fn host_path(path: &Path, mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.target) && !m.read_only)
        .max_by_key(|m| m.target.components().count())
        .map(|m| m.source.join(path.strip_prefix(&m.target).unwrap_or(path)))
        .filter(|file| file.parent().is_some_and(Path::is_dir))
}

/// The last lines of a log, as the kubelet's fallback keeps them.
fn log_tail(log: &Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let start = text.len().saturating_sub(TAIL_BYTES);
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(path: Option<&str>, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            termination_message_path: path.map(String::from),
            termination_message_policy: policy.map(String::from),
            ..Container::default()
        }
    }

    #[test]
    fn the_message_file_is_found_through_the_deepest_mount() {
        let dir = std::env::temp_dir().join(format!("agent-termination-{}", std::process::id()));
        let (tmp, data) = (dir.join("tmp"), dir.join("data"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let mounts = [
            Mount {
                source: dir.clone(),
                target: "/".into(),
                read_only: true,
            },
            Mount {
                source: tmp.clone(),
                target: "/tmp".into(),
                read_only: false,
            },
        ];
        let log = dir.join("log");
        std::fs::write(&log, "first\nsecond\n").unwrap();
        let source = MessageSource::new(
            &container(Some("/tmp/summary"), Some("FallbackToLogsOnError")),
            &mounts,
            &log,
        );
        assert_eq!(
            source.read(1).as_deref(),
            Some("first\nsecond"),
            "falls back on failure"
        );
        assert_eq!(source.read(0), None, "no fallback on success");
        std::fs::write(tmp.join("summary"), "{\"ok\":1}").unwrap();
        assert_eq!(source.read(0).as_deref(), Some("{\"ok\":1}"));
        source.clear();
        assert_eq!(source.read(0), None);

        let default = MessageSource::new(&container(None, None), &mounts, &log);
        assert_eq!(
            default.read(1),
            None,
            "/dev/termination-log is on no writable mount"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
