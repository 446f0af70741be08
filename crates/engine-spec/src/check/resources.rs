//! E0301: resource names are how callers select a resource, so each is unique.

use std::collections::HashMap;

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Location;
use crate::source_map::SourceMap;

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let mut first_by_name: HashMap<&str, usize> = HashMap::new();
    // Built only when there is a duplicate, to say where the first one is.
    let mut source_map: Option<SourceMap> = None;
    for resource in input.connector.resources() {
        let Some(name) = resource.name() else {
            continue;
        };
        let Some(&first) = first_by_name.get(name) else {
            first_by_name.insert(name, resource.index());
            continue;
        };
        let source = input.connector.source();
        let map = source_map.get_or_insert_with(|| SourceMap::new(source.text()));
        let first_location = name_location(input, first);
        let line = map
            .span(&first_location)
            .map(|span| source.position(span.start).line);
        let help = match line {
            Some(line) => {
                format!("the first resource named `{name}` is on line {line}; rename one of them")
            }
            None => format!("rename one of the resources named `{name}`"),
        };
        diagnostics.push(
            Diagnostic::new(
                Code::DuplicateResource,
                name_location(input, resource.index()),
                format!("duplicate resource name `{name}`"),
            )
            .with_label("a resource with this name comes earlier")
            .with_help(help),
        );
    }
}

fn name_location(input: &Input<'_>, index: usize) -> Location {
    let resource = &input.connector.resources()[index];
    Location::new(input.file, resource.location().pointer.field("name"))
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::with_code;
    use crate::diagnostic::Code;

    #[test]
    fn the_second_of_two_names_is_reported() {
        let text = "{\"resources\": [\n  {\"name\": \"me\", \"type\": \"api\"},\n  {\"type\": \"api\"},\n  {\"name\": \"me\", \"type\": \"api\"}\n]}";
        let found = with_code(text, Code::DuplicateResource);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location.pointer.as_str(), "/resources/2/name");
        assert_eq!(
            found[0].help.as_deref(),
            Some("the first resource named `me` is on line 2; rename one of them")
        );
    }

    #[test]
    fn unnamed_resources_never_clash() {
        let text = r#"{"resources": [{"type": "onRefresh"}, {"type": "onRefresh", "name": ""}]}"#;
        assert!(with_code(text, Code::DuplicateResource).is_empty());
    }
}
