//! Provider adapters: build upstream requests, extract usage, classify errors. One module per
//! wire format; no policy and no I/O decisions live here.

pub mod anthropic;
