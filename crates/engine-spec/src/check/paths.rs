//! E0305: a query string written inside `vendorPath`.
//!
//! The engine builds the query string from `query` parameters (percent-encoding their values and
//! merging them with the caller's); a literal `?a=b` in the path would be sent as it is, unencoded,
//! and clash with them.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Location;

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    for (resource, raw) in input.connector.resources().iter().zip(&input.raw.resources) {
        let Some(vendor_path) = raw.vendor_path.as_deref() else {
            continue;
        };
        let Some(question) = vendor_path.find('?') else {
            continue;
        };
        let query = &vendor_path[question + 1..];
        let pairs: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| format!("`{pair}`"))
            .collect();
        let help = match pairs.as_slice() {
            [] => "remove the `?`: query parameters come from parameters with `\"vendorType\": \
                   \"query\"`"
                .to_owned(),
            [pair] => format!("move {pair} into a parameter with `\"vendorType\": \"query\"`"),
            _ => format!(
                "move {} into parameters with `\"vendorType\": \"query\"`",
                pairs.join(", ")
            ),
        };
        diagnostics.push(
            Diagnostic::new(
                Code::QueryInVendorPath,
                Location::new(input.file, resource.location().pointer.field("vendorPath"))
                    .narrow(question, vendor_path.len()),
                "query string in `vendorPath`",
            )
            .with_label("sent as written, without encoding")
            .with_help(help),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::{compat, with_code};
    use crate::diagnostic::Code;

    #[test]
    fn a_query_string_is_reported_with_its_pairs() {
        let text =
            r#"{"resources": [{"type": "api", "vendorPath": "/v1/items?limit=10&sort=name"}]}"#;
        let found = with_code(text, Code::QueryInVendorPath);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location.inner, Some((9, 28)));
        assert_eq!(
            found[0].help.as_deref(),
            Some("move `limit=10`, `sort=name` into parameters with `\"vendorType\": \"query\"`")
        );
        let text = r#"{"resources": [{"type": "api", "vendorPath": "/v1/items?limit=10"}]}"#;
        assert_eq!(
            with_code(text, Code::QueryInVendorPath)[0].help.as_deref(),
            Some("move `limit=10` into a parameter with `\"vendorType\": \"query\"`")
        );
    }

    #[test]
    fn paths_without_query_are_fine() {
        let text = r#"{"resources": [{"type": "api", "vendorPath": "https://x.example/v1/{id}"}]}"#;
        assert!(with_code(text, Code::QueryInVendorPath).is_empty());
        for (name, text) in compat() {
            assert!(
                with_code(&text, Code::QueryInVendorPath).is_empty(),
                "{name}"
            );
        }
    }
}
