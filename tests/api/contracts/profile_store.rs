//! `ProfileStore`: a stored profile reads back as written, a user without one is `None`,
//! and an item that does not parse is a `Corrupt` error that quotes none of it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::BoxFuture;
use shared::adapters::dynamo::DynamoStore;
use shared::adapters::memory::MemoryStore;
use shared::model::ids::UserId;
use shared::model::profile::UserProfile;
use shared::ports::{ProfileStore, StoreError};
use testkit::seed;

use super::{contract, World};

contract!(
    a_stored_profile_reads_back_as_written,
    a_user_without_a_profile_is_none,
    a_profile_that_does_not_parse_is_corrupt_and_quotes_none_of_it,
    profiles_read_together_are_what_reading_them_one_by_one_gives,
);

/// How a case writes the users table (which the service only reads).
pub trait Profiles {
    fn put_profile(&self, profile: UserProfile) -> BoxFuture<'_, ()>;
    /// Stores, for `user`, an item whose ID number fails its check character.
    fn put_corrupt_profile(&self, user: UserId) -> BoxFuture<'_, ()>;
}

/// A stored ID number whose check character is wrong (the right one is `X`).
const BAD_ID_NUMBER: &str = "110105194912310021";

impl Profiles for World<MemoryStore> {
    fn put_profile(&self, profile: UserProfile) -> BoxFuture<'_, ()> {
        self.store.insert_profile(profile);
        Box::pin(async {})
    }

    fn put_corrupt_profile(&self, user: UserId) -> BoxFuture<'_, ()> {
        self.store.corrupt_profile(&user);
        Box::pin(async {})
    }
}

impl Profiles for World<DynamoStore> {
    fn put_profile(&self, profile: UserProfile) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let item = shared::adapters::dynamo::to_item(&profile, &[]).unwrap();
            self.put_item("UsersTable", item).await;
        })
    }

    fn put_corrupt_profile(&self, user: UserId) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut item: HashMap<String, AttributeValue> = shared::adapters::dynamo::to_item(
                &seed::profile(user.as_str(), 7, true, "31"),
                &[],
            )
            .unwrap();
            item.insert("id_number".into(), AttributeValue::S(BAD_ID_NUMBER.into()));
            self.put_item("UsersTable", item).await;
        })
    }
}

fn new_user() -> UserId {
    UserId::parse(&format!(
        "u-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    ))
    .unwrap()
}

async fn a_stored_profile_reads_back_as_written<S>(w: &World<S>)
where
    S: ProfileStore,
    World<S>: Profiles,
{
    let user = new_user();
    let written = seed::profile(user.as_str(), 42, true, "31");
    w.put_profile(written.clone()).await;
    let read = w.store.profile(&user).await.unwrap().expect("the profile");
    // `UserProfile` has no `PartialEq` (it holds the ID number): compare field by field.
    assert_eq!(read.user_id, written.user_id);
    assert_eq!(read.real_name_verified, written.real_name_verified);
    assert_eq!(read.name, written.name);
    assert_eq!(read.id_number, written.id_number);
    assert_eq!(read.phone, written.phone);
    assert_eq!(read.region, written.region);
    assert_eq!(read.payment_password_hash, written.payment_password_hash);
    // Another user's read is not this profile.
    assert!(w.store.profile(&new_user()).await.unwrap().is_none());
}

async fn a_user_without_a_profile_is_none<S>(w: &World<S>)
where
    S: ProfileStore,
    World<S>: Profiles,
{
    assert!(w.store.profile(&new_user()).await.unwrap().is_none());
}

async fn a_profile_that_does_not_parse_is_corrupt_and_quotes_none_of_it<S>(w: &World<S>)
where
    S: ProfileStore,
    World<S>: Profiles,
{
    let user = new_user();
    w.put_corrupt_profile(user.clone()).await;
    match w.store.profile(&user).await {
        Err(StoreError::Corrupt(said)) => {
            // The error is logged: no identity data in it.
            assert!(!said.contains("11010519"), "{said}");
            assert!(!said.contains("138"), "{said}");
        }
        other => panic!("expected a corrupt-data error, got {other:?}"),
    }
    // Other users' profiles still read.
    let fine = new_user();
    w.put_profile(seed::profile(fine.as_str(), 43, true, "31"))
        .await;
    assert!(w.store.profile(&fine).await.unwrap().is_some());
}

/// `profiles` (the sender's one read for a batch, decision 148): in order, a repeated
/// user, a user without a profile, and a corrupt profile that is its own entry's error
/// only, past one `BatchGetItem`'s 100 keys.
async fn profiles_read_together_are_what_reading_them_one_by_one_gives<S>(w: &World<S>)
where
    S: ProfileStore,
    World<S>: Profiles,
{
    let stored: Vec<UserId> = (0..105).map(|_| new_user()).collect();
    for (i, u) in stored.iter().enumerate() {
        w.put_profile(seed::profile(u.as_str(), 100 + i as u32, true, "31"))
            .await;
    }
    let corrupt = new_user();
    w.put_corrupt_profile(corrupt.clone()).await;
    let absent = new_user();
    let mut users = stored.clone();
    users.extend([absent, corrupt, stored[3].clone()]);
    let read = w.store.profiles(&users).await;
    assert_eq!(read.len(), users.len());
    for (u, r) in stored.iter().zip(&read) {
        let p = r.as_ref().unwrap().as_ref().expect("a stored profile");
        assert_eq!(&p.user_id, u);
        let alone = w.store.profile(u).await.unwrap().unwrap();
        assert_eq!(p.id_number, alone.id_number);
    }
    assert!(read[105].as_ref().unwrap().is_none(), "no profile");
    match &read[106] {
        Err(StoreError::Corrupt(said)) => assert!(!said.contains("11010519"), "{said}"),
        other => panic!(
            "expected a corrupt-data error, got {:?}",
            other.as_ref().map(|p| p.is_some())
        ),
    }
    let again = read[107].as_ref().unwrap().as_ref().unwrap();
    assert_eq!(again.user_id, stored[3]);
    assert!(w.store.profiles(&[]).await.is_empty());
}
