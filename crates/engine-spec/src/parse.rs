//! Finds the keys an object of a connector's text repeats (JSON allows them; the last value
//! wins, so the first is silently lost). One pass over the text that builds no values.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

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

/// The repeated keys of `text`, in file order. A text that is not JSON has none (its syntax is
/// reported elsewhere).
pub(crate) fn duplicates(text: &str) -> Vec<Duplicate> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut path = Vec::new();
    let mut found = Vec::new();
    // serde_json's nesting limit (128) applies: a deeper text is not JSON for the engine either.
    let _ = Scan {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut deserializer);
    found
}

/// One step from a node to its child.
enum Step<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

struct Scan<'a, 'de> {
    path: &'a mut Vec<Step<'de>>,
    found: &'a mut Vec<Duplicate>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.path.push(Step::Index(index));
            let item = sequence.next_element_seed(Scan {
                path: &mut *self.path,
                found: &mut *self.found,
            });
            self.path.pop();
            if item?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut seen: foldhash::HashSet<Cow<'de, str>> = foldhash::HashSet::default();
        while let Some(key) = entries.next_key_seed(KeySeed)? {
            // Small objects are searched; large ones hashed.
            let repeated = if keys.len() < 16 {
                keys.contains(&key)
            } else {
                if seen.is_empty() {
                    seen.extend(keys.iter().cloned());
                }
                !seen.insert(key.clone())
            };
            if keys.len() < 16 && !repeated {
                keys.push(key.clone());
            }
            if repeated && self.found.len() < MAX_DUPLICATES {
                let pointer = self
                    .path
                    .iter()
                    .fold(JsonPointer::root(), |pointer, step| match step {
                        Step::Key(key) => pointer.field(key),
                        Step::Index(index) => pointer.index(*index),
                    })
                    .field(&key);
                self.found.push(Duplicate {
                    pointer,
                    key: key.clone().into_owned(),
                });
            }
            self.path.push(Step::Key(key));
            let value = entries.next_value_seed(Scan {
                path: &mut *self.path,
                found: &mut *self.found,
            });
            self.path.pop();
            value?;
        }
        Ok(())
    }
}

/// A key, borrowed from the text when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E>(self, key: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_repeated_keys_with_their_pointer() {
        let text = r#"{"a": 1, "b": [{"c": true, "c": null}], "a": 2.5, "d": "\u00e9"}"#;
        let found: Vec<(String, String)> = duplicates(text)
            .into_iter()
            .map(|duplicate| (duplicate.pointer.as_str().to_owned(), duplicate.key))
            .collect();
        assert_eq!(
            found,
            [
                ("/b/0/c".to_owned(), "c".to_owned()),
                ("/a".to_owned(), "a".to_owned())
            ]
        );
        // Large objects are hashed, escaped keys compared by their value.
        let mut object: Vec<String> = (0..40).map(|index| format!("\"k{index}\": 0")).collect();
        object.push(r#""k\u0033": 1"#.to_owned());
        let found = duplicates(&format!("{{{}}}", object.join(", ")));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer.as_str(), "/k3");
        assert!(duplicates("[1,]").is_empty());
        assert!(duplicates(&"[".repeat(200_000)).is_empty());
    }
}
