//! What a request type declares, read from its own `Deserialize` impl: the field names at
//! each position, which of them are optional and which are objects.
//!
//! A refusal may name a field only if the schema declares it there: a key the client
//! sent is client input (a password pasted as a key is still a password, decision 26),
//! and serde's messages quote the values they reject (decision 11). Reading the schema
//! from the type keeps it from drifting from the structs.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

#[derive(Debug, Default, Clone, Copy)]
struct Field {
    optional: bool,
    object: bool,
}

/// Declared fields by dotted path (`consent.accepted`); "" is the body itself.
#[derive(Debug, Default)]
pub struct Schema {
    fields: BTreeMap<String, Field>,
}

impl Schema {
    /// The fields `T` declares. A type whose `Deserialize` refuses the probe's placeholder
    /// values yields only what was seen before; refusals then name less, never more.
    pub fn of<T: DeserializeOwned>() -> Self {
        let cell = RefCell::new(Schema::default());
        let _ = T::deserialize(Probe {
            path: String::new(),
            schema: &cell,
        });
        cell.into_inner()
    }

    pub fn declares(&self, path: &str) -> bool {
        self.fields.contains_key(path)
    }

    /// Declared struct-typed fields: serde would read a JSON array into them.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(|(p, f)| f.object && !p.is_empty())
            .map(|(p, _)| p.as_str())
    }

    /// The required fields directly under `parent`.
    pub fn required_under<'a>(&'a self, parent: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter_map(move |(p, f)| {
            let name = match parent {
                "" => p.as_str(),
                _ => p.strip_prefix(parent)?.strip_prefix('.')?,
            };
            (!name.is_empty() && !name.contains('.') && !f.optional).then_some(name)
        })
    }
}

pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A deserializer that answers every request of a `Deserialize` impl with a placeholder
/// and, for structs, with each declared field, recording what it was asked.
struct Probe<'a> {
    path: String,
    schema: &'a RefCell<Schema>,
}

impl Probe<'_> {
    fn mark(&self, edit: impl FnOnce(&mut Field)) {
        if let Some(f) = self.schema.borrow_mut().fields.get_mut(&self.path) {
            edit(f);
        }
    }
}

macro_rules! placeholder {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    placeholder! {
        deserialize_any => visit_unit(),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('a'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.mark(|f| f.optional = true);
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(de::value::SeqDeserializer::<_, Error>::new(
            std::iter::empty::<()>(),
        ))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(de::value::MapDeserializer::<_, Error>::new(
            std::iter::empty::<((), ())>(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        {
            let mut schema = self.schema.borrow_mut();
            schema.fields.entry(self.path.clone()).or_default().object = true;
            for f in fields {
                schema.fields.entry(join(&self.path, f)).or_default();
            }
        }
        visitor.visit_map(Fields {
            fields: fields.iter(),
            current: None,
            parent: self.path,
            schema: self.schema,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first: StrDeserializer<'_, Error> =
            variants.first().copied().unwrap_or("").into_deserializer();
        visitor.visit_enum(first)
    }
}

/// A struct's declared fields, each with a probe for its value.
struct Fields<'a> {
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
    parent: String,
    schema: &'a RefCell<Schema>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.fields.next() else {
            return Ok(None);
        };
        self.current = Some(name);
        let key: StrDeserializer<'_, Error> = (*name).into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.current.take().unwrap_or_default();
        seed.deserialize(Probe {
            path: join(&self.parent, name),
            schema: self.schema,
        })
    }
}
