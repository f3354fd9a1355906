//! One shard's run: its files, read on one thread and predicted on another,
//! in parts that are published whole and recorded in the manifest.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use super::input::{self, Options};
use super::layout::{Layout, Reject, Rows};
use super::manifest::{Manifest, Part};
use super::output::{self, PartWriter};
use super::progress::Progress;
use super::store::{Object, Store};
use super::{BatchError, BatchRequest, Format, Summary};
use crate::bundle::models::{CONFIG_FILE, resolve};
use crate::config::ModelConfig;
use crate::runtime::OnnxModel;

/// Runs one shard. The summary holds the counts whatever happened, and the
/// error when the shard failed.
pub fn run(request: &BatchRequest) -> (Summary, Result<(), BatchError>) {
    let mut summary = Summary {
        shard: request.shard,
        shards: request.shards,
        output: request.output.clone(),
        ..Summary::default()
    };
    let outcome = run_shard(request, &mut summary);
    if let Err(error) = &outcome {
        summary.error = Some(error.to_string());
        summary.kind = Some(error.kind());
    }
    (summary, outcome)
}

fn run_shard(request: &BatchRequest, summary: &mut Summary) -> Result<(), BatchError> {
    check(request)?;
    let input = Store::parse(&request.input)?;
    let output = Store::parse(&request.output)?;
    summary.output = output.describe();
    let (objects, format) = input.list(request.format)?;
    let output_format = request.output_format.unwrap_or(format);
    let mine: Vec<(usize, Object)> = objects
        .into_iter()
        .enumerate()
        .filter(|(index, _)| index % request.shards == request.shard)
        .collect();
    summary.files = mine.len();
    let mut manifest = Manifest::load(
        &output,
        request.shard,
        request.shards,
        request.rows_per_part,
        output_format,
    )?;
    summary.resumed_parts = manifest.totals().2;
    let scratch = std::env::temp_dir().join(format!("sluice-batch-scratch-{}", std::process::id()));
    let mut model = load_model(request, &scratch)?;
    let layout = Layout::of(model.inputs())?;
    let mut progress = Progress::start(request, mine.len())?;
    let mut shard = Shard {
        request,
        input: &input,
        output: &output,
        format,
        output_format,
        layout: &layout,
        model: &mut model,
        manifest: &mut manifest,
        progress: &mut progress,
        scratch: &scratch,
    };
    let outcome = mine
        .iter()
        .try_for_each(|(index, object)| shard.file(*index, object));
    let _ = std::fs::remove_dir_all(&scratch);
    let (rows, rejected, parts) = manifest.totals();
    summary.rows = rows;
    summary.rejected = rejected;
    summary.parts = parts;
    summary.seconds = progress.seconds();
    summary.rows_per_second = progress.rate();
    outcome?;
    manifest.complete = true;
    manifest.save(&output)?;
    progress.finish();
    let read = rows + rejected;
    let ratio = if read == 0 {
        0.0
    } else {
        rejected as f64 / read as f64
    };
    if ratio > request.max_reject_ratio {
        return Err(BatchError::Rejects {
            rejected,
            read,
            ratio,
            max: request.max_reject_ratio,
            rejects: format!("{}/_rejects/", output.describe()),
        });
    }
    Ok(())
}

fn check(request: &BatchRequest) -> Result<(), BatchError> {
    let usage = |message: String| Err(BatchError::Usage(message));
    if request.shards == 0 || request.shard >= request.shards {
        return usage(format!(
            "--shard {} --shards {}: the shard must be below the number of shards",
            request.shard, request.shards
        ));
    }
    if request.batch_size == 0 || request.rows_per_part == 0 {
        return usage("--batch-size and --rows-per-part must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&request.max_reject_ratio) {
        return usage(format!(
            "--max-reject-ratio {} is not between 0 and 1",
            request.max_reject_ratio
        ));
    }
    Ok(())
}

/// Loads the model `--model` names (its highest version), with its
/// `config.yaml` and the threads asked for.
fn load_model(request: &BatchRequest, scratch: &Path) -> Result<OnnxModel, BatchError> {
    let failed = |message: String| BatchError::Model {
        model: request.model.clone(),
        message,
    };
    let models = resolve(
        std::slice::from_ref(&request.model),
        &scratch.join("model"),
        Duration::from_secs(600),
    )
    .map_err(|e| failed(e.to_string()))?;
    let [model] = models.as_slice() else {
        return Err(failed(format!(
            "names {} models; batch runs one (name its folder)",
            models.len()
        )));
    };
    let (_, path) = model
        .versions
        .last_key_value()
        .ok_or_else(|| failed("no version".into()))?;
    let mut config = match model.files.get(CONFIG_FILE) {
        Some(file) => ModelConfig::load(file.parent().unwrap_or(Path::new(".")))
            .map_err(|e| failed(e.to_string()))?,
        None => ModelConfig::default(),
    };
    config.intra_op_threads = match request.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    OnnxModel::load(path, &config).map_err(|e| failed(e.to_string()))
}

/// A piece of a part, as the reading thread hands it over.
struct Piece {
    rows: Rows,
    /// The part is complete after these rows.
    part_end: bool,
    /// The file is complete after these rows.
    file_end: bool,
}

/// What the loop over a shard's files shares.
struct Shard<'a> {
    request: &'a BatchRequest,
    input: &'a Store,
    output: &'a Store,
    format: Format,
    output_format: Format,
    layout: &'a Layout,
    model: &'a mut OnnxModel,
    manifest: &'a mut Manifest,
    progress: &'a mut Progress,
    scratch: &'a PathBuf,
}

/// The part being written.
struct OpenPart {
    base: String,
    /// Created at the first predictions, when every output's width is known.
    writer: Option<Box<dyn PartWriter>>,
    rows: u64,
    rejects: Vec<Reject>,
}

