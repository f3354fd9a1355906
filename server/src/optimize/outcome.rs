//! What an optimization did to each node it looked at, for the report.

use serde::Serialize;

use super::onnx::NodeProto;

/// What happened to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Its weights are INT8 now.
    Quantized,
    /// It computes in FP16 now.
    Converted,
    /// It was left as it was; `detail` says why.
    Kept,
}

/// One node the optimization looked at.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeOutcome {
    /// The node's name (or its first output's, when it has none).
    pub node: String,
    /// Its operator, e.g. `MatMul`.
    pub op: String,
    /// What happened to it.
    pub outcome: Outcome,
    /// What changed, or why it was kept.
    pub detail: String,
}

impl NodeOutcome {
    /// `node` changed as `outcome` says, `detail` says how.
    pub fn changed(node: &NodeProto, outcome: Outcome, detail: String) -> NodeOutcome {
        NodeOutcome {
            node: node_name(node),
            op: node.op_type.clone().unwrap_or_default(),
            outcome,
            detail,
        }
    }

    /// `node` was left as it was, for `reason`.
    pub fn kept(node: &NodeProto, reason: String) -> NodeOutcome {
        NodeOutcome::changed(node, Outcome::Kept, reason)
    }
}

/// The node's name, or its first output's when it has none.
pub fn node_name(node: &NodeProto) -> String {
    node.name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| node.output.first().cloned().unwrap_or_default())
}
