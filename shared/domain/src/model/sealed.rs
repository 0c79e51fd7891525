//! A sealed envelope as stored: card data only the view-report function can open. The
//! sealing and opening (HPKE) are `report::crypto`'s; this is the data alone.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Identifies the key pair (rotation); bound into the envelope too.
    pub key_id: String,
    /// Base64 HPKE encapsulated key (the sender's ephemeral X25519 public key).
    pub enc: String,
    /// Base64 ciphertext and tag.
    pub ciphertext: String,
}
