//! Prints Sluice's CustomResourceDefinitions as YAML, or, with `--out-dir DIR`,
//! writes each to `DIR/<group>_<plural>.yaml` (`make crdgen` writes `crds/`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use sluice_operator::crd::{all, crd_yaml, file_name};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crdgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out_dir = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--out-dir"), Some(dir)) => Some(PathBuf::from(dir)),
        _ => anyhow::bail!("usage: crdgen [--out-dir DIR]"),
    };
    for (index, crd) in all().iter().enumerate() {
        let yaml = crd_yaml(crd).context("rendering a CRD")?;
        match &out_dir {
            Some(dir) => {
                let path = dir.join(file_name(crd));
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None if index == 0 => print!("{yaml}"),
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
