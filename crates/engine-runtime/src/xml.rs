//! XML answers as JSON, before `rootKey` and response parameters read them, as the platform
//! did for its SOAP and XML vendors. The mapping (the common Java `org.json` convention):
//!
//! - the document is an object with one key, the root element's name;
//! - an element's name is its key as written, namespace prefix included (`soap:Envelope`);
//! - an element with neither attributes nor child elements is its text, a string (`""` when
//!   empty); values are never guessed into numbers or booleans;
//! - otherwise it is an object: each attribute a key with its value, each child element a key,
//!   and its text, when it has some besides children or attributes, under `content`;
//! - sibling elements of the same name make an array, in document order;
//! - text is unescaped and trimmed; CDATA is text; comments, processing instructions and the
//!   declaration are left out.
//!
//! A body that is not well-formed XML stays text.

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// The deepest element nesting converted; a deeper document stays text.
const MAX_DEPTH: usize = 256;

/// `text` as JSON when it is an XML document, else `None`.
pub(crate) fn to_json(text: &str) -> Option<Value> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if !trimmed.starts_with('<') {
        return None;
    }
    // Text is trimmed per element, not per piece: `a &amp; b` keeps its spaces.
    let mut reader = quick_xml::Reader::from_str(trimmed);
    // The open elements: name, attributes and children so far, text so far.
    let mut open: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut document = Map::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) => {
                if open.len() >= MAX_DEPTH {
                    return None;
                }
                let (name, attributes) = element(&start)?;
                open.push((name, attributes, String::new()));
            }
            Event::Empty(start) => {
                let (name, attributes) = element(&start)?;
                let value = value_of(attributes, "");
                insert(parent(&mut open, &mut document), name, value);
            }
            Event::Text(text) => {
                let text = text.xml10_content();
                match open.last_mut() {
                    Some((_, _, inside)) => inside.push_str(&text),
                    // Whitespace around the root element is no content.
                    None if text.trim().is_empty() => {}
                    None => return None,
                }
            }
            Event::CData(data) => {
                let text = data.into_inner();
                open.last_mut()?.2.push_str(&text);
            }
            Event::GeneralRef(reference) => {
                let name = reference.clone().into_inner();
                let character = match &*name {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    _ => reference
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .map(String::from)?,
                };
                open.last_mut()?.2.push_str(&character);
            }
            Event::End(_) => {
                let (name, attributes, text) = open.pop()?;
                let value = value_of(attributes, &text);
                insert(parent(&mut open, &mut document), name, value);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    (open.is_empty() && document.len() == 1).then_some(Value::Object(document))
}

/// The name and attributes of an element.
fn element(start: &BytesStart<'_>) -> Option<(String, Map<String, Value>)> {
    let name = start.name().as_ref().to_owned();
    let mut attributes = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.ok()?;
        let key = attribute.key.as_ref().to_owned();
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()?
            .into_owned();
        insert(&mut attributes, key, Value::String(value));
    }
    Some((name, attributes))
}

/// The object children are added to: the innermost open element's, else the document.
fn parent<'a>(
    open: &'a mut [(String, Map<String, Value>, String)],
    document: &'a mut Map<String, Value>,
) -> &'a mut Map<String, Value> {
    match open.last_mut() {
        Some((_, children, _)) => children,
        None => document,
    }
}

/// An element's value: its text alone, or its attributes and children with the text as
/// `content`.
fn value_of(mut children: Map<String, Value>, text: &str) -> Value {
    let text = text.trim();
    if children.is_empty() {
        return Value::String(text.to_owned());
    }
    if !text.is_empty() {
        insert(
            &mut children,
            "content".to_owned(),
            Value::String(text.to_owned()),
        );
    }
    Value::Object(children)
}

/// Adds `value` under `key`; a repeated key makes an array.
fn insert(object: &mut Map<String, Value>, key: String, value: Value) {
    match object.get_mut(&key) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            object.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn elements_attributes_repeats_and_text_map_to_json() {
        let soap = r#"<?xml version="1.0" encoding="utf-8"?>
            <soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
              <soap:Body>
                <DivideResponse xmlns="http://tempuri.org/">
                  <DivideResult>21</DivideResult>
                  <item id="1">a &amp; b</item>
                  <item id="2"/>
                  <note><![CDATA[x < y]]></note>
                  <empty></empty>
                </DivideResponse>
              </soap:Body>
            </soap:Envelope>"#;
        assert_eq!(
            to_json(soap),
            Some(json!({"soap:Envelope": {
                "xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
                "soap:Body": {"DivideResponse": {
                    "xmlns": "http://tempuri.org/",
                    "DivideResult": "21",
                    "item": [{"id": "1", "content": "a & b"}, {"id": "2"}],
                    "note": "x < y",
                    "empty": "",
                }},
            }}))
        );
    }

    #[test]
    fn text_and_broken_xml_stay_text() {
        assert_eq!(to_json("plain text"), None);
        assert_eq!(to_json("<a><b></a>"), None);
        assert_eq!(to_json("<a></a><b></b>"), None);
        assert_eq!(to_json("<html"), None);
    }
}
