//! The `sluice-server` binary.

fn main() -> anyhow::Result<()> {
    sluice_server::cli::run()
}
