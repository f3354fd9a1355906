//! The `sluice-server` binary.

/// mimalloc rather than glibc malloc: the request path allocates many small,
/// short-lived buffers (see server/Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    sluice_server::cli::run()
}
