//! Fan-out of a query to its banks and the banks' callbacks: planning into the inquiry
//! queue, sending through each bank's gate, and the bank protocol itself.

pub mod callback;
pub mod client;
pub mod dispute;
pub mod fanout;
pub mod gate;
#[cfg(any(test, feature = "test-util"))]
pub mod gate_contract;
pub mod planner;
pub mod queue;
pub mod secrets;
pub mod sender;

#[cfg(test)]
mod sender_tests;
#[cfg(test)]
mod tests;
