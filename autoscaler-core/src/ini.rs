//! INI text to `(section, option, value)` entries with oslo.config's rules: no `%`
//! interpolation, no escapes, `#`/`;`/`\` inside values kept verbatim, indented lines
//! continue the previous value, a value wholly wrapped in matching quotes loses them, and
//! options before any `[section]` are refused (configuration files) or kept in an
//! unnamed section (templates, see [`Keys::BeforeSection`]). Pure: text in, entries or
//! errors out. The configuration and the templates both read INI through here, so the
//! two never disagree on what a line means.
//!
//! rust-ini does the parsing. A line pass in front of it checks the line shapes oslo's
//! `iniparser` accepts, so that errors carry line numbers and the few places where
//! rust-ini would read more leniently than oslo (a line without `=` swallowing the next
//! one, a continuation after a blank line or a comment) are refused as oslo refuses them.

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

/// rust-ini reads a backslash at the very end of a line as a line continuation even with
/// escapes off; oslo keeps it. Such backslashes are swapped for this private-use
/// character before parsing and swapped back in the values.
const TRAILING_BACKSLASH: char = '\u{F8FF}';

/// A line oslo.config's INI syntax does not allow. Messages never quote the line, which
/// might hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    /// A line the INI syntax does not allow.
    #[error("{}: line {line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// `name = value` before any `[section]` header in a configuration file.
    #[error(
        "{}: line {line}: option {option:?} is outside any section (add a [DEFAULT] or other section header above it)",
        file.display()
    )]
    OutsideSection {
        file: PathBuf,
        line: usize,
        option: String,
    },
}

/// Whether options may stand before the first `[section]` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// oslo.config's rule for configuration files: every option is in a section.
    InSections,
    /// Templates: options before any header form an unnamed section (name `""`).
    BeforeSection,
}

/// One `[section]` block as written; a section written twice appears twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniSection {
    /// As oslo normalizes group names: `DEFAULT` as is, any other name lowercased; `""`
    /// for options before the first header (only with [`Keys::BeforeSection`]).
    pub name: String,
    /// `(option, value)` in file order; a repeated option appears each time.
    pub entries: Vec<(String, String)>,
}

/// Parses one file's text; `file` only names it in errors. All syntax errors of the file
/// are returned, in line order.
pub fn parse(file: &Path, text: &str, keys: Keys) -> Result<Vec<IniSection>, Vec<IniError>> {
    let checked = check_lines(file, text, keys)?;
    let options = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    };
    let ini = Ini::load_from_str_opt(&checked, options).map_err(|e| {
        vec![IniError::Syntax {
            file: file.to_owned(),
            line: e.line,
            message: e.msg.into_owned(),
        }]
    })?;
    let restore = |s: &str| s.replace(TRAILING_BACKSLASH, "\\");
    Ok(ini
        .iter()
        // With Keys::InSections the line pass refused options in the unnamed section, so
        // it is empty and left out.
        .filter(|(name, props)| name.is_some() || !props.is_empty())
        .map(|(name, props)| IniSection {
            name: name.map(normalize_section).unwrap_or_default(),
            entries: props
                .iter()
                .map(|(k, v)| (restore(k), strip_quotes(&restore(v))))
                .collect(),
        })
        .collect())
}

fn normalize_section(name: &str) -> String {
    if name == "DEFAULT" {
        name.to_owned()
    } else {
        name.to_lowercase()
    }
}

/// oslo's `_split_key_value`: a first line wholly wrapped in matching quotes loses them.
fn strip_quotes(value: &str) -> String {
    let (first, rest) = match value.find('\n') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let quoted = first.len() >= 2
        && (first.starts_with('"') || first.starts_with('\''))
        && first.ends_with(&first[..1]);
    if quoted {
        format!("{}{rest}", &first[1..first.len() - 1])
    } else {
        value.to_owned()
    }
}

