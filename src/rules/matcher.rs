//! Alertmanager-style label matchers: `name=value`, `name!="value"`,
//! `name=~"re"`, `name!~re`.
//!
//! Same meaning as in Alertmanager so that SREs can paste matchers from their
//! routing tree: a missing label has the value `""`, and regexes must match
//! the whole value (`^(?:re)$`).

use crate::domain::LabelSet;
use regex::Regex;
use std::fmt;

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

/// One compiled matcher. Regexes are compiled once, at load time.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    name: String,
    /// The value as written (unescaped), kept for `Display` and for spotting
    /// contradictory equality matchers.
    value: String,
    test: Test,
}

impl Matcher {
    /// Parses `name op value`, spaces allowed around the operator; a value
    /// may be double-quoted, with `\"`, `\\`, `\n` and `\t` escapes.
    pub(crate) fn parse(input: &str) -> Result<Matcher, String> {
        let s = input.trim();
        let name_len = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(name_len);
        if name.is_empty() {
            return Err(format!(
                "invalid matcher {input:?}: expected a label name, then =, !=, =~ or !~, then a value"
            ));
        }
        check_label_name(name).map_err(|e| format!("invalid matcher {input:?}: {e}"))?;
        let rest = rest.trim_start();
        let (op, rest) = if rest.starts_with("==") {
            return Err(format!(
                "invalid matcher {input:?}: use = for equality, not =="
            ));
        } else if let Some(r) = rest.strip_prefix("=~") {
            (Op::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (Op::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (Op::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (Op::Equal, r)
        } else {
            return Err(format!(
                "invalid matcher {input:?}: expected =, !=, =~ or !~ after the label name {name:?}"
            ));
        };
        let rest = rest.trim_start();
        let value = if rest.starts_with('"') {
            let (value, tail) =
                unquote(rest).map_err(|e| format!("invalid matcher {input:?}: {e}"))?;
            if !tail.trim().is_empty() {
                return Err(format!(
                    "invalid matcher {input:?}: unexpected {:?} after the closing quote (write one matcher per list item)",
                    tail.trim()
                ));
            }
            value
        } else if rest.contains('"') {
            return Err(format!(
                "invalid matcher {input:?}: a value containing '\"' must be quoted as a whole, with \\\" for the quote"
            ));
        } else {
            rest.to_string()
        };
        Matcher::new(name, op, value).map_err(|e| format!("invalid matcher {input:?}: {e}"))
    }

    /// `name = value`, for the `match:` shorthand.
    pub(crate) fn equal(name: &str, value: &str) -> Result<Matcher, String> {
        check_label_name(name)?;
        Matcher::new(name, Op::Equal, value.to_string())
    }

    fn new(name: &str, op: Op, value: String) -> Result<Matcher, String> {
        let test = match op {
            Op::Equal => Test::Equal(value.clone()),
            Op::NotEqual => Test::NotEqual(value.clone()),
            Op::Regex => Test::Regex(anchored(&value)?),
            Op::NotRegex => Test::NotRegex(anchored(&value)?),
        };
        Ok(Matcher {
            name: name.to_string(),
            value,
            test,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The value this matcher requires by equality, if it is an `=` matcher.
    pub(crate) fn required_value(&self) -> Option<&str> {
        match &self.test {
            Test::Equal(v) => Some(v),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn matches(&self, labels: &LabelSet) -> bool {
        let v = labels.get(&self.name).unwrap_or("");
        match &self.test {
            Test::Equal(want) => v == want,
            Test::NotEqual(want) => v != want,
            Test::Regex(re) => re.is_match(v),
            Test::NotRegex(re) => !re.is_match(v),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.test {
            Test::Equal(_) => "=",
            Test::NotEqual(_) => "!=",
            Test::Regex(_) => "=~",
            Test::NotRegex(_) => "!~",
        };
        write!(f, "{}{op}\"", self.name)?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

#[derive(Clone, Copy)]
enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label name {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]*"
        ))
    }
}

/// Anchors like Alertmanager does, so `=~"db"` does not match `db-replica`.
fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        // The regex crate's message spans several lines with a caret diagram;
        // its last line is the part worth a one-line error.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(&text)
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        format!("invalid regex {re:?}: {reason}")
    })
}

/// Splits `"…"rest` into the unescaped quoted value and `rest`.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return Err(format!(
                        "unknown escape \\{other} in quoted value (write \\\\ for a backslash, or leave the value unquoted)"
                    ));
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("missing closing quote".to_string())
}
