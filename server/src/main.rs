//! The `sluice-server` binary.

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc malloc: the request path allocates many small,
/// short-lived buffers (see server/Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the command; a failure prints its chain of causes on one line (never a
/// backtrace, whatever `RUST_BACKTRACE` says: the reader is an operator, not
/// a debugger) and exits with status 1.
fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", causes(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined by `: ` as `{:#}` joins them, leaving out
/// a cause that the message before it already ends with (many errors here
/// print their source as part of their own message).
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read model.onnx: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn causes_join_on_one_line_without_repeating_a_quoted_source() {
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let quoted = anyhow::Error::new(Quoting { source: missing() }).context("fetch failed");
        assert_eq!(
            causes(&quoted),
            format!("fetch failed: cannot read model.onnx: {}", missing())
        );
        let plain = anyhow::Error::new(missing()).context("fetch failed");
        assert_eq!(causes(&plain), format!("fetch failed: {}", missing()));
    }
}
