//! The benchmark's baseline: the simplest correct server one would write with the
//! same parts, axum plus one `ort` session behind a mutex, one `session.run` per
//! request, JSON through `serde_json::Value`. `make bench` measures sluice-server
//! against it; it is not part of the product. `POST /noop` answers `{}` without
//! reading the request: the ceiling of any handler on this HTTP stack.
//!
//! Usage: `naive_server MODEL.onnx PORT`

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use ort::session::Session;
use serde_json::{Value, json};

struct Naive {
    session: Mutex<Session>,
    input_name: String,
    output_name: String,
}

async fn infer(State(naive): State<Arc<Naive>>, Json(body): Json<Value>) -> Json<Value> {
    let input = &body["inputs"][0];
    let shape: Vec<i64> = input["shape"]
        .as_array()
        .map(|dims| dims.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let data: Vec<f32> = input["data"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_f64().map(|x| x as f32))
                .collect()
        })
        .unwrap_or_default();
    let tensor = ort::value::Tensor::from_array((shape, data)).expect("valid input");
    let mut session = naive.session.lock().expect("session lock");
    let outputs = session
        .run(vec![(naive.input_name.as_str(), tensor.into_dyn())])
        .expect("run");
    let (shape, values) = outputs[naive.output_name.as_str()]
        .try_extract_tensor::<f32>()
        .expect("f32 output");
    Json(json!({
        "model_name": "mlp",
        "outputs": [{ "name": naive.output_name, "datatype": "FP32", "shape": shape.to_vec(), "data": values }]
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(port)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: naive_server MODEL.onnx PORT");
    };
    let environment = sluice_server::runtime::environment()?;
    let session = Session::builder(environment)?
        .with_intra_threads(1)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?
        .commit_from_file(&model)?;
    let naive = Arc::new(Naive {
        input_name: session.inputs()[0].name().to_string(),
        output_name: session.outputs()[0].name().to_string(),
        session: Mutex::new(session),
    });
    let app = Router::new()
        .route("/v2/models/mlp/infer", post(infer))
        .route("/noop", post(|| async { "{}" }))
        .with_state(naive);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
