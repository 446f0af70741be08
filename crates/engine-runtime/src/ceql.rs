//! CEQL, the platform's query language for the `where` of a call (`name = 'Edge' AND
//! age >= 21`), and the converters that turn it into what a vendor reads: `toQueryParameters`
//! (one query parameter per `=` clause), `toODataFilter` and `toODataV3Filter` (an `OData`
//! `$filter`). One parser for every use: request parameters (`vendorName:
//! "converter:NAME"`) and hooks (`request_expression`).
//!
//! The language: comparisons `=`, `!=`, `<`, `>`, `<=`, `>=`, `LIKE`, `IN (...)`, `IS NULL`,
//! `IS NOT NULL`, joined by `AND` and `OR` (keywords in any case); strings in single quotes
//! (`''` is a quote), numbers and `true`/`false` bare.

use std::fmt;

/// A parsed CEQL expression: clauses joined left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// The first clause.
    pub first: Clause,
    /// The clauses after it, each with the word that joins it to what precedes.
    pub rest: Vec<(Join, Clause)>,
}

/// `AND` or `OR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// `AND`.
    And,
    /// `OR`.
    Or,
}

/// One comparison: `attribute operator value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// The attribute (the vendor's field or query parameter name).
    pub attribute: String,
    /// The comparison.
    pub operator: Operator,
    /// The value(s) compared with: one, several for `IN`, none for `IS NULL`.
    pub values: Vec<Literal>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=`.
    Equal,
    /// `!=` (or `<>`).
    NotEqual,
    /// `<`.
    Less,
    /// `>`.
    Greater,
    /// `<=`.
    LessOrEqual,
    /// `>=`.
    GreaterOrEqual,
    /// `LIKE` (`%` any text).
    Like,
    /// `IN (...)`.
    In,
    /// `IS NULL`.
    IsNull,
    /// `IS NOT NULL`.
    IsNotNull,
}

/// A value in a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A single-quoted string, unquoted.
    Text(String),
    /// A number or `true`/`false`, as written.
    Bare(String),
}

impl Literal {
    /// The value as text, without quotes.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(text) | Self::Bare(text) => text,
        }
    }
}

/// A CEQL expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeqlError {
    /// What is wrong.
    pub message: String,
    /// The byte offset in the expression where it is.
    pub offset: usize,
}

impl fmt::Display for CeqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for CeqlError {}

impl Expression {
    /// Parses a CEQL `where` expression.
    ///
    /// Fails with what was expected and where, on an empty expression, an unclosed string,
    /// an unknown operator or trailing text.
    pub fn parse(text: &str) -> Result<Self, CeqlError> {
        let mut parser = Parser { text, at: 0 };
        let first = parser.clause()?;
        let mut rest = Vec::new();
        loop {
            parser.skip_space();
            if parser.at == text.len() {
                return Ok(Self { first, rest });
            }
            let join = if parser.keyword("and") {
                Join::And
            } else if parser.keyword("or") {
                Join::Or
            } else {
                return Err(parser.error("expected `AND`, `OR` or the end of the expression"));
            };
            rest.push((join, parser.clause()?));
        }
    }

    /// Every clause, in order.
    pub fn clauses(&self) -> impl Iterator<Item = &Clause> {
        std::iter::once(&self.first).chain(self.rest.iter().map(|(_, clause)| clause))
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn error(&self, message: &str) -> CeqlError {
        CeqlError {
            message: message.to_owned(),
            offset: self.at,
        }
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Takes `word` (any case) when it stands whole at the cursor.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        let whole = rest
            .get(..word.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(word))
            && !rest[word.len()..]
                .chars()
                .next()
                .is_some_and(|next| next.is_alphanumeric() || next == '_');
        if whole {
            self.at += word.len();
        }
        whole
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(symbol) {
            self.at += symbol.len();
            true
        } else {
            false
        }
    }

    fn clause(&mut self) -> Result<Clause, CeqlError> {
        self.skip_space();
        let length = self
            .rest()
            .find(|character: char| {
                !(character.is_alphanumeric() || matches!(character, '_' | '.' | '$' | '-' | ':'))
            })
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(self.error("expected an attribute name"));
        }
        let attribute = self.rest()[..length].to_owned();
        self.at += length;
        let operator = if self.symbol("<=") {
            Operator::LessOrEqual
        } else if self.symbol(">=") {
            Operator::GreaterOrEqual
        } else if self.symbol("!=") || self.symbol("<>") {
            Operator::NotEqual
        } else if self.symbol("=") {
            Operator::Equal
        } else if self.symbol("<") {
            Operator::Less
        } else if self.symbol(">") {
            Operator::Greater
        } else if self.keyword("like") {
            Operator::Like
        } else if self.keyword("in") {
            Operator::In
        } else if self.keyword("is") {
            let not = self.keyword("not");
            if !self.keyword("null") {
                return Err(self.error("expected `NULL` after `IS`"));
            }
            return Ok(Clause {
                attribute,
                operator: if not {
                    Operator::IsNotNull
                } else {
                    Operator::IsNull
                },
                values: Vec::new(),
            });
        } else {
            return Err(self.error(
                "expected an operator: `=`, `!=`, `<`, `>`, `<=`, `>=`, `LIKE`, `IN` or `IS NULL`",
            ));
        };
        let values = if operator == Operator::In {
            if !self.symbol("(") {
                return Err(self.error("expected `(` after `IN`"));
            }
            let mut values = vec![self.literal()?];
            while self.symbol(",") {
                values.push(self.literal()?);
            }
            if !self.symbol(")") {
                return Err(self.error("expected `,` or `)` in the `IN` list"));
            }
            values
        } else {
            vec![self.literal()?]
        };
        Ok(Clause {
            attribute,
            operator,
            values,
        })
    }

    fn literal(&mut self) -> Result<Literal, CeqlError> {
        self.skip_space();
        if self.rest().starts_with('\'') {
            let start = self.at;
            let mut text = String::new();
            let mut characters = self.rest()[1..].char_indices().peekable();
            while let Some((index, character)) = characters.next() {
                if character != '\'' {
                    text.push(character);
                    continue;
                }
                if characters.peek().is_some_and(|(_, next)| *next == '\'') {
                    characters.next();
                    text.push('\'');
                    continue;
                }
                self.at += 1 + index + 1;
                return Ok(Literal::Text(text));
            }
            self.at = start;
            return Err(self.error("this string has no closing `'`"));
        }
        let length = self
            .rest()
            .find(|character: char| {
                !(character.is_alphanumeric() || matches!(character, '.' | '-' | '+' | '_' | ':'))
            })
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(self.error("expected a value: a 'quoted string', a number, true or false"));
        }
        let bare = self.rest()[..length].to_owned();
        self.at += length;
        Ok(Literal::Bare(bare))
    }
}

