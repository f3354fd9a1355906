//! The operator binary as a user meets it when something is wrong: one clear line
//! naming the cause, a non-zero exit, and no backtrace even with RUST_BACKTRACE set.

use std::process::Command;

#[test]
fn a_start_up_error_is_one_line_without_a_backtrace() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
        .env("KUBECONFIG", "/nonexistent/sluice-kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env("SLUICE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("sluice-operator: "), "{text}");
    assert!(text.contains("sluice-kubeconfig"), "names the file: {text}");
    assert!(!text.to_lowercase().contains("backtrace"), "{text}");
}
