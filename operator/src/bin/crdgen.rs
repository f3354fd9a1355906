//! Prints the InferenceService CustomResourceDefinition as YAML (`make crdgen`
//! writes it to `crds/`).

use kube::CustomResourceExt;
use sluice_operator::crd::InferenceService;

fn main() -> anyhow::Result<()> {
    print!(
        "{}",
        sluice_operator::crd::crd_yaml(&InferenceService::crd())?
    );
    Ok(())
}
