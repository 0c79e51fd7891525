//! Seeded users for the local stack and the tests.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::Datelike;
use shared::model::ids::UserId;
use shared::model::phone::PhoneNumber;
use shared::model::profile::{IdNumber, UserProfile};
use shared::model::region::RegionCode;
use shared::records::UserState;

/// Payment password of every seeded user.
pub const PAYMENT_PASSWORD: &str = "135790";

pub struct TableRefs {
    pub main: String,
    pub users: String,
}

impl TableRefs {
    pub fn from_prefix(prefix: &str) -> Self {
        Self {
            main: format!("{prefix}CardLookupTable"),
            users: format!("{prefix}UsersTable"),
        }
    }
}

pub struct SeedUser {
    pub profile: UserProfile,
    pub description: &'static str,
    /// Payment password locked for 24 hours from seeding.
    pub locked: bool,
}

/// A valid 18-character ID number derived from `n` (region 310101; the birth date and
/// sequence number spread 18 million values of `n` over distinct numbers).
pub fn id_number(n: u32) -> IdNumber {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("a valid date")
        + chrono::TimeDelta::days(i64::from(n % 18_000));
    let body = format!(
        "310101{:04}{:02}{:02}{:03}",
        born.year(),
        born.month(),
        born.day(),
        (n / 18_000) % 1000
    );
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    IdNumber::parse(&format!("{body}{check}")).expect("constructed with its check character")
}

fn password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| shared::security::password::hash(PAYMENT_PASSWORD))
}

/// A profile; `n` makes the phone number and ID number distinct.
pub fn profile(user_id: &str, n: u32, real_name: bool, region: &str) -> UserProfile {
    UserProfile {
        user_id: UserId::parse(user_id).expect("a valid seed user id"),
        real_name_verified: real_name,
        name: "张三".into(),
        id_number: id_number(n),
        phone: PhoneNumber::parse(&format!("+86138{:08}", n % 100_000_000))
            .expect("a valid seed phone"),
        region: RegionCode::parse(region).expect("a valid seed region"),
        payment_password_hash: password_hash().to_owned(),
    }
}

pub fn demo_users() -> Vec<SeedUser> {
    vec![
        SeedUser {
            profile: profile("demo-user", 1, true, "31"),
            description: "real-name user in Shanghai (pilot region)",
            locked: false,
        },
        SeedUser {
            profile: profile("not-real-name", 2, false, "31"),
            description: "real-name verification not done",
            locked: false,
        },
        SeedUser {
            profile: profile("outside-pilot", 3, true, "44"),
            description: "real-name user in Guangdong (not a pilot region)",
            locked: false,
        },
        SeedUser {
            profile: profile("locked-password", 4, true, "11"),
            description: "real-name user in Beijing with the payment password locked",
            locked: true,
        },
    ]
}

/// Writes the profile and a fresh state (no active query, no cooldown; the lock for a
/// locked user), overwriting what was there: re-seeding makes the demo users usable
/// again.
pub async fn put_user(
    client: &Client,
    tables: &TableRefs,
    user: &SeedUser,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let item: std::collections::HashMap<String, AttributeValue> =
        serde_dynamo::to_item(&user.profile).map_err(|e| e.to_string())?;
    client
        .put_item()
        .table_name(&tables.users)
        .set_item(Some(item))
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    {
        let state = UserState {
            version: 1,
            password_locked_until: user.locked.then(|| now + chrono::TimeDelta::hours(24)),
            ..Default::default()
        };
        let item = shared::adapters::dynamo::to_item(
            &state,
            &[
                (
                    "pk",
                    shared::adapters::dynamo::s(shared::adapters::dynamo::user_pk(
                        &user.profile.user_id,
                    )),
                ),
                ("sk", shared::adapters::dynamo::s("STATE")),
                ("entity", shared::adapters::dynamo::s("USER_STATE")),
            ],
        )
        .map_err(|e| e.to_string())?;
        client
            .put_item()
            .table_name(&tables.main)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    }
    Ok(())
}
