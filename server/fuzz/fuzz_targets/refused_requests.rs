//! A refused request gets its complete 401 over a real connection, whatever its
//! body and however it is framed (within the drain bound): see
//! `sluice_server::fuzz::refusal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_server::fuzz::refusal::refused_request(data);
});
