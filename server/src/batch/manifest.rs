//! A shard's manifest: the parts it has published, so that a restart goes on
//! after them. It is rewritten (published whole) after every part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::store::Store;
use super::{BatchError, Format};

/// One shard's published work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The shard's number.
    pub shard: usize,
    /// How many shards share the input.
    pub shards: usize,
    /// Input rows per part.
    pub rows_per_part: u64,
    /// The output format.
    pub format: Format,
    /// Each input file's parts, by the file's name.
    pub files: BTreeMap<String, FileParts>,
    /// Whether the shard has finished every file.
    pub complete: bool,
}

/// The parts published for one input file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileParts {
    /// In order; part `i` holds input rows `i * rowsPerPart` up to its `end`.
    pub parts: Vec<Part>,
    /// Whether the file has been read to its end.
    pub complete: bool,
}

/// One published part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Part {
    /// The output files it wrote (predictions, and rejects when any).
    pub files: Vec<String>,
    /// Rows predicted.
    pub rows: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// The input rows it covers end here (exclusive).
    pub end: u64,
}

impl FileParts {
    /// Input rows the published parts cover.
    pub fn done(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.end)
    }
}

impl Manifest {
    /// The manifest's name in the output.
    pub fn name(shard: usize, shards: usize) -> String {
        format!("_manifest/shard-{shard:05}-of-{shards:05}.json")
    }

    /// The shard's manifest from `store`, or a new one. An existing one must
    /// be for the same sharding, part size and format.
    pub fn load(
        store: &Store,
        shard: usize,
        shards: usize,
        rows_per_part: u64,
        format: Format,
    ) -> Result<Manifest, BatchError> {
        let name = Manifest::name(shard, shards);
        let fresh = Manifest {
            shard,
            shards,
            rows_per_part,
            format,
            files: BTreeMap::new(),
            complete: false,
        };
        let Some(bytes) = store.read(&name)? else {
            return Ok(fresh);
        };
        let found: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            BatchError::Output(format!(
                "{}/{name}: unreadable manifest: {e}",
                store.describe()
            ))
        })?;
        if (found.rows_per_part, found.format) != (rows_per_part, format) {
            return Err(BatchError::Usage(format!(
                "{}/{name}: an earlier run wrote parts of {} rows as {:?}; this one asks for {} \
                 as {:?}: use the same options, or a new --output",
                store.describe(),
                found.rows_per_part,
                found.format,
                rows_per_part,
                format
            )));
        }
        Ok(found)
    }

    /// Publishes the manifest.
    pub fn save(&self, store: &Store) -> Result<(), BatchError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        store.write(&Manifest::name(self.shard, self.shards), &bytes)
    }

    /// Rows predicted, rows rejected and parts, over every published part.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.files
            .values()
            .flat_map(|f| &f.parts)
            .fold((0, 0, 0), |(rows, rejected, parts), part| {
                (rows + part.rows, rejected + part.rejected, parts + 1)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_refuses_other_options() {
        let dir = std::env::temp_dir().join(format!("sluice-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::Local(dir.clone());
        let mut manifest = Manifest::load(&store, 1, 4, 100, Format::Csv).unwrap();
        assert!(manifest.files.is_empty());
        manifest
            .files
            .entry("a.csv".into())
            .or_default()
            .parts
            .push(Part {
                files: vec!["part-00001-00000.csv".into()],
                rows: 98,
                rejected: 2,
                end: 100,
            });
        manifest.save(&store).unwrap();
        assert!(dir.join("_manifest/shard-00001-of-00004.json").exists());
        let again = Manifest::load(&store, 1, 4, 100, Format::Csv).unwrap();
        assert_eq!(again, manifest);
        assert_eq!(again.totals(), (98, 2, 1));
        assert_eq!(again.files["a.csv"].done(), 100);
        let error = Manifest::load(&store, 1, 4, 50, Format::Csv).unwrap_err();
        assert!(error.to_string().contains("parts of 100 rows"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
