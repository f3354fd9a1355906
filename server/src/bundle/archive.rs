//! The bundle's file: a gzip-compressed tar written to `OUT.tmp-<pid>` beside
//! `OUT` and renamed to `OUT` only once complete, so that a failed run leaves
//! no output file (the temporary one is removed when an [`Archive`] is dropped
//! unfinished). Every entry sits under one top folder, carries the mode it is
//! given, and is listed with its SHA-256 digest in a last `SHA256SUMS` entry
//! that `sha256sum -c` reads.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::BundleError;

/// The file that lists every other file's digest.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on this machine (a symbolic link is followed).
    File(PathBuf),
    /// Text made by the bundle itself.
    Text(String),
}

/// One file to pack.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path inside the top folder, `/`-separated.
    pub path: String,
    /// Its contents.
    pub source: Source,
    /// Its permission bits, e.g. `0o755` for a program.
    pub mode: u32,
    /// Where it came from, as the listing shows it, when that is not its
    /// source file (a model optimized or downloaded into a temporary folder).
    pub origin: Option<String>,
}

impl Entry {
    /// A copy of the file `source`, at `path` with `mode`.
    pub fn file(path: impl Into<String>, source: PathBuf, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            source: Source::File(source),
            mode,
            origin: None,
        }
    }

    /// `text`, at `path` with `mode`.
    pub fn text(path: impl Into<String>, text: impl Into<String>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            source: Source::Text(text.into()),
            mode,
            origin: None,
        }
    }
}

/// One file as packed.
#[derive(Debug, Clone)]
pub struct Packed {
    /// Its path inside the top folder.
    pub path: String,
    /// Its size, uncompressed.
    pub bytes: u64,
    /// Its SHA-256 digest, lowercase hexadecimal.
    pub sha256: String,
    /// Where it came from: the entry's origin, else its source file; none
    /// for text the bundle made.
    pub origin: Option<String>,
}

/// A bundle being written.
pub struct Archive {
    output: PathBuf,
    temporary: PathBuf,
    root: String,
    tar: Option<tar::Builder<GzEncoder<BufWriter<File>>>>,
    folders: BTreeSet<String>,
    packed: Vec<Packed>,
    mtime: u64,
}

