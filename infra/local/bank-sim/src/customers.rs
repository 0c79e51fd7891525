//! Deterministic synthetic customers: the cards a person holds at a bank follow from
//! SHA-256 of (ID number, bank code) alone, so the same person has the same cards on
//! every run and in every process. Numbers are Luhn-valid with issuer prefixes of the
//! bank; only [`MaskedCard`]s (first 4 + last 4) are meant to leave the simulator.

use std::fmt;

use sha2::{Digest, Sha256};
use shared::model::card::{CardKind, FourDigits, MaskedCard};

/// An issuer prefix (BIN) and the length of the numbers issued under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer {
    pub bin: &'static str,
    pub len: usize,
}

const fn i(bin: &'static str, len: usize) -> Issuer {
    Issuer { bin, len }
}

/// (bank, debit prefixes, credit prefixes): plausible public BINs of each bank
/// (synthetic data: close enough to look real, not an authoritative BIN table).
type IssuerRow = (&'static str, &'static [Issuer], &'static [Issuer]);
static ISSUERS: &[IssuerRow] = &[
    (
        "ICBC",
        &[i("622202", 19), i("621226", 19)],
        &[i("625330", 16), i("427020", 16)],
    ),
    (
        "ABC",
        &[i("622848", 19), i("622845", 19)],
        &[i("622836", 16)],
    ),
    (
        "BOC",
        &[i("621661", 19), i("621785", 19)],
        &[i("625907", 16), i("438088", 16)],
    ),
    (
        "CCB",
        &[i("621700", 19), i("436742", 19)],
        &[i("436728", 16), i("622166", 16)],
    ),
    (
        "BOCOM",
        &[i("622262", 19)],
        &[i("521899", 16), i("622258", 16)],
    ),
    (
        "PSBC",
        &[i("621799", 19), i("622188", 19)],
        &[i("622812", 16)],
    ),
    (
        "CMB",
        &[i("621483", 16), i("622588", 16)],
        &[i("622575", 16), i("439188", 16)],
    ),
    (
        "SPDB",
        &[i("622521", 16), i("621792", 19)],
        &[i("622276", 16)],
    ),
    (
        "CITIC",
        &[i("621771", 19), i("622690", 16)],
        &[i("433670", 16)],
    ),
    (
        "CEB",
        &[i("622660", 19), i("621489", 19)],
        &[i("625975", 16)],
    ),
    (
        "HXB",
        &[i("622630", 16), i("623021", 19)],
        &[i("622637", 16)],
    ),
    (
        "CMBC",
        &[i("622622", 16), i("621691", 16)],
        &[i("622617", 16), i("545392", 16)],
    ),
    (
        "CGB",
        &[i("621462", 19), i("622568", 19)],
        &[i("622555", 16), i("528931", 16)],
    ),
    (
        "PAB",
        &[i("622155", 16), i("623058", 19)],
        &[i("625360", 16)],
    ),
    (
        "CIB",
        &[i("622909", 19)],
        &[i("451289", 16), i("622901", 16)],
    ),
    ("CZB", &[i("621268", 19)], &[i("622309", 16)]),
];

/// Generic UnionPay prefixes for a bank code not in the table.
static FALLBACK: IssuerRow = ("", &[i("621000", 19)], &[i("625000", 16)]);

/// Debit and credit prefixes of a bank.
pub fn issuers(bank: &str) -> (&'static [Issuer], &'static [Issuer]) {
    let row = ISSUERS.iter().find(|r| r.0 == bank).unwrap_or(&FALLBACK);
    (row.1, row.2)
}

/// A synthetic card with its full number. No `Debug` of the number: printing shows the
/// masked form only.
#[derive(Clone, PartialEq, Eq)]
pub struct SyntheticCard {
    pub kind: CardKind,
    number: String,
}

impl SyntheticCard {
    pub fn masked(&self) -> MaskedCard {
        let n = &self.number;
        MaskedCard {
            kind: self.kind,
            first4: FourDigits::parse(&n[..4]).expect("digits"),
            last4: FourDigits::parse(&n[n.len() - 4..]).expect("digits"),
        }
    }

    /// The full number: only for the deliberate `leak_card_number` behaviour and tests.
    pub fn full_number(&self) -> &str {
        &self.number
    }
}

impl fmt::Debug for SyntheticCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.kind, self.masked())
    }
}

/// Pseudo-random bytes from SHA-256 in counter mode over a seed.
struct Stream {
    seed: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    pos: usize,
}

