//! Simulator of the participating banks (design brief sections 4 and 5): one process
//! serving every bank at `/banks/{code}`, deterministic synthetic customers, our
//! signatures verified and its own answers signed, behaviour configurable per bank and
//! per person, and an admin API that tells tests the ground truth.

pub mod behaviour;
pub mod customers;
pub mod disputes;
pub mod load;
pub mod secrets;
pub mod server;
pub mod traffic;

#[cfg(test)]
mod http_tests;