/// A `converter:NAME` the engine executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// `toQueryParameters`: each `attribute = value` clause of an `AND` chain is the query
    /// parameter `attribute=value`.
    ToQueryParameters,
    /// `toODataFilter`: an `OData` v4 `$filter`.
    ToODataFilter,
    /// `toODataV3Filter`: an `OData` v3 `$filter`.
    ToODataV3Filter,
}

impl Converter {
    /// The converter named `name` (the part after `converter:`), or `None` for one the engine
    /// does not execute (`toBazaarvoice`, `toWiql`, ...).
    pub fn named(name: &str) -> Option<Self> {
        match name.trim() {
            "toQueryParameters" => Some(Self::ToQueryParameters),
            "toODataFilter" => Some(Self::ToODataFilter),
            "toODataV3Filter" => Some(Self::ToODataV3Filter),
            _ => None,
        }
    }

    /// The query parameters `expression` becomes.
    ///
    /// Fails, naming the clause, when the converter cannot say it: for `toQueryParameters`, a
    /// clause other than `=`, or `OR`.
    pub fn convert(self, expression: &Expression) -> Result<Vec<(String, String)>, String> {
        match self {
            Self::ToQueryParameters => {
                if expression.rest.iter().any(|(join, _)| *join == Join::Or) {
                    return Err(
                        "`toQueryParameters` joins clauses with `AND` only, not `OR`".to_owned(),
                    );
                }
                expression
                    .clauses()
                    .map(|clause| match (clause.operator, clause.values.as_slice()) {
                        (Operator::Equal, [value]) => {
                            Ok((clause.attribute.clone(), value.text().to_owned()))
                        }
                        _ => Err(format!(
                            "`toQueryParameters` sends `attribute = 'value'` clauses only, not the clause on `{}`",
                            clause.attribute
                        )),
                    })
                    .collect()
            }
            Self::ToODataFilter | Self::ToODataV3Filter => {
                let mut filter = odata_clause(self, &expression.first);
                for (join, clause) in &expression.rest {
                    filter.push_str(match join {
                        Join::And => " and ",
                        Join::Or => " or ",
                    });
                    filter.push_str(&odata_clause(self, clause));
                }
                Ok(vec![("$filter".to_owned(), filter)])
            }
        }
    }
}