/// The line pass (oslo's `iniparser.BaseParser.parse`): returns the text to hand to
/// rust-ini, with trailing backslashes protected, or every bad line. Errors never quote
/// the line, which might hold a password.
fn check_lines(file: &Path, text: &str, keys: Keys) -> Result<String, Vec<IniError>> {
    let mut errors = Vec::new();
    let mut protected = String::with_capacity(text.len());
    let mut in_section = keys == Keys::BeforeSection;
    // Whether an indented line here continues a value (oslo: "key is not None").
    let mut in_value = false;
    let syntax = |line: usize, message: &str| IniError::Syntax {
        file: file.to_owned(),
        line,
        message: message.to_owned(),
    };

    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let content = raw.strip_suffix('\n').unwrap_or(raw);
        match content.strip_suffix('\\') {
            Some(before) => {
                protected.push_str(before);
                protected.push(TRAILING_BACKSLASH);
                protected.push_str(&raw[content.len()..]);
            }
            None => protected.push_str(raw),
        }

        let line = content.trim_end();
        if line.is_empty() {
            in_value = false;
        } else if line.starts_with([' ', '\t']) {
            if !in_value {
                errors.push(syntax(
                    number,
                    "unexpected continuation line (indented lines continue the value above; a blank or comment line ends it)",
                ));
            }
        } else if line.starts_with(['#', ';']) {
            in_value = false;
        } else if let Some(header) = line.strip_prefix('[') {
            in_value = false;
            match header.strip_suffix(']') {
                None => errors.push(syntax(number, "a section header must end with ']'")),
                Some(name) if name.trim().is_empty() => {
                    errors.push(syntax(number, "empty section name"))
                }
                Some(_) => in_section = true,
            }
        } else {
            match line.find(['=', ':']) {
                None => {
                    in_value = false;
                    errors.push(syntax(
                        number,
                        "expected `name = value`, a [section] header or a comment",
                    ));
                }
                Some(0) => {
                    in_value = false;
                    errors.push(syntax(number, "missing option name before '='"));
                }
                Some(sep) if !in_section => {
                    in_value = false;
                    errors.push(IniError::OutsideSection {
                        file: file.to_owned(),
                        line: number,
                        option: line[..sep].trim().to_owned(),
                    });
                }
                Some(_) => in_value = true,
            }
        }
    }
    if errors.is_empty() {
        Ok(protected)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(text: &str) -> Vec<IniSection> {
        parse(Path::new("test.conf"), text, Keys::InSections).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn entries(text: &str) -> Vec<(String, String)> {
        sections(text).into_iter().flat_map(|s| s.entries).collect()
    }

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("/etc/x.conf"), text, Keys::InSections)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn percent_formats_are_not_interpolated() {
        let text = "[DEFAULT]\nlogging_context_format_string = %(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(request_id)s] %(message)s\n";
        assert_eq!(
            entries(text),
            vec![pair(
                "logging_context_format_string",
                "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(request_id)s] %(message)s"
            )]
        );
    }

    #[test]
    fn hash_semicolon_and_backslashes_in_values_are_verbatim() {
        let text = "[s]\na = x # not a comment\nb = y ; nor this\nc = C:\\dir\\n\\t\nd = ends with \\\ne = after\n";
        assert_eq!(
            entries(text),
            vec![
                pair("a", "x # not a comment"),
                pair("b", "y ; nor this"),
                pair("c", "C:\\dir\\n\\t"),
                pair("d", "ends with \\"),
                pair("e", "after"),
            ]
        );
    }

    #[test]
    fn quotes_are_kept_unless_they_wrap_the_whole_value() {
        let text = "[s]\na = \"quoted\"\nb = 'single'\nc = it's \"partly\" quoted\nd = \"\ne = \"mismatched'\n";
        assert_eq!(
            entries(text),
            vec![
                pair("a", "quoted"),
                pair("b", "single"),
                pair("c", "it's \"partly\" quoted"),
                pair("d", "\""),
                pair("e", "\"mismatched'"),
            ]
        );
    }

    #[test]
    fn indented_lines_continue_the_value() {
        let text = "[s]\nlist = a,\n  b,\n\tc\nnext = 1\n";
        assert_eq!(
            entries(text),
            vec![pair("list", "a,\nb,\nc"), pair("next", "1")]
        );
    }

    #[test]
    fn comments_blank_lines_crlf_and_colon_separator() {
        let text = "# top\r\n; also\r\n\r\n[DEFAULT]\r\n#a = 1\r\nb: 2\r\nc=3\r\n";
        assert_eq!(entries(text), vec![pair("b", "2"), pair("c", "3")]);
    }

    #[test]
    fn repeated_keys_and_sections_keep_file_order() {
        let got = sections("[a]\nx = 1\nx = 2\n[B]\ny = 3\n[a]\nx = 4\n[DEFAULT]\n");
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "a", "DEFAULT"]);
        assert_eq!(got[0].entries, vec![pair("x", "1"), pair("x", "2")]);
        assert_eq!(got[2].entries, vec![pair("x", "4")]);
    }

    #[test]
    fn option_outside_a_section_is_refused_with_file_line_and_option() {
        assert_eq!(
            errors("# comment\ndebug = true\n[DEFAULT]\n"),
            ["/etc/x.conf: line 2: option \"debug\" is outside any section (add a [DEFAULT] or other section header above it)"]
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_numbers_and_not_quoted() {
        let text = "[DEFAULT]\ns3cret password\n= 1\n[unterminated\n[]\n\n  orphan continuation\n";
        let errs = errors(text);
        assert_eq!(
            errs,
            [
                "/etc/x.conf: line 2: expected `name = value`, a [section] header or a comment",
                "/etc/x.conf: line 3: missing option name before '='",
                "/etc/x.conf: line 4: a section header must end with ']'",
                "/etc/x.conf: line 5: empty section name",
                "/etc/x.conf: line 7: unexpected continuation line (indented lines continue the value above; a blank or comment line ends it)",
            ]
        );
        assert!(errs.iter().all(|e| !e.contains("s3cret")));
    }

    #[test]
    fn a_comment_ends_a_multi_line_value() {
        let errs = errors("[s]\na = 1\n# note\n  2\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("/etc/x.conf: line 4: unexpected continuation"));
    }

    #[test]
    fn header_with_trailing_comment_is_refused_as_oslo_does() {
        assert_eq!(
            errors("[DEFAULT] # main\n"),
            ["/etc/x.conf: line 1: a section header must end with ']'"]
        );
    }

    #[test]
    fn empty_text_and_empty_value() {
        assert!(sections("").is_empty());
        assert_eq!(entries("[s]\nempty =\n"), vec![pair("empty", "")]);
    }
}
