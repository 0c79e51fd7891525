//! Fan-out of a query to its banks and the banks' callbacks: planning into the inquiry
//! queue, sending through each bank's gate, and the bank protocol itself.

pub mod callback;
pub mod client;
pub mod fanout;
pub mod gate;
pub mod planner;
pub mod queue;
pub mod secrets;
pub mod sender;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod sender_tests;
