//! The in-memory test network is `wisp::testnet` (src/testnet/), shared
//! with the fuzz bodies and the benchmark; the tests reach it here.
#![allow(dead_code, unused_imports)]

pub use wisp::testnet::*;
