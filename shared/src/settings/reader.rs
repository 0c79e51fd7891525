//! Reads one plain struct from environment variables: a field `table_name` is the
//! variable `TABLE_NAME`. The same struct gives the list of names it reads
//! ([`fields_of`]), so what the template sets can be checked against it.
//!
//! Not `envy`: its parse errors quote the value ("... while parsing value '…' provided
//! by BANK_TIMEOUT_MS"), which for a secret is a leak into the start-up log, and its
//! deserializer is private, so it cannot be wrapped to name the variable instead. This
//! is serde's own map deserializer with an error type that has nowhere to keep a value.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, value::MapDeserializer, DeserializeOwned, Expected, Unexpected};

/// A start-up variable that is missing or invalid. Names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{var} must be set")]
    Missing { var: String },
    #[error("{var} or {var}_FILE must be set")]
    MissingEither { var: String },
    #[error("{var} is not valid: {expected}")]
    Invalid { var: String, expected: String },
    #[error("{var}_FILE={path}: {message}")]
    File {
        var: String,
        path: PathBuf,
        message: String,
    },
    /// A settings struct the reader cannot read (a programming error, caught by tests).
    #[error("settings {0} is not a plain struct of named fields")]
    Shape(&'static str),
}

/// A group of variables read together: a plain `Deserialize` struct (no `flatten`, no
/// `deny_unknown_fields`: the process environment holds much else).
pub trait EnvPart: DeserializeOwned {
    /// Fields that may instead be given as `NAME_FILE`, a path to a file holding the
    /// value (keys and secrets, as Secrets Manager or a local key directory supply them).
    const FROM_FILE: &'static [&'static str] = &[];
    /// False for variables a deployment sets only for a while (a key being retired), so
    /// the template does not carry them.
    const IN_TEMPLATE: bool = true;
}

/// One variable a function's start-up reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    /// The template sets it (not a `_FILE` alternative, not a temporary one).
    pub in_template: bool,
}

/// Every variable `P` reads: its fields upper-cased, then the `_FILE` alternatives.
pub fn vars_of<P: EnvPart>() -> Result<Vec<Var>, EnvError> {
    let fields = fields_of::<P>()?;
    let mut out: Vec<Var> = fields
        .iter()
        .map(|f| Var {
            name: f.to_ascii_uppercase(),
            in_template: P::IN_TEMPLATE,
        })
        .collect();
    for f in P::FROM_FILE {
        if !fields.contains(f) {
            return Err(EnvError::Shape(std::any::type_name::<P>()));
        }
        out.push(Var {
            name: format!("{}_FILE", f.to_ascii_uppercase()),
            in_template: false,
        });
    }
    Ok(out)
}

/// Reads `P` from `lookup` (the process environment, or a map in tests). An empty
/// variable counts as unset: it is what CloudFormation leaves for a blank parameter.
pub fn read<P: EnvPart>(lookup: &dyn Fn(&str) -> Option<String>) -> Result<P, EnvError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let mut entries = Vec::new();
    for field in fields_of::<P>()? {
        let var = field.to_ascii_uppercase();
        if let Some(value) = get(&var) {
            entries.push((*field, Text(value)));
        } else if P::FROM_FILE.contains(field) {
            if let Some(path) = get(&format!("{var}_FILE")) {
                let value = std::fs::read_to_string(&path).map_err(|e| EnvError::File {
                    var: var.clone(),
                    path: path.into(),
                    message: e.to_string(),
                })?;
                entries.push((*field, Text(value)));
            }
        }
    }
    let map = MapDeserializer::<_, ValueError>::new(entries.into_iter());
    serde_path_to_error::deserialize(map).map_err(|e| {
        let var = e.path().to_string().to_ascii_uppercase();
        match e.into_inner() {
            ValueError::Missing(field) => {
                let var = field.to_ascii_uppercase();
                if P::FROM_FILE.contains(&field) {
                    EnvError::MissingEither { var }
                } else {
                    EnvError::Missing { var }
                }
            }
            ValueError::Invalid(expected) => EnvError::Invalid { var, expected },
        }
    })
}

/// A variable's value: a string, which an `Option` field takes as `Some`.
struct Text(String);

impl<'de> de::IntoDeserializer<'de, ValueError> for Text {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Text {
    type Error = ValueError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// The process environment, for [`read`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The reader's error: a missing field's name or what was expected, never the input
/// (serde's default `invalid_type`/`invalid_value` messages quote it; overridden here).
#[derive(Debug)]
enum ValueError {
    Missing(&'static str),
    Invalid(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Missing(field) => write!(f, "missing {field}"),
            ValueError::Invalid(expected) => f.write_str(expected),
        }
    }
}

impl std::error::Error for ValueError {}

impl de::Error for ValueError {
    /// Only the settings' own types raise custom errors here, and their messages say
    /// what is expected without repeating the input.
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Invalid(msg.to_string())
    }
    fn invalid_type(_: Unexpected<'_>, exp: &dyn Expected) -> Self {
        ValueError::Invalid(format!("expected {exp}"))
    }
    fn invalid_value(_: Unexpected<'_>, exp: &dyn Expected) -> Self {
        ValueError::Invalid(format!("expected {exp}"))
    }
    fn invalid_length(_: usize, exp: &dyn Expected) -> Self {
        ValueError::Invalid(format!("expected {exp}"))
    }
    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        ValueError::Invalid(format!("expected one of {}", expected.join(", ")))
    }
    fn missing_field(field: &'static str) -> Self {
        ValueError::Missing(field)
    }
}

/// The field names of a plain struct, as its derived `Deserialize` hands them to
/// `deserialize_struct`: so the list of variables is the struct, not a copy of it.
pub fn fields_of<P: DeserializeOwned>() -> Result<&'static [&'static str], EnvError> {
    match P::deserialize(FieldNames) {
        Err(FieldsOrNot::Fields(fields)) => Ok(fields),
        _ => Err(EnvError::Shape(std::any::type_name::<P>())),
    }
}

/// A deserializer that only answers `deserialize_struct`, with the names it was given.
struct FieldNames;

#[derive(Debug)]
enum FieldsOrNot {
    Fields(&'static [&'static str]),
    Not,
}

impl fmt::Display for FieldsOrNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names")
    }
}

impl std::error::Error for FieldsOrNot {}

impl de::Error for FieldsOrNot {
    fn custom<T: fmt::Display>(_: T) -> Self {
        FieldsOrNot::Not
    }
}

impl<'de> de::Deserializer<'de> for FieldNames {
    type Error = FieldsOrNot;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(FieldsOrNot::Not)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(FieldsOrNot::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}
