//! A refused request gets its complete 401 over a real connection, whatever its
//! body and however it is framed (within the drain bound): see
//! `sluice_server::fuzz::refusal`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // libFuzzer's `main` replaces Rust's, which ignores SIGPIPE. Without this,
        // the first write to a connection whose peer has gone (the refusing server
        // answering a client that already has its 401 and left, or a client
        // sending to a server that closed) kills the fuzzer with signal 13 and no
        // input saved. Ignored, as in the real server, the write fails with EPIPE.
        // SAFETY: called once, before any thread of the target exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    },
    |data: &[u8]| {
        sluice_server::fuzz::refusal::refused_request(data);
    }
);
