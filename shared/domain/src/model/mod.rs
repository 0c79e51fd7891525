//! Domain types. Each parses its input once, at the edge; holding a value means it is
//! valid.

pub mod bank;
pub mod card;
pub mod ids;
pub mod phone;
pub mod profile;
pub mod purpose;
pub mod region;
pub mod sealed;
pub mod step_up;
pub mod timestamp;
