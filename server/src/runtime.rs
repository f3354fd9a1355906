//! ONNX Runtime through `ort`: finding and loading the shared library, creating
//! sessions, describing their inputs and outputs, and running them on [`Tensor`]s.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};

use crate::config::{Device, ModelConfig};
use crate::tensor::{DataType, Tensor, TensorData, TensorError};

/// Why ONNX Runtime could not load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load the ONNX Runtime library: {0} (set ORT_DYLIB_PATH to libonnxruntime.so)")]
    Library(String),
    #[error("ONNX Runtime failed: {0}")]
    Ort(String),
    #[error(
        "CUDA was requested but is not available: {0} (set cpu_fallback: true to run on the CPU)"
    )]
    CudaUnavailable(String),
    #[error("tensor '{name}' has type {onnx_type}, which the protocol cannot carry")]
    UnsupportedType { name: String, onnx_type: String },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl<T> From<ort::Error<T>> for RuntimeError {
    fn from(error: ort::Error<T>) -> Self {
        RuntimeError::Ort(error.to_string())
    }
}

/// The file names the library is looked for under, newest convention first.
const LIBRARY_NAMES: [&str; 2] = ["libonnxruntime.so", "libonnxruntime.so.1"];

/// Where to look for the ONNX Runtime library: `ORT_DYLIB_PATH` if set, else
/// beside the executable and in its parent and `../lib` folders (where `make
/// build` and the container images put it).
pub fn library_candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let folders = [dir.to_path_buf(), dir.join(".."), dir.join("../lib")];
    folders
        .iter()
        .flat_map(|folder| LIBRARY_NAMES.iter().map(move |name| folder.join(name)))
        .collect()
}

/// None of the places the ONNX Runtime library is looked for holds it.
#[derive(Debug, thiserror::Error)]
#[error("none of {0:?} exists")]
pub struct LibraryNotFound(pub Vec<PathBuf>);

/// The library this process loads: the first of [`library_candidates`] that
/// exists, as named there (a symbolic link is not resolved).
pub fn library() -> Result<PathBuf, LibraryNotFound> {
    let candidates = library_candidates();
    match candidates.iter().find(|path| path.exists()) {
        Some(path) => Ok(path.clone()),
        None => Err(LibraryNotFound(candidates)),
    }
}

/// The process-wide ONNX Runtime environment, created on first use.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let library = library().map_err(|e| e.to_string())?;
            let builder = ort::init_from(&library).map_err(|e| e.to_string())?;
            builder
                .with_name("sluice")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| RuntimeError::Library(message.clone()))
}

/// One input or output as the model declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its datatype.
    pub datatype: DataType,
    /// Its shape; -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether the first dimension is dynamic, so that rows can be stacked.
    pub fn has_dynamic_batch(&self) -> bool {
        self.shape.first() == Some(&-1)
    }

    /// Whether a tensor of `shape` fits this declaration: same rank, and every
    /// dimension equal where the declared one is fixed (-1 takes any size).
    pub fn accepts_shape(&self, shape: &[i64]) -> bool {
        shape.len() == self.shape.len()
            && shape
                .iter()
                .zip(&self.shape)
                .all(|(given, declared)| *declared == -1 || given == declared)
    }
}

/// A loaded ONNX model, ready to run.
pub struct OnnxModel {
    session: Session,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    device: Device,
}

impl OnnxModel {
    /// Loads `path` with the threads and device that `config` asks for.
    pub fn load(path: &Path, config: &ModelConfig) -> Result<OnnxModel, RuntimeError> {
        let environment = environment()?;
        let mut builder = Session::builder(environment)?;
        if config.intra_op_threads > 0 {
            builder = builder.with_intra_threads(config.intra_op_threads)?;
        }
        let mut device = Device::Cpu;
        if config.device == Device::Cuda {
            match ort::ep::CUDA::is_available() {
                Ok(true) => {
                    let cuda = ort::ep::CUDA::default().build().error_on_failure();
                    builder = builder.with_execution_providers([cuda])?;
                    device = Device::Cuda;
                }
                Ok(false) | Err(_) if config.cpu_fallback => {
                    tracing::warn!(model = %path.display(), "CUDA unavailable, falling back to the CPU");
                }
                Ok(false) => {
                    return Err(RuntimeError::CudaUnavailable(
                        "this ONNX Runtime build has no CUDA execution provider".to_string(),
                    ));
                }
                Err(error) => return Err(RuntimeError::CudaUnavailable(error.to_string())),
            }
        }
        let session = builder.commit_from_file(path)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|outlet| describe(outlet.name(), outlet.dtype()))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|outlet| describe(outlet.name(), outlet.dtype()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OnnxModel {
            session,
            inputs,
            outputs,
            device,
        })
    }

    /// The model's inputs, in graph order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The model's outputs, in graph order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// The device the session actually runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on `inputs` (one per declared input, in order) and returns
    /// every output, in order.
    pub fn run(&mut self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let values = inputs
            .iter()
            .zip(&self.inputs)
            .map(|(tensor, spec)| Ok((spec.name.as_str(), to_value(tensor)?)))
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let outputs = self.session.run(values)?;
        outputs.values().map(|value| from_value(&value)).collect()
    }
}

