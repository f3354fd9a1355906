//! Resolves a container's image, command and args to the program it runs on the host,
//! and keeps the node's image store.
//!
//! A mapped image (`--image-map sluice-server=target/release/sluice-server`) is not
//! run from where it was built: like a real node pulling an image, the agent first
//! installs the binary, with the shared libraries beside it (sluice-server loads
//! `libonnxruntime.so` from its own folder), into its image store, a folder named by
//! the SHA-256 of those files, and runs the container from there. A pod's volumes (an
//! emptyDir at /tmp, say) can then never hide the program, wherever the checkout and
//! its `target/` live, and a rebuild becomes a new image for the next container start
//! while running containers keep the files they started from.

use std::collections::HashMap;
use std::fs::{self, File, FileTimes};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Images whose name contains a key run the mapped local binary as their entrypoint.
#[derive(Debug, Default)]
pub struct ImageMap {
    entries: Vec<(String, PathBuf)>,
    store: Option<ImageStore>,
}

impl ImageMap {
    /// Builds a map from `(image name fragment, binary)` pairs. With a `store`, each
    /// binary is installed there (see the module documentation) before it runs;
    /// without one it runs in place, from its real path.
    pub fn new(entries: Vec<(String, PathBuf)>, store: Option<ImageStore>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(fragment, binary)| {
                let real = fs::canonicalize(&binary).unwrap_or(binary);
                (fragment, real)
            })
            .collect();
        Self { entries, store }
    }

    /// The host argv for `container`: its image's entrypoint (for mapped images) or
    /// its `command`, followed by its `args`, as Kubernetes combines them.
    pub fn argv(&self, container: &Container) -> Result<Vec<String>> {
        let image = container.image.as_deref().unwrap_or_default();
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone().unwrap_or_default();
        if !command.is_empty() {
            return Ok(command.into_iter().chain(args).collect());
        }
        let binary = self
            .entries
            .iter()
            .find(|(fragment, _)| image_name(image).contains(fragment.as_str()))
            .map(|(_, binary)| binary)
            .ok_or_else(|| {
                Error::Config(format!(
                    "image {image:?} has no local binary and the container sets no command"
                ))
            })?;
        let entrypoint = match &self.store {
            Some(store) => store.install(binary)?,
            None => binary.clone(),
        };
        Ok(std::iter::once(entrypoint.display().to_string())
            .chain(args)
            .collect())
    }
}

/// Installed images not used for this long are removed when the agent starts.
const UNUSED_FOR: Duration = Duration::from_secs(24 * 3600);
/// An install's temporary folder this old belongs to an agent that stopped mid-way.
const INTERRUPTED_AFTER: Duration = Duration::from_secs(3600);

/// The node's image store: `ROOT/sha256-<digest>/` holds one binary and the shared
/// libraries that sat beside it, `<digest>` covering all of their names and bytes.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// Per source binary: the stamp of its files when last installed, and where.
    installed: Mutex<HashMap<PathBuf, (Vec<Stamp>, PathBuf)>>,
}

/// What tells a source file changed without reading it: name, size, modification time.
type Stamp = (PathBuf, u64, Option<SystemTime>);