impl Stream {
    fn new(parts: &[&str]) -> Self {
        let mut seed = b"bank-sim/customers/v1".to_vec();
        for p in parts {
            seed.push(0);
            seed.extend_from_slice(p.as_bytes());
        }
        Self {
            seed,
            counter: 0,
            block: [0; 32],
            pos: 32,
        }
    }

    fn byte(&mut self) -> u8 {
        if self.pos == 32 {
            let mut h = Sha256::new();
            h.update(&self.seed);
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.pos = 0;
        }
        self.pos += 1;
        self.block[self.pos - 1]
    }

    /// Uniform in `0..n` (n ≤ 256; rejection sampling keeps it unbiased).
    fn below(&mut self, n: u32) -> u32 {
        debug_assert!((1..=256).contains(&n));
        let limit = 256 - 256 % n;
        loop {
            let b = u32::from(self.byte());
            if b < limit {
                return b % n;
            }
        }
    }
}

/// The Luhn check digit for `payload` (all digits but the last).
pub fn luhn_check_digit(payload: &str) -> u8 {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(idx, b)| {
            let d = u32::from(b - b'0');
            if idx % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Is `number` (digits only) Luhn-valid?
pub fn luhn_valid(number: &str) -> bool {
    number.len() >= 2
        && number.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&number[..number.len() - 1])
            == number.as_bytes()[number.len() - 1] - b'0'
}

fn number_under(issuer: Issuer, s: &mut Stream) -> String {
    let mut n = String::with_capacity(issuer.len);
    n.push_str(issuer.bin);
    while n.len() < issuer.len - 1 {
        n.push(char::from(b'0' + s.below(10) as u8));
    }
    let check = luhn_check_digit(&n);
    n.push(char::from(b'0' + check));
    n
}

/// How many cards a person holds at a bank: 0 (33 %), 1 (30 %), 2 (25 %), 3 (12 %).
fn card_count(s: &mut Stream) -> usize {
    match s.below(100) {
        0..=32 => 0,
        33..=62 => 1,
        63..=87 => 2,
        _ => 3,
    }
}

/// The cards `id_number` holds at `bank`, in a fixed order. Masked forms are distinct
/// within one bank.
pub fn cards(id_number: &str, bank: &str) -> Vec<SyntheticCard> {
    let mut s = Stream::new(&[id_number, bank]);
    let (debit, credit) = issuers(bank);
    let count = card_count(&mut s);
    let mut out: Vec<SyntheticCard> = Vec::with_capacity(count);
    while out.len() < count {
        // 60 % debit, 40 % credit.
        let (kind, list) = if s.below(10) < 6 {
            (CardKind::Debit, debit)
        } else {
            (CardKind::Credit, credit)
        };
        let issuer = list[s.below(list.len() as u32) as usize];
        let card = SyntheticCard {
            kind,
            number: number_under(issuer, &mut s),
        };
        if !out.iter().any(|c| c.masked() == card.masked()) {
            out.push(card);
        }
    }
    out
}

/// What the bank reports: the masked cards.
pub fn masked_cards(id_number: &str, bank: &str) -> Vec<MaskedCard> {
    cards(id_number, bank)
        .iter()
        .map(SyntheticCard::masked)
        .collect()
}

/// The bank's opaque reference of one card: stable per (bank, card), letters only, so it
/// carries no digit of the number (a hash of it, not an encoding).
pub fn card_ref(bank: &str, card: &SyntheticCard) -> String {
    let digest = Sha256::digest(format!("bank-sim/card-ref/v1\n{bank}\n{}", card.number));
    let letters: String = digest[..20]
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    format!("cr_{letters}")
}

/// A `card_ref` that breaks the protocol: the full number, grouped by dashes (no run of
/// 6 digits, so only a check for card numbers catches it).
pub fn card_ref_with_digits(card: &SyntheticCard) -> String {
    let groups: Vec<&str> = card
        .number
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("digits"))
        .collect();
    format!("cr-{}", groups.join("-"))
}

