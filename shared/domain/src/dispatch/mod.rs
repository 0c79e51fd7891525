//! Fan-out of a query to its banks and the banks' callbacks.

pub mod callback;
pub mod client;
pub mod fanout;
pub mod secrets;

#[cfg(test)]
mod tests;
