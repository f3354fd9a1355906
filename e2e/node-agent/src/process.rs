//! Starting container processes through the launcher and signalling them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::launch::{Enter, LaunchSpec};

/// Where the agent keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The agent's state directory (`.cluster/node`).
    pub state: PathBuf,
    /// Root of container logs (`.cluster/logs`).
    pub logs: PathBuf,
}

impl Paths {
    /// The directory of the pod with `uid`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state.join("pods").join(uid)
    }

    /// Log file of a container run, laid out as the kubelet lays out
    /// `/var/log/pods`: `<namespace>_<pod>_<uid>/<container>/<restart>.log`.
    pub fn log_file(&self, pod_key: &str, container: &str, restart: i32) -> PathBuf {
        self.logs
            .join(pod_key)
            .join(container)
            .join(format!("{restart}.log"))
    }

    /// The list of mount points the agent created on the host.
    fn mountpoints(&self) -> PathBuf {
        self.state.join("mountpoints")
    }
}

/// Starts the launcher for `spec`, with output appended to `log`, and records the
/// process in `pid_file` as `<pid> <start time>` so `make cluster-down` can stop it
/// even if the agent is gone.
pub fn spawn(
    paths: &Paths,
    spec: &LaunchSpec,
    spec_file: &Path,
    log: &Path,
    pid_file: &Path,
) -> Result<Child> {
    if let Enter::Container { mounts, .. } = &spec.enter {
        for m in mounts {
            ensure_mountpoint(paths, &m.source, &m.target)?;
        }
    }
    let json = serde_json::to_vec(spec).map_err(|e| Error::Config(e.to_string()))?;
    write_private(spec_file, &json)?;
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening {}", log.display())))
    };
    let exe = std::env::current_exe().map_err(Error::io("locating the agent binary"))?;
    let child = Command::new(exe)
        .arg("launch")
        .arg(spec_file)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .kill_on_drop(false)
        .spawn()
        .map_err(Error::io("starting container launcher"))?;
    if let Some(pid) = child.id() {
        let line = format!("{pid} {}\n", start_time(pid).unwrap_or_default());
        write_private(pid_file, line.as_bytes())?;
    }
    Ok(child)
}

/// Sends `signal` to the process group led by `pid` (a container and its children).
pub fn signal_group(pid: u32, signal: Signal) {
    // ESRCH means it is already gone, which is what we want.
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`),
/// which tells a process apart from a later one that reuses its PID.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Creates `target` (a directory, or an empty file when `source` is a file) if it does
/// not exist, recording what it created so cluster-down can remove it.
fn ensure_mountpoint(paths: &Paths, source: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        return Ok(());
    }
    let mut created = Vec::new();
    let mut missing: Vec<&Path> = target.ancestors().take_while(|p| !p.exists()).collect();
    missing.reverse();
    for (i, path) in missing.iter().enumerate() {
        let last = i + 1 == missing.len();
        let context = format!("creating mount point {}", path.display());
        if last && source.is_file() {
            std::fs::write(path, b"").map_err(Error::io(context))?;
        } else {
            match std::fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(context)(e)),
            }
        }
        created.push(path.display().to_string());
    }
    let mut list = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.mountpoints())
        .map_err(Error::io("recording mount points"))?;
    for path in created {
        writeln!(list, "{path}").map_err(Error::io("recording mount points"))?;
    }
    Ok(())
}

fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    file.write_all(content)
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_start_time() {
        let me = std::process::id();
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX), None);
    }
}