impl ImageStore {
    /// Opens (creating) the store at `root` and removes the images no container
    /// started from for a day, and installs that were interrupted.
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(Error::io(format!("creating {}", root.display())))?;
        // Pods run as any user: the store must be readable and searchable by all.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .map_err(Error::io(format!("opening up {}", root.display())))?;
        let store = Self {
            root,
            installed: Mutex::default(),
        };
        store.prune(UNUSED_FOR);
        Ok(store)
    }

    /// Removes images not used for `unused_for` and leftovers of interrupted installs.
    fn prune(&self, unused_for: Duration) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let unused = name.starts_with("sha256-") && age > unused_for;
            let interrupted = name.starts_with(".tmp-") && age > INTERRUPTED_AFTER;
            if unused || interrupted {
                info!(image = %entry.path().display(), "removing an unused image");
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    warn!(image = %entry.path().display(), error = %e, "could not remove");
                }
            }
        }
    }

    /// Installs `binary` and the shared libraries beside it (unless the store already
    /// holds these exact files) and returns the installed binary's path.
    pub fn install(&self, binary: &Path) -> Result<PathBuf> {
        let files = image_files(binary)?;
        let stamps = files.iter().map(|f| stamp(f)).collect::<Result<Vec<_>>>()?;
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, path)) = installed.get(binary)
            && *known == stamps
            && path.is_file()
        {
            touch(path.parent().unwrap_or(&self.root));
            return Ok(path.clone());
        }
        let name = binary
            .file_name()
            .ok_or_else(|| Error::Config(format!("{} names no file", binary.display())))?;
        let dir = self.copy_in(&files)?;
        let path = dir.join(name);
        installed.insert(binary.to_path_buf(), (stamps, path.clone()));
        Ok(path)
    }

    /// Copies `files` into a temporary folder, hashes the copies (so that the name
    /// always matches the content, even if a build rewrites the sources meanwhile) and
    /// renames the folder to `sha256-<digest>` at once, so that a container never sees
    /// a half-written image. Returns that folder; an existing one is kept.
    fn copy_in(&self, files: &[PathBuf]) -> Result<PathBuf> {
        let tmp = self
            .root
            .join(format!(".tmp-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let result = (|| {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .map_err(Error::io(format!("opening up {}", tmp.display())))?;
            let mut copies = Vec::with_capacity(files.len());
            for file in files {
                let to = tmp.join(file.file_name().unwrap_or_default());
                fs::copy(file, &to).map_err(Error::io(format!(
                    "copying {} into the image store",
                    file.display()
                )))?;
                let mode = fs::metadata(&to)
                    .map_err(Error::io("reading a copy"))?
                    .permissions()
                    .mode();
                fs::set_permissions(&to, fs::Permissions::from_mode(mode | 0o444))
                    .map_err(Error::io(format!("opening up {}", to.display())))?;
                copies.push(to);
            }
            let dir = self.root.join(format!("sha256-{}", digest(&copies)?));
            if dir.is_dir() {
                touch(&dir);
                return Ok(dir);
            }
            match fs::rename(&tmp, &dir) {
                Ok(()) => {
                    info!(image = %dir.display(), "installed an image");
                    Ok(dir)
                }
                // Another install of the same files won the race.
                Err(_) if dir.is_dir() => Ok(dir),
                Err(e) => Err(Error::io(format!("renaming {}", tmp.display()))(e)),
            }
        })();
        let _ = fs::remove_dir_all(&tmp);
        result
    }
}

