//! Markdown for a terminal: `engine explain` prints a section of docs/diagnostics.md as text a
//! person reads, not as its source: paragraphs and list items wrapped to the width, code blocks
//! indented as they are, `**bold**` and headings in bold and `code` in cyan when colour is on.
//! Without colour (a pipe, `NO_COLOR`) the same layout in plain text, `code` kept in backticks.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

/// The width paragraphs are wrapped to (the help's `max_term_width`).
const WIDTH: usize = 100;

const BOLD: &str = "\x1b[1m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// A piece of text and how it looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Bold,
    Code,
}

/// Renders `markdown` for a terminal; `color` adds ANSI styles. The text ends with a newline.
pub(crate) fn render(markdown: &str, color: bool) -> String {
    let mut out = Renderer {
        color,
        text: String::new(),
        words: Vec::new(),
        word: Vec::new(),
        bold: 0,
        link: None,
        indent: 0,
        first_indent: None,
        in_code_block: false,
    };
    for event in Parser::new(markdown) {
        out.event(event);
    }
    out.text.truncate(out.text.trim_end().len());
    out.text.push('\n');
    out.text
}

struct Renderer {
    color: bool,
    text: String,
    /// The words of the block being written, each a list of styled pieces.
    words: Vec<Vec<(String, Style)>>,
    word: Vec<(String, Style)>,
    bold: usize,
    /// The destination of the link being written, shown after its text.
    link: Option<String>,
    /// Indentation of the block's lines, and of its first line (a list item's `- `).
    indent: usize,
    first_indent: Option<String>,
    in_code_block: bool,
}

impl Renderer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(Tag::Heading { .. } | Tag::Strong) => self.bold += 1,
            Event::End(TagEnd::Heading(level)) => {
                self.bold -= 1;
                self.flush();
                if level == HeadingLevel::H1 {
                    self.text.push('\n');
                }
            }
            Event::End(TagEnd::Paragraph) => self.flush(),
            Event::End(TagEnd::Strong) => self.bold -= 1,
            Event::Start(Tag::Item) => {
                self.first_indent = Some(format!("{}- ", " ".repeat(self.indent)));
                self.indent += 2;
            }
            Event::End(TagEnd::Item) => {
                self.flush();
                self.indent -= 2;
            }
            Event::End(TagEnd::List(_)) => self.text.push('\n'),
            Event::Start(Tag::Link { dest_url, .. }) => {
                // A link within the page (`#w0503-unknown-key`) says nothing in a terminal; a
                // page beside it is named from the repository root (the pages live in docs/).
                self.link = if dest_url.starts_with('#') {
                    None
                } else if dest_url.contains("://") {
                    Some(dest_url.to_string())
                } else {
                    Some(format!("docs/{dest_url}"))
                };
            }
            Event::End(TagEnd::Link) => {
                if let Some(url) = self.link.take() {
                    self.space();
                    self.push(&format!("({url})"), Style::Plain);
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                self.flush();
                self.in_code_block = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                self.in_code_block = false;
                self.text.push('\n');
            }
            Event::Text(text) if self.in_code_block => {
                for line in text.lines() {
                    self.text.push_str(&" ".repeat(self.indent + 4));
                    self.text.push_str(line);
                    self.text.push('\n');
                }
            }
            Event::Text(text) => {
                let style = if self.bold > 0 {
                    Style::Bold
                } else {
                    Style::Plain
                };
                self.words_of(&text, style);
            }
            Event::Code(code) => {
                if self.color {
                    self.push(&code, Style::Code);
                } else {
                    self.push(&format!("`{code}`"), Style::Plain);
                }
            }
            Event::SoftBreak | Event::HardBreak => self.space(),
            _ => {}
        }
    }

    /// Adds text, a new word at each space.
    fn words_of(&mut self, text: &str, style: Style) {
        for (index, piece) in text.split(' ').enumerate() {
            if index > 0 {
                self.space();
            }
            if !piece.is_empty() {
                self.push(piece, style);
            }
        }
    }

    fn push(&mut self, text: &str, style: Style) {
        self.word.push((text.to_owned(), style));
    }

    /// Ends the current word.
    fn space(&mut self) {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
    }

    /// Writes the block's words, wrapped to [`WIDTH`], then a blank line.
    fn flush(&mut self) {
        self.space();
        if self.words.is_empty() {
            return;
        }
        let rest = " ".repeat(self.indent);
        let first = self.first_indent.take().unwrap_or_else(|| rest.clone());
        let mut line_len = 0;
        self.text.push_str(&first);
        line_len += first.len();
        let words = std::mem::take(&mut self.words);
        let mut at_start = true;
        for word in words {
            let len: usize = word.iter().map(|(text, _)| text.chars().count()).sum();
            if !at_start && line_len + 1 + len > WIDTH {
                self.text.push('\n');
                self.text.push_str(&rest);
                line_len = rest.len();
                at_start = true;
            }
            if !at_start {
                self.text.push(' ');
                line_len += 1;
            }
            for (text, style) in word {
                self.styled(&text, style);
            }
            line_len += len;
            at_start = false;
        }
        self.text.push_str("\n\n");
        if self.indent > 0 && self.first_indent.is_none() {
            // A list item's lines are not followed by a blank line: the list's end is.
            self.text.pop();
        }
    }

    fn styled(&mut self, text: &str, style: Style) {
        let code = match (self.color, style) {
            (false, _) | (true, Style::Plain) => None,
            (true, Style::Bold) => Some(BOLD),
            (true, Style::Code) => Some(CYAN),
        };
        match code {
            Some(code) => {
                self.text.push_str(code);
                self.text.push_str(text);
                self.text.push_str(RESET);
            }
            None => self.text.push_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: &str = "### E0101 undeclared-key\n\nA `vendorPath` refers to a key that \
        nothing declares ([reserved keys](connector-format.md#reserved-keys)); keys read by \
        parameters are only warnings ([W0503](#w0503-unknown-key)): such a parameter is skipped \
        while the key has no value.\n\n```text\nerror[E0101]: unknown configuration key `tenant`\n  |\n```\n\n\
        **Fix.** Fix the typo:\n\n- declare it\n- or remove it\n";

    #[test]
    fn plain_text_has_no_markdown_syntax_and_wraps() {
        let text = render(SECTION, false);
        insta::assert_snapshot!(text, @r"
        E0101 undeclared-key

        A `vendorPath` refers to a key that nothing declares (reserved keys
        (docs/connector-format.md#reserved-keys)); keys read by parameters are only warnings (W0503): such a
        parameter is skipped while the key has no value.

            error[E0101]: unknown configuration key `tenant`
              |

        Fix. Fix the typo:

        - declare it
        - or remove it
        ");
        assert!(text.lines().all(|line| line.chars().count() <= WIDTH));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn colour_styles_headings_bold_and_code_cyan() {
        let text = render(SECTION, true);
        assert!(
            text.starts_with("\x1b[1mE0101\x1b[0m \x1b[1mundeclared-key\x1b[0m\n"),
            "{text}"
        );
        assert!(
            text.contains("A \x1b[36mvendorPath\x1b[0m refers"),
            "{text}"
        );
        assert!(text.contains("\x1b[1mFix.\x1b[0m Fix the typo:"), "{text}");
        // Code blocks are shown as they are, backticks and all.
        assert!(
            text.contains("    error[E0101]: unknown configuration key `tenant`\n"),
            "{text}"
        );
    }
}
