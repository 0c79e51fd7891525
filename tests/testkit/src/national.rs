//! A national configuration: the shipped one with `n` banks in all, the shipped banks
//! first and generated ones after (`ZAAA`, `ZAAB`, …), for the tests and benchmarks of
//! issue 17 that need hundreds of banks.

use serde_json::{json, Value};

/// The `i`-th generated bank code: `Z` and three letters.
pub fn bank_code(i: usize) -> String {
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8);
    format!("Z{}{}{}", letter(i / 676), letter(i / 26), letter(i))
}

/// The shipped configuration's text with `n` banks (at least the shipped ones), each
/// generated bank's endpoint under `endpoint_base` (`<base>/<code>`).
pub fn config_json(n: usize, endpoint_base: &str) -> String {
    let mut config: Value =
        serde_json::from_str(shared::config::DEFAULT_CONFIG).expect("the shipped config");
    let banks = config["banks"].as_array_mut().expect("a bank list");
    let shipped = banks.len();
    for i in 0..n.saturating_sub(shipped) {
        let code = bank_code(i);
        banks.push(json!({
            "code": code,
            "name": format!("测试银行{i}"),
            "name_en": format!("Test Bank {i}"),
            "service_phone": "95500",
            "endpoint": format!("{endpoint_base}/{}", code.to_lowercase()),
        }));
    }
    config.to_string()
}
