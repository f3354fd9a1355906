//! Every parser untrusted request bytes reach (REST JSON and binary bodies, gRPC
//! messages, credentials, paths, the API key file): none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_server::fuzz::request_parsers(data);
});
