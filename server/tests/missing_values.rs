//! Missing values over REST JSON: `null` and the bare literals `NaN`,
//! `Infinity` and `-Infinity` in floating-point data, refused elsewhere, and
//! non-finite outputs written as `null`, through the real server and ONNX
//! Runtime.

mod common;

use common::{Repository, Server};

/// Posts `body` as it is (it need not be JSON) and returns the status and the
/// JSON answer.
async fn post_text(client: &reqwest::Client, url: &str, body: String) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn null_and_non_finite_literals_reach_float_inputs_and_come_back_as_null() {
    let repository = Repository::new("missing-values")
        .with_model("mlp", "mlp", "")
        .with_model("int64_fp64", "int64_fp64", "");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();

    // One row of the MLP with a NaN (as Python's json writes it), one with a
    // null and one complete: the incomplete rows' outputs are NaN, sent as null.
    let complete: Vec<String> = (0..16).map(|i| format!("{}", i as f32 / 16.0)).collect();
    let mut with_nan = complete.clone();
    with_nan[3] = "NaN".to_string();
    let mut with_null = complete.clone();
    with_null[7] = "null".to_string();
    let rows = [with_nan, with_null, complete].map(|row| format!("[{}]", row.join(", ")));
    let body = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[3,16],"data":[{}]}}]}}"#,
        rows.join(",")
    );
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let (status, answer) = post_text(&client, &url, body).await;
    assert_eq!(status, 200, "{answer}");
    let output = &answer["outputs"][0];
    let data = output["data"].as_array().unwrap();
    let per_row = data.len() / 3;
    assert!(data[..2 * per_row].iter().all(|v| v.is_null()), "{output}");
    assert!(data[2 * per_row..].iter().all(|v| v.is_f64()), "{output}");

    // FP64 infinities pass through the model (f_out is finite arithmetic on f).
    let url = format!("{}/v2/models/int64_fp64/infer", server.http);
    let body = r#"{"inputs":[
        {"name":"i","datatype":"INT64","shape":[1,3],"data":[1,2,3]},
        {"name":"f","datatype":"FP64","shape":[1,3],"data":[Infinity,-Infinity,1.5]}]}"#;
    let (status, answer) = post_text(&client, &url, body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let f_out = answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "f_out")
        .unwrap();
    assert!(
        f_out["data"][0].is_null() && f_out["data"][1].is_null(),
        "{f_out}"
    );
    assert!(f_out["data"][2].is_f64(), "{f_out}");

    // Integer data refuses both spellings, naming the input and the datatype.
    for missing in ["null", "NaN"] {
        let body = format!(
            r#"{{"inputs":[
            {{"name":"i","datatype":"INT64","shape":[1,3],"data":[1,{missing},3]}},
            {{"name":"f","datatype":"FP64","shape":[1,3],"data":[1,2,3]}}]}}"#
        );
        let (status, answer) = post_text(&client, &url, body).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "input 'i': invalid INT64 data: {missing} is only accepted in floating-point data (FP16, BF16, FP32, FP64), not INT64"
            )),
            "{error}"
        );
    }
    // A literal where the protocol wants a string stays malformed.
    let body = r#"{"id":NaN,"inputs":[{"name":"f","datatype":"FP64","shape":[1],"data":[1]}]}"#;
    let (status, answer) = post_text(&client, &url, body.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("malformed inference request"), "{error}");
}