impl Shard<'_> {
    /// Predicts one file, after the parts an earlier run published.
    fn file(&mut self, index: usize, object: &Object) -> Result<(), BatchError> {
        let done = self
            .manifest
            .files
            .get(&object.name)
            .cloned()
            .unwrap_or_default();
        if done.complete {
            self.progress.file_done();
            return Ok(());
        }
        self.progress.reading(&object.name);
        let request = self.request;
        let options = Options {
            layout: self.layout,
            id_column: request.id_column.as_deref(),
            ignore_columns: &request.ignore_columns,
            source: &object.name,
        };
        let mut reader = input::open(
            self.format,
            || self.input.open(object),
            || self.input.local_copy(object, self.scratch),
            &options,
            request.batch_size,
            done.done(),
        )?;
        let (sender, pieces) = sync_channel(2);
        std::thread::scope(|scope| {
            scope.spawn(move || read_parts(reader.as_mut(), request, sender));
            self.predict(index, object, done.parts.len(), done.done(), pieces)
        })
    }

    /// Runs the model on the pieces of one file and publishes its parts.
    fn predict(
        &mut self,
        index: usize,
        object: &Object,
        mut chunk: usize,
        mut end: u64,
        pieces: Receiver<Result<Piece, BatchError>>,
    ) -> Result<(), BatchError> {
        let mut open: Option<OpenPart> = None;
        for piece in pieces {
            let Piece {
                rows,
                part_end,
                file_end,
            } = piece?;
            end += rows.consumed;
            if rows.consumed > 0 || open.is_some() {
                let part = match &mut open {
                    Some(part) => part,
                    None => open.insert(self.open_part(index, chunk)),
                };
                self.run(object, &rows, end, part)?;
                self.progress
                    .rows(rows.len() as u64, rows.rejects.len() as u64);
                part.rows += rows.len() as u64;
                part.rejects.extend(rows.rejects);
            }
            if part_end && let Some(part) = open.take() {
                self.publish(object, part, end)?;
                chunk += 1;
            }
            if file_end {
                let entry = self.manifest.files.entry(object.name.clone()).or_default();
                entry.complete = true;
                self.manifest.save(self.output)?;
                self.progress.file_done();
            }
        }
        Ok(())
    }

    fn open_part(&self, index: usize, chunk: usize) -> OpenPart {
        OpenPart {
            base: format!("part-{index:05}-{chunk:05}"),
            writer: None,
            rows: 0,
            rejects: Vec::new(),
        }
    }

    /// The writer of `part`, created with `columns` the first time.
    fn writer<'p>(
        &self,
        part: &'p mut OpenPart,
        columns: impl FnOnce() -> Vec<output::OutputColumns>,
    ) -> Result<&'p mut Box<dyn PartWriter>, BatchError> {
        if part.writer.is_none() {
            part.writer = Some(output::create(
                self.output_format,
                self.output,
                &part.base,
                columns(),
                self.request.id_column.as_deref(),
            )?);
        }
        Ok(part.writer.as_mut().expect("created above"))
    }

    /// Runs the model on `rows` and writes their predictions to `part`.
    fn run(
        &mut self,
        object: &Object,
        rows: &Rows,
        end: u64,
        part: &mut OpenPart,
    ) -> Result<(), BatchError> {
        if rows.is_empty() {
            return Ok(());
        }
        let inputs = self.layout.tensors(&rows.features, rows.len());
        let outputs = self
            .model
            .run(&inputs.iter().collect::<Vec<_>>())
            .map_err(|source| BatchError::Run {
                source_name: object.name.clone(),
                first: end - rows.consumed,
                end,
                source,
            })?;
        let specs = self.model.outputs();
        let columns = || output::columns_of(specs, &outputs, rows.len());
        self.writer(part, columns)?
            .write(&object.name, rows, &outputs)
    }

    /// Publishes a complete part, its rejects, and the manifest that lists them.
    fn publish(&mut self, object: &Object, mut part: OpenPart, end: u64) -> Result<(), BatchError> {
        // A part whose every row was rejected still gets its (empty) file.
        let specs = self.model.outputs();
        let columns =
            || output::static_columns(specs).unwrap_or_else(|| output::columns_of(specs, &[], 0));
        self.writer(&mut part, columns)?;
        let mut staged = part.writer.take().expect("created above").finish()?;
        if !part.rejects.is_empty() {
            staged.push(output::write_rejects(
                self.output,
                &part.base,
                &object.name,
                &part.rejects,
            )?);
        }
        for (path, name) in &staged {
            self.output.publish(path, name)?;
        }
        let entry = self.manifest.files.entry(object.name.clone()).or_default();
        entry.parts.push(Part {
            files: staged.into_iter().map(|(_, name)| name).collect(),
            rows: part.rows,
            rejected: part.rejects.len() as u64,
            end,
        });
        self.manifest.save(self.output)?;
        self.progress.part();
        Ok(())
    }
}

/// Reads a file in pieces of at most `batch_size` rows, each part exactly
/// `rows_per_part` input rows (the last one what is left), and sends them on.
fn read_parts(
    reader: &mut dyn input::RowReader,
    request: &BatchRequest,
    sender: SyncSender<Result<Piece, BatchError>>,
) {
    loop {
        let mut left = request.rows_per_part;
        while left > 0 {
            let mut rows = Rows::default();
            let wanted = left.min(request.batch_size as u64) as usize;
            let more = match reader.read(wanted, &mut rows) {
                Ok(more) => more,
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            left -= rows.consumed;
            let piece = Piece {
                rows,
                part_end: left == 0 || !more,
                file_end: !more,
            };
            if sender.send(Ok(piece)).is_err() || !more {
                return;
            }
        }
    }
}
