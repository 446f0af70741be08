//! Parses a connector's text into a [`Value`] in one pass, noting the keys an object repeats
//! (JSON allows them; the last value wins, so the first is silently lost).

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::pointer::JsonPointer;

/// The most repeated keys noted in one file; a file with more is reported with these.
const MAX_DUPLICATES: usize = 1_000;

/// A key written twice or more in one object: `pointer` is the key's value (the last one, which
/// wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub(crate) pointer: JsonPointer,
    pub(crate) key: String,
}

/// Parses `text` as `serde_json::from_str` does (same errors, same nesting limit), and returns
/// the repeated keys with the value.
pub(crate) fn parse(text: &str) -> Result<(Value, Vec<Duplicate>), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut path = Vec::new();
    let mut duplicates = Vec::new();
    let value = ValueSeed {
        path: &mut path,
        duplicates: &mut duplicates,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, duplicates))
}

/// One step from a node to its child.
enum Step {
    Key(String),
    Index(usize),
}

struct ValueSeed<'a> {
    path: &'a mut Vec<Step>,
    duplicates: &'a mut Vec<Duplicate>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.path.push(Step::Index(items.len()));
            let item = sequence.next_element_seed(ValueSeed {
                path: &mut *self.path,
                duplicates: &mut *self.duplicates,
            });
            self.path.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            self.path.push(Step::Key(key));
            let value = entries.next_value_seed(ValueSeed {
                path: &mut *self.path,
                duplicates: &mut *self.duplicates,
            });
            let Some(Step::Key(key)) = self.path.pop() else {
                unreachable!("the step pushed above")
            };
            let value = value?;
            if map.insert(key.clone(), value).is_some() && self.duplicates.len() < MAX_DUPLICATES {
                let pointer = self
                    .path
                    .iter()
                    .fold(JsonPointer::root(), |pointer, step| match step {
                        Step::Key(key) => pointer.field(key),
                        Step::Index(index) => pointer.index(*index),
                    })
                    .field(&key);
                self.duplicates.push(Duplicate { pointer, key });
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_serde_json_does_and_notes_repeated_keys() {
        let text = r#"{"a": 1, "b": [{"c": true, "c": null}], "a": 2.5, "d": "\u00e9"}"#;
        let (value, duplicates) = parse(text).unwrap();
        assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
        let found: Vec<(&str, &str)> = duplicates
            .iter()
            .map(|duplicate| (duplicate.pointer.as_str(), duplicate.key.as_str()))
            .collect();
        assert_eq!(found, [("/b/0/c", "c"), ("/a", "a")]);
        assert_eq!(
            parse("[1,]").unwrap_err().to_string(),
            serde_json::from_str::<Value>("[1,]")
                .unwrap_err()
                .to_string()
        );
        assert!(parse(&"[".repeat(200_000)).is_err());
        assert!(parse("{} x").is_err());
    }
}
