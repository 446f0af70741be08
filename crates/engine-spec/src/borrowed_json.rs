//! A JSON document that borrows its strings from the text: the schema check of a file that
//! conforms, without building a [`serde_json::Value`] (a hashed, insertion-ordered map and an
//! owned key for every member, which was a third of `engine validate`'s work).
//!
//! It is parsed by `serde_json`'s own deserializer, so it accepts exactly the texts
//! [`serde_json::from_str`] accepts, and it holds the same strings, numbers and members as the
//! [`serde_json::Value`] would. One difference is refused rather than handled: an object with a
//! repeated key (a `Value` keeps the last one) does not parse, and the caller takes the `Value`
//! path.

use std::borrow::Cow;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One node of the document.
#[derive(Debug, Default)]
pub(crate) enum BorrowedJson<'a> {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it.
    Number(Number),
    /// A string: borrowed from the text unless it has escapes.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<BorrowedJson<'a>>),
    /// An object's members, in order, each name once.
    Object(Vec<(Cow<'a, str>, BorrowedJson<'a>)>),
}

impl<'a> BorrowedJson<'a> {
    /// The document `text` holds; `None` when it is not JSON or an object repeats a key.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The document a [`Value`] holds, borrowing its strings: the schema check of a file that
    /// does not conform uses the same validator as the one that does.
    pub(crate) fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(boolean) => Self::Bool(*boolean),
            Value::Number(number) => Self::Number(number.clone()),
            Value::String(string) => Self::String(Cow::Borrowed(string)),
            Value::Array(items) => Self::Array(items.iter().map(Self::of).collect()),
            Value::Object(members) => Self::Object(
                members
                    .iter()
                    .map(|(name, value)| (Cow::Borrowed(name.as_str()), Self::of(value)))
                    .collect(),
            ),
        }
    }

    /// The same node as a [`Value`].
    fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(boolean) => Value::Bool(*boolean),
            Self::Number(number) => Value::Number(number.clone()),
            Self::String(string) => Value::String(string.clone().into_owned()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(name, value)| (name.clone().into_owned(), value.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> de::Deserialize<'de> for BorrowedJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = BorrowedJson<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(BorrowedJson::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(BorrowedJson::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(BorrowedJson::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // As `serde_json::Value`: a number that is not finite is null.
        Ok(Number::from_f64(value).map_or(BorrowedJson::Null, BorrowedJson::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(BorrowedJson::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(BorrowedJson::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(BorrowedJson::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(BorrowedJson::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(BorrowedJson::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        de::Deserialize::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(BorrowedJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, BorrowedJson<'de>)> = Vec::new();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            if members.iter().any(|(known, _)| *known == name) {
                return Err(de::Error::custom("repeated key"));
            }
            let value = map.next_value()?;
            members.push((name, value));
        }
        Ok(BorrowedJson::Object(members))
    }
}

/// A member name, borrowed from the text when it has no escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// Decoding from the document, as from a [`Value`]: the wire types without parsing the text
/// again.
impl<'de> Deserializer<'de> for &'de BorrowedJson<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            BorrowedJson::Null => visitor.visit_unit(),
            BorrowedJson::Bool(boolean) => visitor.visit_bool(*boolean),
            BorrowedJson::Number(number) => number.deserialize_any(visitor),
            BorrowedJson::String(string) => visitor.visit_borrowed_str(string.as_ref()),
            BorrowedJson::Array(items) => visitor.visit_seq(Elements(items.iter())),
            BorrowedJson::Object(members) => visitor.visit_map(MemberAccess {
                members: members.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            BorrowedJson::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The elements of an array, for decoding.
struct Elements<'de>(std::slice::Iter<'de, BorrowedJson<'de>>);

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|item| seed.deserialize(item)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The members of an object, for decoding.
struct MemberAccess<'de> {
    members: std::slice::Iter<'de, (Cow<'de, str>, BorrowedJson<'de>)>,
    value: Option<&'de BorrowedJson<'de>>,
}

impl<'de> MapAccess<'de> for MemberAccess<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((name, value)) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(BorrowedStrDeserializer::new(name.as_ref()))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("a value without a key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

/// The representation, for [`jsonschema::options_for`].
pub(crate) struct Borrowed;

impl Json for Borrowed {
    type Node<'a> = &'a BorrowedJson<'a>;
    type PreparedKey = String;
    type StringBuffer = BorrowedJson<'static>;

    /// Objects are short lists: a pass over the members beats a lookup by name sooner than with
    /// a hashed map.
    const KEYS_PER_LOOKUP: usize = 8;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        buffer: &mut BorrowedJson<'static>,
        string: &str,
        f: impl FnOnce(Self::Node<'_>) -> T,
    ) -> T {
        *buffer = BorrowedJson::String(Cow::Owned(string.to_owned()));
        f(buffer)
    }
}

impl<'a> Node<'a, Borrowed> for &'a BorrowedJson<'a> {
    type Object = &'a [(Cow<'a, str>, BorrowedJson<'a>)];
    type Array = &'a [BorrowedJson<'a>];
    type Number = &'a Number;

    fn as_object(&self) -> Option<Self::Object> {
        match self {
            BorrowedJson::Object(members) => Some(members),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Self::Array> {
        match self {
            BorrowedJson::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            BorrowedJson::String(string) => Some(Cow::Borrowed(string.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self {
            BorrowedJson::Number(number) => Some(number),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            BorrowedJson::Bool(boolean) => Some(*boolean),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, BorrowedJson::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            BorrowedJson::Null => JsonType::Null,
            BorrowedJson::Bool(_) => JsonType::Boolean,
            BorrowedJson::Number(_) => JsonType::Number,
            BorrowedJson::String(_) => JsonType::String,
            BorrowedJson::Array(_) => JsonType::Array,
            BorrowedJson::Object(_) => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` on strings (every kind field) without building a `Value`.
        match (self, expected) {
            (BorrowedJson::String(string), Value::String(expected)) => string == expected,
            (BorrowedJson::String(_), _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(BorrowedJson::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<BorrowedJson<'a>>(*self) as usize,
        ))
    }
}

impl<'a> Object<'a, Borrowed> for &'a [(Cow<'a, str>, BorrowedJson<'a>)] {
    type Node = &'a BorrowedJson<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn get(&self, key: &String) -> Option<&'a BorrowedJson<'a>> {
        self.iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    fn members(&self) -> Members<'a> {
        Members(self.iter())
    }
}

/// The members of an object, in order.
pub(crate) struct Members<'a>(std::slice::Iter<'a, (Cow<'a, str>, BorrowedJson<'a>)>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a BorrowedJson<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(name, value)| (name.as_ref(), value))
    }
}

impl<'a> Array<'a, Borrowed> for &'a [BorrowedJson<'a>] {
    type Node = &'a BorrowedJson<'a>;
    type ElementsIter = std::slice::Iter<'a, BorrowedJson<'a>>;

    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn elements(&self) -> Self::ElementsIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::*;

    #[test]
    fn holds_what_a_value_holds_and_refuses_repeated_keys() {
        let text = r#"{"a": [1, -2, 1.5, 2e300, "x\"y", "plain", true, null], "b": {"c": {}}, "d\u00e9": 18446744073709551615}"#;
        let borrowed = BorrowedJson::parse(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(borrowed.to_value(), value);
        assert!(
            matches!(&borrowed, BorrowedJson::Object(members) if matches!(members[0].0, Cow::Borrowed(_)))
        );
        assert_eq!(Value::deserialize(&borrowed).unwrap(), value);
        assert!(BorrowedJson::parse(r#"{"a": 1, "a": 2}"#).is_none());
        assert!(BorrowedJson::parse(r#"{"a": 1} x"#).is_none());
        assert!(BorrowedJson::parse("[1,]").is_none());
    }
}