impl Archive {
    /// Starts `output`, under `root` as its top folder: creates the temporary
    /// file now, so that an unwritable destination fails before any work.
    pub fn create(output: &Path, root: &str) -> Result<Archive, BundleError> {
        let failed = |message: String| BundleError::Output {
            path: output.display().to_string(),
            message,
        };
        if output.is_dir() {
            return Err(failed("is a folder".into()));
        }
        let temporary = temporary_path(output);
        let file = File::create(&temporary).map_err(|e| failed(e.to_string()))?;
        let tar = tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::default()));
        let mut archive = Archive {
            output: output.to_path_buf(),
            temporary,
            root: root.to_string(),
            tar: Some(tar),
            folders: BTreeSet::new(),
            packed: Vec::new(),
            mtime: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        archive.folder("")?;
        Ok(archive)
    }

    /// Packs `entry` (and the folders above it, the first time each is seen).
    pub fn append(&mut self, entry: Entry) -> Result<&Packed, BundleError> {
        let parts: Vec<&str> = entry.path.split('/').collect();
        for depth in 1..parts.len() {
            let folder = parts[..depth].join("/");
            if self.folders.insert(folder.clone()) {
                self.folder(&folder)?;
            }
        }
        let (reader, bytes, file): (Box<dyn Read>, u64, Option<PathBuf>) = match &entry.source {
            Source::File(path) => {
                let read_error = |source| BundleError::Read {
                    path: path.display().to_string(),
                    source,
                };
                let file = File::open(path).map_err(read_error)?;
                let bytes = file.metadata().map_err(read_error)?.len();
                (Box::new(file), bytes, Some(path.clone()))
            }
            Source::Text(text) => (
                Box::new(std::io::Cursor::new(text.clone().into_bytes())),
                text.len() as u64,
                None,
            ),
        };
        let mut hashing = Hashing {
            inner: reader,
            hasher: Sha256::new(),
            failed: None,
        };
        let mut header = self.header(tar::EntryType::Regular, entry.mode, bytes);
        let path = format!("{}/{}", self.root, entry.path);
        let written = self.tar().append_data(&mut header, path, &mut hashing);
        match (written, hashing.failed, &file) {
            (Ok(()), _, _) => {}
            // The source failed while being copied: name it, not the bundle.
            (Err(_), Some(source), Some(path)) => {
                return Err(BundleError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
            (Err(e), _, _) => return Err(self.write_error(e)),
        }
        self.packed.push(Packed {
            path: entry.path,
            bytes,
            sha256: hex::encode(hashing.hasher.finalize()),
            origin: entry
                .origin
                .or_else(|| file.map(|f| f.display().to_string())),
        });
        Ok(self.packed.last().expect("just pushed"))
    }

    /// Packs `SHA256SUMS`, completes the file and renames it to the output;
    /// returns every packed file and the bundle's size in bytes.
    pub fn finish(mut self) -> Result<(Vec<Packed>, u64), BundleError> {
        let sums: String = self
            .packed
            .iter()
            .map(|p| format!("{}  {}\n", p.sha256, p.path))
            .collect();
        self.append(Entry::text(CHECKSUMS, sums, 0o644))?;
        let failed = |path: &Path, e: std::io::Error| BundleError::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let tar = self.tar.take().expect("finish runs once");
        let file = tar
            .into_inner()
            .and_then(GzEncoder::finish)
            .and_then(|writer| {
                writer
                    .into_inner()
                    .map_err(std::io::IntoInnerError::into_error)
            })
            .map_err(|e| failed(&self.temporary, e))?;
        file.sync_all().map_err(|e| failed(&self.temporary, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| failed(&self.temporary, e))?
            .len();
        std::fs::rename(&self.temporary, &self.output).map_err(|e| failed(&self.output, e))?;
        self.temporary = PathBuf::new();
        Ok((std::mem::take(&mut self.packed), bytes))
    }

    /// Packs the folder `path` (inside the top folder; `""` is the top folder).
    fn folder(&mut self, path: &str) -> Result<(), BundleError> {
        let mut header = self.header(tar::EntryType::Directory, 0o755, 0);
        let path = if path.is_empty() {
            format!("{}/", self.root)
        } else {
            format!("{}/{path}/", self.root)
        };
        let written = self.tar().append_data(&mut header, path, std::io::empty());
        written.map_err(|e| self.write_error(e))
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn tar(&mut self) -> &mut tar::Builder<GzEncoder<BufWriter<File>>> {
        self.tar.as_mut().expect("not finished")
    }

    fn write_error(&self, error: std::io::Error) -> BundleError {
        BundleError::Output {
            path: self.temporary.display().to_string(),
            message: error.to_string(),
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            self.tar = None;
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// A reader that hashes what passes through it and keeps its own failure
/// (which the tar writer would otherwise report as its own).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    failed: Option<std::io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(error) => {
                let copy = std::io::Error::new(error.kind(), error.to_string());
                self.failed = Some(error);
                Err(copy)
            }
        }
    }
}

/// `OUT.tmp-<pid>` beside `OUT`, so that the rename stays on one file system.
fn temporary_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    output.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let file = File::open(path).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let mode = entry.header().mode().unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (path, mode, data)
            })
            .collect()
    }

    #[test]
    fn entries_keep_their_modes_under_one_folder_with_their_digests() {
        let dir = scratch("modes");
        std::fs::write(dir.join("program"), b"#!/bin/sh\n").unwrap();
        let output = dir.join("edge.tar.gz");
        let mut archive = Archive::create(&output, "edge").unwrap();
        archive
            .append(Entry::file("bin/program", dir.join("program"), 0o755))
            .unwrap();
        archive
            .append(Entry::text("models/a/1/note", "hello", 0o644))
            .unwrap();
        assert!(!output.exists(), "nothing at the output before finish");
        let (packed, bytes) = archive.finish().unwrap();
        assert_eq!(bytes, std::fs::metadata(&output).unwrap().len());
        assert_eq!(packed.len(), 3);
        let entries = listing(&output);
        let names: Vec<(&str, u32)> = entries.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        assert_eq!(
            names,
            [
                ("edge/", 0o755),
                ("edge/bin/", 0o755),
                ("edge/bin/program", 0o755),
                ("edge/models/", 0o755),
                ("edge/models/a/", 0o755),
                ("edge/models/a/1/", 0o755),
                ("edge/models/a/1/note", 0o644),
                ("edge/SHA256SUMS", 0o644),
            ]
        );
        let sums = String::from_utf8(entries.last().unwrap().2.clone()).unwrap();
        assert_eq!(
            sums,
            format!(
                "{}  bin/program\n{}  models/a/1/note\n",
                hex::encode(Sha256::digest(b"#!/bin/sh\n")),
                hex::encode(Sha256::digest(b"hello"))
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unfinished_archive_leaves_no_file() {
        let dir = scratch("unfinished");
        let output = dir.join("edge.tar.gz");
        let mut archive = Archive::create(&output, "edge").unwrap();
        let error = archive
            .append(Entry::file("missing", dir.join("missing"), 0o644))
            .unwrap_err();
        assert!(matches!(error, BundleError::Read { .. }), "{error}");
        drop(archive);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let error = Archive::create(&dir.join("no/such/folder/edge.tar.gz"), "edge")
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("no/such/folder/edge.tar.gz"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