/// One clause in `OData`: `name eq 'x'`, `age ge 21`, `contains(name,'x')`.
fn odata_clause(converter: Converter, clause: &Clause) -> String {
    let literal = |value: &Literal| match value {
        Literal::Text(text) => format!("'{}'", text.replace('\'', "''")),
        Literal::Bare(bare) => bare.clone(),
    };
    let attribute = &clause.attribute;
    let compare = |word: &str| format!("{attribute} {word} {}", literal(&clause.values[0]));
    match clause.operator {
        Operator::Equal => compare("eq"),
        Operator::NotEqual => compare("ne"),
        Operator::Less => compare("lt"),
        Operator::Greater => compare("gt"),
        Operator::LessOrEqual => compare("le"),
        Operator::GreaterOrEqual => compare("ge"),
        Operator::IsNull => format!("{attribute} eq null"),
        Operator::IsNotNull => format!("{attribute} ne null"),
        Operator::In => {
            let alternatives: Vec<String> = clause
                .values
                .iter()
                .map(|value| format!("{attribute} eq {}", literal(value)))
                .collect();
            format!("({})", alternatives.join(" or "))
        }
        Operator::Like => {
            let pattern = clause.values[0].text();
            let inner = pattern.trim_matches('%');
            let quoted = literal(&Literal::Text(inner.to_owned()));
            match (
                pattern.starts_with('%'),
                pattern.ends_with('%') && pattern.len() > 1,
            ) {
                (true, true) if converter == Converter::ToODataV3Filter => {
                    format!("substringof({quoted},{attribute})")
                }
                (true, true) => format!("contains({attribute},{quoted})"),
                (false, true) => format!("startswith({attribute},{quoted})"),
                (true, false) => format!("endswith({attribute},{quoted})"),
                (false, false) => format!("{attribute} eq {quoted}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(converter: Converter, text: &str) -> Result<Vec<(String, String)>, String> {
        converter.convert(&Expression::parse(text).map_err(|error| error.to_string())?)
    }

    #[test]
    fn clauses_of_every_operator_parse() {
        let expression = Expression::parse(
            "name = 'O''Brien' AND age >= 21 or kind IN ('a', 'b') and x IS NOT NULL AND y LIKE '%z%' and n != 3",
        )
        .unwrap();
        let operators: Vec<Operator> = expression.clauses().map(|clause| clause.operator).collect();
        assert_eq!(
            operators,
            [
                Operator::Equal,
                Operator::GreaterOrEqual,
                Operator::In,
                Operator::IsNotNull,
                Operator::Like,
                Operator::NotEqual
            ]
        );
        assert_eq!(expression.first.values, [Literal::Text("O'Brien".into())]);
        assert_eq!(expression.rest[0].0, Join::And);
        assert_eq!(expression.rest[1].0, Join::Or);
    }

    #[test]
    fn text_after_a_clause_that_is_not_ascii_is_an_error_not_a_panic() {
        // `AND`/`OR` were compared on the next three bytes, inside a character.
        for text in [
            "a = 1 \u{e9}\u{e9}",
            "a = 1 \u{f9a7d}x",
            "n = 'x' \u{1f600}",
        ] {
            assert!(Expression::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bad_expressions_say_where() {
        for (text, offset) in [
            ("", 0),
            ("name 'x'", 5),
            ("name = 'x", 7),
            ("a = 1 b = 2", 6),
            ("a IS 1", 5),
        ] {
            assert_eq!(
                Expression::parse(text).unwrap_err().offset,
                offset,
                "{text}"
            );
        }
    }

    #[test]
    fn to_query_parameters_sends_each_equal_clause() {
        assert_eq!(
            convert(
                Converter::ToQueryParameters,
                "email='a@b.c' AND createdDate = '2017-05-24T18:31:01Z' and page=7"
            )
            .unwrap(),
            [
                ("email", "a@b.c"),
                ("createdDate", "2017-05-24T18:31:01Z"),
                ("page", "7")
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
        assert!(convert(Converter::ToQueryParameters, "a = 'x' OR b = 'y'").is_err());
        assert!(convert(Converter::ToQueryParameters, "a > 1").is_err());
    }

    #[test]
    fn odata_filters() {
        assert_eq!(
            convert(
                Converter::ToODataFilter,
                "lastName = 'smith' and age >= 21 or city IN ('A', 'B')"
            )
            .unwrap(),
            [(
                "$filter".to_owned(),
                "lastName eq 'smith' and age ge 21 or (city eq 'A' or city eq 'B')".to_owned()
            )]
        );
        assert_eq!(
            convert(Converter::ToODataV3Filter, "name LIKE '%mi%' AND x IS NULL").unwrap()[0].1,
            "substringof('mi',name) and x eq null"
        );
        assert_eq!(
            convert(Converter::ToODataFilter, "name LIKE 'sm%'").unwrap()[0].1,
            "startswith(name,'sm')"
        );
    }
}
