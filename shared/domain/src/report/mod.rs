//! Reports: built once from the legs, sealed, kept 7 days, shown after step-up.

pub mod aggregate;
pub mod body;
pub mod crypto;
pub mod dispute;
pub mod paging;
pub mod view;

#[cfg(test)]
mod tests;