/// The files of the image for `binary`: the binary itself, then the shared libraries
/// (`lib*.so`, `lib*.so.*`) in its folder, sorted by name.
fn image_files(binary: &Path) -> Result<Vec<PathBuf>> {
    if !binary.is_file() {
        return Err(Error::Config(format!(
            "image binary {} does not exist (make build)",
            binary.display()
        )));
    }
    let folder = binary.parent().unwrap_or(Path::new("/"));
    let mut libraries: Vec<PathBuf> = fs::read_dir(folder)
        .map_err(Error::io(format!("listing {}", folder.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("lib")
                && (name.ends_with(".so") || name.contains(".so."))
                && p.is_file()
        })
        .filter(|p| p != binary)
        .collect();
    libraries.sort();
    Ok(std::iter::once(binary.to_path_buf())
        .chain(libraries)
        .collect())
}

fn stamp(file: &Path) -> Result<Stamp> {
    let meta = fs::metadata(file).map_err(Error::io(format!("reading {}", file.display())))?;
    Ok((file.to_path_buf(), meta.len(), meta.modified().ok()))
}

/// SHA-256 over each file's name, size and bytes, in hex.
fn digest(files: &[PathBuf]) -> Result<String> {
    let mut sha256 = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let mut reader =
            File::open(file).map_err(Error::io(format!("reading {}", file.display())))?;
        let size = reader
            .metadata()
            .map_err(Error::io(format!("reading {}", file.display())))?
            .len();
        sha256.update(name.as_bytes());
        sha256.update([0]);
        sha256.update(size.to_le_bytes());
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(Error::io(format!("reading {}", file.display())))?;
            if n == 0 {
                break;
            }
            sha256.update(&buffer[..n]);
        }
    }
    Ok(sha256
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Marks an image as used now (its folder's modification time), for [`ImageStore::prune`].
fn touch(dir: &Path) {
    let now = FileTimes::new().set_modified(SystemTime::now());
    if let Err(e) = File::open(dir).and_then(|f| f.set_times(now)) {
        warn!(image = %dir.display(), error = %e, "could not mark the image as used");
    }
}

/// A number no other call in this process returns.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The repository part of an image reference, without registry host, tag or digest.
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let strings = |v: &[&str]| {
            (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: strings(command),
            args: strings(args),
            ..Default::default()
        }
    }

    fn map() -> ImageMap {
        ImageMap::new(
            vec![("sluice-server".into(), "/bin/sluice-server".into())],
            None,
        )
    }

    /// A fresh, empty folder under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-node-agent-test-{}-{name}-{}",
            std::process::id(),
            unique()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn mapped_image_runs_local_binary_with_args() {
        let c = container("ghcr.io/sluice-dev/sluice-server:0.1", &[], &["serve"]);
        assert_eq!(map().argv(&c).unwrap(), ["/bin/sluice-server", "serve"]);
    }

    #[test]
    fn command_overrides_entrypoint() {
        let c = container("python:3", &["python3", "-m"], &["http.server"]);
        assert_eq!(map().argv(&c).unwrap(), ["python3", "-m", "http.server"]);
    }

    #[test]
    fn unknown_image_without_command_is_an_error() {
        let c = container("nginx:1.27", &[], &[]);
        assert!(map().argv(&c).is_err());
    }

    #[test]
    fn registry_port_is_not_mistaken_for_a_tag() {
        assert_eq!(
            image_name("localhost:5000/sluice-server:dev"),
            "sluice-server"
        );
        assert_eq!(image_name("busybox@sha256:abc"), "busybox");
    }

    /// The fresh-clone failure of issue 14: the build folder sat under /tmp, which the
    /// pod's emptyDir covers. The container must run a copy in the store, with the
    /// libraries beside it, that outlives the build folder.
    #[test]
    fn mapped_binary_runs_from_the_store_with_its_libraries() {
        let build = scratch("build");
        fs::write(build.join("sluice-server"), "#!/bin/sh\necho v1\n").unwrap();
        fs::set_permissions(
            build.join("sluice-server"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(build.join("libonnxruntime.so"), "ort").unwrap();
        fs::write(build.join("sluice-server.d"), "not a library").unwrap();
        let root = scratch("store");
        let images = ImageMap::new(
            vec![("sluice-server".into(), build.join("sluice-server"))],
            Some(ImageStore::open(root.clone()).unwrap()),
        );
        let c = container("sluice-server:dev", &[], &["serve"]);

        let argv = images.argv(&c).unwrap();
        let installed = PathBuf::from(&argv[0]);
        let real_root = fs::canonicalize(&root).unwrap();
        assert!(installed.starts_with(&root) || installed.starts_with(&real_root));
        assert_eq!(argv[1], "serve");
        let image = installed.parent().unwrap();
        assert!(
            image
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sha256-")
        );
        assert_eq!(
            fs::read_to_string(&installed).unwrap(),
            "#!/bin/sh\necho v1\n"
        );
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o755,
            0o755
        );
        assert_eq!(
            fs::read_to_string(image.join("libonnxruntime.so")).unwrap(),
            "ort"
        );
        assert!(!image.join("sluice-server.d").exists());

        // The same files are the same image.
        assert_eq!(images.argv(&c).unwrap(), argv);

        // A rebuild is a new image; the old one stays for the containers running it.
        fs::write(build.join("sluice-server"), "#!/bin/sh\necho v2 rebuilt\n").unwrap();
        let rebuilt = PathBuf::from(&images.argv(&c).unwrap()[0]);
        assert_ne!(rebuilt, installed);
        assert_eq!(
            fs::read_to_string(&rebuilt).unwrap(),
            "#!/bin/sh\necho v2 rebuilt\n"
        );
        assert!(installed.is_file());

        // Hiding or removing the build folder does not touch what containers run.
        fs::remove_dir_all(&build).unwrap();
        assert!(rebuilt.is_file());
        assert!(
            rebuilt
                .parent()
                .unwrap()
                .join("libonnxruntime.so")
                .is_file()
        );

        // Images unused for longer than the limit go when the agent starts.
        std::thread::sleep(Duration::from_millis(20));
        ImageStore::open(root.clone())
            .unwrap()
            .prune(Duration::ZERO);
        assert!(!installed.exists() && !rebuilt.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    /// The store's folder names: SHA-256 over each file's name, a NUL, its size
    /// (little-endian u64) and its bytes, so that images installed by an earlier
    /// agent keep their names.
    #[test]
    fn the_digest_covers_names_sizes_and_bytes() {
        let dir = scratch("digest");
        fs::write(dir.join("sluice-server"), "abc").unwrap();
        fs::write(dir.join("libx.so"), "").unwrap();
        assert_eq!(
            digest(&[dir.join("sluice-server"), dir.join("libx.so")]).unwrap(),
            "e6dd5963b7f2a4c52136781b2b45cd0961b04f8a5bd53d6da3ce159a5ce2f79e"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let root = scratch("missing");
        let images = ImageMap::new(
            vec![("sluice-server".into(), root.join("nope/sluice-server"))],
            Some(ImageStore::open(root.clone()).unwrap()),
        );
        let e = images
            .argv(&container("sluice-server", &[], &[]))
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
