//! Integration tests of recall-data: the real MovieLens layouts (when the shared copies are
//! present) and a corpus of bad inputs, each with the exact failure asserted.

mod bad_input;
mod fuzz_regressions;
mod movielens;
mod partitioned;
