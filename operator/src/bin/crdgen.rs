//! Prints the InferenceService CustomResourceDefinition as YAML (`make crdgen`
//! writes it to `crds/`).

use std::process::ExitCode;

use kube::CustomResourceExt;
use sluice_operator::crd::InferenceService;

fn main() -> ExitCode {
    match sluice_operator::crd::crd_yaml(&InferenceService::crd()) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}
