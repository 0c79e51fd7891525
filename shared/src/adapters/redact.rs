//! What dependency errors may say in our logs and errors: their kind, never their text.
//! SNS repeats the phone number it refused; serde messages quote the value they could
//! not read, which from a stored item can be an ID number or a card. The caller logs our
//! own ids (query, user) beside the kind.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// The kind of an AWS SDK failure: where it failed, and the service's error code (a
/// fixed identifier such as `Throttling`, never its message).
pub fn sdk_error<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ConstructionFailure(_) => "request not built".into(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => "timeout".into(),
        SdkError::DispatchFailure(d) if d.is_io() => "connection failed".into(),
        SdkError::DispatchFailure(_) => "request not sent".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ServiceError(s) => format!("service error {}", error_code(s.err().code())),
        _ => "SDK error".into(),
    }
}

/// A service's error code if it looks like one (it is the service's text after all).
fn error_code(code: Option<&str>) -> &str {
    code.filter(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    })
    .unwrap_or("(no code)")
}

/// A serde_dynamo failure without the value it quotes: only a field name of our own
/// records (a missing one) survives.
pub fn serde_error(e: &serde_dynamo::Error) -> String {
    let msg = e.to_string();
    let missing = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .filter(|f| {
            !f.is_empty() && f.len() <= 40 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
    if let Some(f) = missing {
        return format!("missing attribute `{f}`");
    }
    for (prefix, kind) in [
        ("unknown field", "an unknown attribute"),
        ("unknown variant", "a value outside its allowed set"),
        ("invalid type", "an attribute of the wrong type"),
        ("invalid length", "an attribute of the wrong length"),
    ] {
        if msg.starts_with(prefix) {
            return kind.into();
        }
    }
    "an attribute that does not read as its field".into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_sns::operation::publish::PublishError;

    use super::*;
    use crate::adapters::dynamo::from_item;
    use crate::model::profile::UserProfile;
    use crate::ports::StoreError;
    use crate::records::LegRecord;

    const ID_NUMBER: &str = "11010519491231002X";

    #[test]
    fn an_sns_refusal_is_logged_by_its_code_not_its_text() {
        let refusal = PublishError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameter")
                .message("Invalid parameter: PhoneNumber Reason: +8613800138000 is not valid")
                .build(),
        );
        let e = SdkError::<_, ()>::service_error(refusal, ());
        assert_eq!(sdk_error(&e), "service error InvalidParameter");
        let odd = PublishError::generic(ErrorMetadata::builder().code("+8613800138000 x").build());
        let e = SdkError::<_, ()>::service_error(odd, ());
        assert!(!sdk_error(&e).contains("138"), "{}", sdk_error(&e));
        let e = SdkError::<PublishError, ()>::timeout_error("after 3 s to +8613800138000");
        assert_eq!(sdk_error(&e), "timeout");
    }

    fn profile_item() -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.into());
        [
            ("user_id", s("u1")),
            ("real_name_verified", AttributeValue::Bool(true)),
            ("name", s("张三")),
            ("id_number", s(ID_NUMBER)),
            ("phone", s("+8613800138000")),
            ("region", s("31")),
            ("payment_password_hash", s("hash")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// serde quotes an unknown variant, and serde_dynamo a number it could not parse.
    #[test]
    fn a_stored_item_that_does_not_read_is_reported_without_its_values() {
        let cases = [
            ("state", AttributeValue::S(ID_NUMBER.into())),
            ("attempts", AttributeValue::N("6222021234567891".into())),
        ];
        for (field, value) in cases {
            let item: HashMap<String, AttributeValue> = [(field.to_owned(), value)].into();
            let raw = serde_dynamo::from_item::<_, LegRecord>(item.clone())
                .unwrap_err()
                .to_string();
            assert!(
                raw.contains("1101") || raw.contains("6222"),
                "the case quotes: {raw}"
            );
            let Err(StoreError::Corrupt(said)) = from_item::<LegRecord>(item) else {
                panic!("{field}: a leg of wrong values reads");
            };
            assert!(
                !said.contains("1101") && !said.contains("6222"),
                "{raw} → {said}"
            );
        }

        let mut item = profile_item();
        item.remove("phone");
        let Err(StoreError::Corrupt(said)) = from_item::<UserProfile>(item) else {
            panic!("a profile without a phone reads");
        };
        assert_eq!(said, "missing attribute `phone`");
    }
}
