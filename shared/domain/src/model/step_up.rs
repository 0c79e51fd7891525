//! How a person proved it was them for one sensitive step (viewing or deleting a
//! report): an SMS code or a face check. Kept in the view log.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepUpMethod {
    Sms,
    Face,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_names_are_sms_and_face() {
        assert_eq!(serde_json::to_value(StepUpMethod::Sms).unwrap(), "SMS");
        assert_eq!(serde_json::to_value(StepUpMethod::Face).unwrap(), "FACE");
    }
}