fn describe(name: &str, value_type: &ValueType) -> Result<TensorSpec, RuntimeError> {
    let unsupported = || RuntimeError::UnsupportedType {
        name: name.to_string(),
        onnx_type: value_type.to_string(),
    };
    let ValueType::Tensor { ty, shape, .. } = value_type else {
        return Err(unsupported());
    };
    Ok(TensorSpec {
        name: name.to_string(),
        datatype: datatype_of(*ty).ok_or_else(unsupported)?,
        shape: shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect(),
    })
}

/// The protocol datatype for an ONNX element type, if the protocol can carry it.
pub fn datatype_of(element: TensorElementType) -> Option<DataType> {
    Some(match element {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_value(tensor: &Tensor) -> Result<DynValue, RuntimeError> {
    let shape = tensor.shape.clone();
    macro_rules! owned {
        ($v:expr) => {
            ort::value::Tensor::from_array((shape, $v.clone()))?.into_dyn()
        };
    }
    Ok(match &tensor.data {
        TensorData::Bool(v) => owned!(v),
        TensorData::Uint8(v) => owned!(v),
        TensorData::Uint16(v) => owned!(v),
        TensorData::Uint32(v) => owned!(v),
        TensorData::Uint64(v) => owned!(v),
        TensorData::Int8(v) => owned!(v),
        TensorData::Int16(v) => owned!(v),
        TensorData::Int32(v) => owned!(v),
        TensorData::Int64(v) => owned!(v),
        TensorData::Fp16(v) => owned!(v),
        TensorData::Bf16(v) => owned!(v),
        TensorData::Fp32(v) => owned!(v),
        TensorData::Fp64(v) => owned!(v),
        TensorData::Bytes(v) => {
            let strings = v
                .iter()
                .map(|bytes| String::from_utf8(bytes.clone()))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| {
                    TensorError::MalformedBytes(format!("ONNX string tensors must be UTF-8: {e}"))
                })?;
            ort::value::Tensor::from_string_array((shape, strings.as_slice()))?.into_dyn()
        }
    })
}

fn from_value(value: &DynValue) -> Result<Tensor, RuntimeError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(RuntimeError::UnsupportedType {
            name: "output".to_string(),
            onnx_type: value.dtype().to_string(),
        });
    };
    macro_rules! copy {
        ($variant:ident, $t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>()?;
            (shape.to_vec(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => copy!(Bool, bool),
        TensorElementType::Uint8 => copy!(Uint8, u8),
        TensorElementType::Uint16 => copy!(Uint16, u16),
        TensorElementType::Uint32 => copy!(Uint32, u32),
        TensorElementType::Uint64 => copy!(Uint64, u64),
        TensorElementType::Int8 => copy!(Int8, i8),
        TensorElementType::Int16 => copy!(Int16, i16),
        TensorElementType::Int32 => copy!(Int32, i32),
        TensorElementType::Int64 => copy!(Int64, i64),
        TensorElementType::Float16 => copy!(Fp16, half::f16),
        TensorElementType::Bfloat16 => copy!(Bf16, half::bf16),
        TensorElementType::Float32 => copy!(Fp32, f32),
        TensorElementType::Float64 => copy!(Fp64, f64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings()?;
            let bytes = strings.into_iter().map(String::into_bytes).collect();
            (shape.to_vec(), TensorData::Bytes(bytes))
        }
        other => {
            return Err(RuntimeError::UnsupportedType {
                name: "output".to_string(),
                onnx_type: format!("{other:?}"),
            });
        }
    };
    Ok(Tensor::new(shape, data)?)
}