/// A full 16-digit number for the `leak_card_number` behaviour: the person's own
/// 16-digit card at the bank if there is one, else a synthetic one under the bank's
/// credit prefix.
pub fn leakable_number(id_number: &str, bank: &str) -> String {
    if let Some(c) = cards(id_number, bank)
        .into_iter()
        .find(|c| c.number.len() == 16)
    {
        return c.number;
    }
    let mut s = Stream::new(&[id_number, bank, "leak"]);
    let (_, credit) = issuers(bank);
    let issuer = credit
        .iter()
        .copied()
        .find(|i| i.len == 16)
        .unwrap_or(i("625000", 16));
    number_under(issuer, &mut s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const BANKS: [&str; 16] = [
        "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
        "CGB", "PAB", "CIB", "CZB",
    ];

    fn person(n: usize) -> String {
        format!("3101011990{:07}X", n)
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid("4111111111111112"));
        assert_eq!(luhn_check_digit("7992739871"), 3);
    }

    #[test]
    fn generated_numbers_are_luhn_valid_with_the_banks_prefixes() {
        let mut lengths = BTreeMap::new();
        for n in 0..300 {
            for bank in BANKS {
                let (debit, credit) = issuers(bank);
                for c in cards(&person(n), bank) {
                    let num = c.full_number();
                    assert!(luhn_valid(num), "{bank} {c:?}");
                    assert!(num.len() == 16 || num.len() == 19);
                    let list = if c.kind == CardKind::Debit {
                        debit
                    } else {
                        credit
                    };
                    let issuer = list
                        .iter()
                        .find(|i| num.starts_with(i.bin))
                        .expect("prefix");
                    assert_eq!(issuer.len, num.len());
                    assert_eq!(c.masked().first4.as_str(), &num[..4]);
                    assert_eq!(c.masked().last4.as_str(), &num[num.len() - 4..]);
                    *lengths.entry(num.len()).or_insert(0) += 1;
                }
                assert!(luhn_valid(&leakable_number(&person(n), bank)));
                assert_eq!(leakable_number(&person(n), bank).len(), 16);
            }
        }
        assert!(lengths[&16] > 100 && lengths[&19] > 100, "{lengths:?}");
    }

    #[test]
    fn every_prefix_table_is_well_formed() {
        for bank in BANKS.iter().chain(&["UNKNOWN"]) {
            let (debit, credit) = issuers(bank);
            assert!(!debit.is_empty() && !credit.is_empty());
            for i in debit.iter().chain(credit) {
                assert_eq!(i.bin.len(), 6);
                assert!(i.bin.bytes().all(|b| b.is_ascii_digit()));
                assert!(i.len == 16 || i.len == 19);
            }
        }
    }

    #[test]
    fn same_person_same_cards() {
        for n in 0..50 {
            for bank in BANKS {
                assert_eq!(cards(&person(n), bank), cards(&person(n), bank));
                assert_eq!(
                    leakable_number(&person(n), bank),
                    leakable_number(&person(n), bank)
                );
            }
        }
        // Different people or banks differ (overwhelmingly likely).
        let all = |p: &str| BANKS.map(|b| masked_cards(p, b));
        assert_ne!(all(&person(1)), all(&person(2)));
        // A pinned value guards against accidental changes to the derivation.
        let pinned: Vec<String> = BANKS
            .iter()
            .flat_map(|b| {
                masked_cards("110101199003074514", b)
                    .into_iter()
                    .map(move |c| (b, c))
            })
            .map(|(b, c)| format!("{b} {:?} {c}", c.kind))
            .collect();
        assert_eq!(
            pinned, PINNED,
            "the derivation changed: update PINNED only on purpose"
        );
    }

    const PINNED: &[&str] = &[
        "ICBC Debit 6222 **** **** 3706",
        "ICBC Debit 6222 **** **** 9477",
        "ABC Debit 6228 **** **** 8275",
        "SPDB Debit 6217 **** **** 6020",
        "SPDB Debit 6217 **** **** 0349",
        "CITIC Debit 6226 **** **** 3534",
        "CEB Credit 6259 **** **** 4756",
        "CEB Credit 6259 **** **** 5047",
        "CEB Debit 6226 **** **** 2510",
        "HXB Debit 6226 **** **** 3404",
    ];

    #[test]
    fn distribution_over_a_thousand_people() {
        let people = 1000;
        for bank in BANKS {
            let mut none = 0;
            let (mut debit, mut credit) = (0, 0);
            let mut counts = [0usize; 4];
            for n in 0..people {
                let cs = cards(&person(n), bank);
                counts[cs.len()] += 1;
                if cs.is_empty() {
                    none += 1;
                }
                for c in &cs {
                    match c.kind {
                        CardKind::Debit => debit += 1,
                        CardKind::Credit => credit += 1,
                    }
                }
            }
            assert!(
                (250..=420).contains(&none),
                "{bank}: {none} of {people} have no card"
            );
            assert!(counts.iter().all(|&c| c > 50), "{bank}: {counts:?}");
            assert!(
                debit > credit && credit > 200,
                "{bank}: {debit} debit, {credit} credit"
            );
        }
    }
}
