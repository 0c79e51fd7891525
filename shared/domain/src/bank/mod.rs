//! The bank protocol (design brief section 4): signed inquiries out, signed answers in.

pub mod answer;
pub mod card_number;
pub mod endpoint;
pub mod retry;
pub mod signing;
