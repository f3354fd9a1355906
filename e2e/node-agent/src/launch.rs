//! The container launcher: a short-lived process that enters the pod's namespaces,
//! bind-mounts the container's volumes and then `exec`s the container's program, so
//! the container keeps the launcher's PID.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{execvpe, sethostname, setsid};

use crate::error::{Error, Result};
use crate::volumes::Mount;

/// What the launcher does before `exec`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Enter {
    /// Start a container: new session, the pod's network namespace, a private mount
    /// and UTS namespace with the volumes bound in.
    Container {
        /// The pod's network namespace file.
        netns: PathBuf,
        /// The pod's hostname.
        hostname: String,
        /// Bind mounts, in order.
        mounts: Vec<Mount>,
    },
    /// Run inside a running container's network and mount namespaces (exec probes).
    Join {
        /// A process of the container.
        pid: i32,
    },
}

/// A program to start.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    /// Namespaces to enter.
    pub enter: Enter,
    /// Program and arguments; the program is looked up in the agent's `PATH`.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: PathBuf,
}

/// Reads a spec file, enters the namespaces and replaces this process with the
/// program. Returns only on failure.
pub fn launch(spec_path: &Path) -> Result<std::convert::Infallible> {
    let text =
        std::fs::read(spec_path).map_err(Error::io(format!("reading {}", spec_path.display())))?;
    let spec: LaunchSpec = serde_json::from_slice(&text).map_err(|e| Error::State {
        path: spec_path.to_owned(),
        message: e.to_string(),
    })?;
    match &spec.enter {
        Enter::Container {
            netns,
            hostname,
            mounts,
        } => {
            setsid().map_err(errno("setsid"))?;
            enter_namespace(netns, CloneFlags::CLONE_NEWNET)?;
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
                .map_err(errno("unshare"))?;
            sethostname(hostname).map_err(errno("sethostname"))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(errno("making / private"))?;
            // Open every source before mounting anything: a volume mounted over a
            // parent of a later source (say at /work) would otherwise hide it.
            let sources = mounts
                .iter()
                .map(|m| open_path(&m.source))
                .collect::<Result<Vec<_>>>()?;
            for (m, source) in mounts.iter().zip(&sources) {
                bind(m, source)?;
            }
        }
        Enter::Join { pid } => {
            enter_namespace(
                &PathBuf::from(format!("/proc/{pid}/ns/net")),
                CloneFlags::CLONE_NEWNET,
            )?;
            enter_namespace(
                &PathBuf::from(format!("/proc/{pid}/ns/mnt")),
                CloneFlags::CLONE_NEWNS,
            )?;
        }
    }
    std::env::set_current_dir(&spec.working_dir).map_err(Error::io(format!(
        "workingDir {}",
        spec.working_dir.display()
    )))?;
    let argv = cstrings(spec.argv.iter().cloned())?;
    let env = cstrings(spec.env.iter().map(|(k, v)| format!("{k}={v}")))?;
    let program = argv
        .first()
        .ok_or_else(|| Error::Config("empty command".into()))?;
    execvpe(program, &argv, &env)
        .map_err(|e| Error::Config(format!("exec {:?}: {e}", spec.argv[0])))
}

fn enter_namespace(path: &Path, kind: CloneFlags) -> Result<()> {
    let file = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    setns(file, kind).map_err(errno("setns"))
}

/// An `O_PATH` handle on `path` that stays valid when `path` is covered by a mount.
fn open_path(path: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    open(path, flags, Mode::empty()).map_err(errno(&format!("opening {}", path.display())))
}

fn bind(m: &Mount, source: &OwnedFd) -> Result<()> {
    let what = format!("bind {} at {}", m.source.display(), m.target.display());
    // A mount point inside an earlier volume (nested mounts) is created in that volume.
    if !m.target.exists() {
        let created = if m.source.is_dir() {
            std::fs::create_dir_all(&m.target)
        } else {
            m.target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&m.target, b""))
        };
        created.map_err(Error::io(what.clone()))?;
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(&source), &m.target, None::<&str>, flags, None::<&str>).map_err(errno(&what))?;
    if m.read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &m.target, None::<&str>, flags, None::<&str>).map_err(errno(&what))?;
    }
    Ok(())
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>> {
    items
        .map(|s| CString::new(s).map_err(|_| Error::Config("NUL byte in command or env".into())))
        .collect()
}

fn errno(context: &str) -> impl FnOnce(nix::Error) -> Error + '_ {
    move |e| Error::Io {
        context: context.to_owned(),
        source: e.into(),
    }
}
