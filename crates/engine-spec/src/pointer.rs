//! JSON Pointers (RFC 6901): how every node of a connector is addressed.

use std::fmt;

/// A JSON Pointer such as `/resources/0/parameters/2/name`; the empty pointer is the document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonPointer(String);

impl JsonPointer {
    /// The pointer to the whole document.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Wraps an already escaped pointer such as `/a/0`.
    pub fn parse(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The pointer to the member `name` of this node.
    #[must_use]
    pub fn field(&self, name: &str) -> Self {
        let mut text = String::with_capacity(self.0.len() + 1 + name.len());
        text.push_str(&self.0);
        text.push('/');
        if name.contains(['~', '/']) {
            text.push_str(&name.replace('~', "~0").replace('/', "~1"));
        } else {
            text.push_str(name);
        }
        Self(text)
    }

    /// The pointer to the element `index` of this node.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        // Digits without `format!`: pointers are built for every node the model keeps.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = index;
        loop {
            start -= 1;
            digits[start] = b'0' + u8::try_from(rest % 10).expect("a digit is below 10");
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut text = String::with_capacity(self.0.len() + 1 + digits.len() - start);
        text.push_str(&self.0);
        text.push('/');
        text.extend(digits[start..].iter().map(|&digit| char::from(digit)));
        Self(text)
    }

    /// The pointer to where a deserialization failed, from its `serde_path_to_error` path (an
    /// enum variant is a member; a segment it could not name is skipped).
    pub fn of_path(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        path.iter()
            .fold(Self::root(), |pointer, segment| match segment {
                Segment::Seq { index } => pointer.index(*index),
                Segment::Map { key } => pointer.field(key),
                Segment::Enum { variant } => pointer.field(variant),
                Segment::Unknown => pointer,
            })
    }

    /// The pointer of the parent node; `None` for the document.
    pub fn parent(&self) -> Option<Self> {
        self.0
            .rfind('/')
            .map(|index| Self(self.0[..index].to_owned()))
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .split('/')
            .skip(1)
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_unescapes_tokens() {
        let pointer = JsonPointer::root().field("a/b").index(3).field("m~n");
        assert_eq!(pointer.as_str(), "/a~1b/3/m~0n");
        assert_eq!(pointer.tokens().collect::<Vec<_>>(), ["a/b", "3", "m~n"]);
        assert_eq!(pointer.parent().unwrap().as_str(), "/a~1b/3");
        assert_eq!(JsonPointer::root().index(0).index(1907).as_str(), "/0/1907");
        assert_eq!(
            JsonPointer::root().index(usize::MAX).as_str(),
            format!("/{}", usize::MAX)
        );
    }
}
