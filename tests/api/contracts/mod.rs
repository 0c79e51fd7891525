//! One contract per port, each run on both implementations.
mod submission_store;
