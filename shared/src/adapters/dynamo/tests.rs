//! How the adapter reads items other systems write.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::model::profile::UserProfile;

#[test]
fn a_profile_item_with_attributes_of_the_user_system_still_reads() {
    let s = |v: &str| AttributeValue::S(v.into());
    let mut item: std::collections::HashMap<String, AttributeValue> = [
        ("user_id", s("u1")),
        ("real_name_verified", AttributeValue::Bool(true)),
        ("name", s("张三")),
        ("id_number", s("11010519491231002X")),
        ("phone", s("+8613800138000")),
        ("region", s("31")),
        ("payment_password_hash", s("$argon2id$v=19$...")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Added by the user system one day.
    item.insert("nickname".into(), s("小张"));
    item.insert(
        "preferences".into(),
        AttributeValue::M([("lang".to_owned(), s("zh"))].into()),
    );
    let profile: UserProfile = serde_dynamo::from_item(item.clone()).unwrap();
    assert_eq!(profile.user_id.as_str(), "u1");
    assert_eq!(profile.region.to_string(), "31");
    // What we need must still be there.
    item.remove("phone");
    assert!(serde_dynamo::from_item::<_, UserProfile>(item).is_err());
}
