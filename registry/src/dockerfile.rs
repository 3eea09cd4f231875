//! Dockerfile parsing: logical lines (with `\` continuations, comments and
//! parser directives dropped), instructions with their `--flags`, JSON and
//! shell forms, and docker's variable substitution (`$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR:+alt}`) with its quoting rules.
//!
//! This module only understands text; what each instruction means for a
//! WebAssembly image is decided in [`crate::build`]. Every error names the
//! Dockerfile and the line the instruction starts on.

use crate::error::{RegistryError, Result};

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line the instruction starts on.
    pub line: usize,
    /// The keyword, upper-cased (`COPY`).
    pub keyword: String,
    /// Leading `--name=value` flags (`--chown=0:0` → `("chown", "0:0")`).
    pub flags: Vec<(String, String)>,
    /// The rest of the line, continuations joined, flags removed.
    pub args: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The file's name, for messages.
    pub file: String,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
}

impl Dockerfile {
    /// An error about line `line` of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> RegistryError {
        RegistryError::Dockerfile {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }
}

/// Parses Dockerfile `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile> {
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut in_directives = true;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            // `# syntax=…` / `# escape=…` directives are only recognised before
            // anything else; berth has one syntax and the `\` escape, so they are ignored.
            if in_directives && comment.trim().contains('=') {
                continue;
            }
            in_directives = false;
            continue; // comment lines are dropped, even inside continuations
        }
        in_directives = false;
        if trimmed.is_empty() {
            // Blank lines end nothing: docker skips them, even inside a continuation.
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        match &mut current {
            Some((_, text)) => {
                text.push(' ');
                text.push_str(body.trim());
            }
            None => current = Some((line_no, body.trim().to_string())),
        }
        if !continues && let Some((start, text)) = current.take() {
            instructions.push(split_instruction(start, &text, file)?);
        }
    }
    if let Some((start, text)) = current.take() {
        instructions.push(split_instruction(start, &text, file)?);
    }
    Ok(Dockerfile {
        file: file.to_string(),
        instructions,
    })
}

fn split_instruction(line: usize, text: &str, file: &str) -> Result<Instruction> {
    let (keyword, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim_start()),
        None => (text, ""),
    };
    if !keyword.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(RegistryError::Dockerfile {
            file: file.to_string(),
            line,
            message: format!("{keyword:?} is not a Dockerfile instruction"),
        });
    }
    let mut flags = Vec::new();
    let mut args = rest;
    while let Some(flag) = args.strip_prefix("--") {
        let (word, after) = match flag.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim_start()),
            None => (flag, ""),
        };
        let (name, value) = word.split_once('=').unwrap_or((word, ""));
        flags.push((name.to_string(), value.to_string()));
        args = after;
    }
    Ok(Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        flags,
        args: args.to_string(),
    })
}

/// Looks a variable up by name (`None`: unset).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The JSON (exec) form `["a", "b"]`, if `args` is one.
pub fn json_form(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// Splits `text` into words the way docker's shell lexer does: whitespace
/// separates words, quotes group, `\` escapes, and `$VAR`, `${VAR}`,
/// `${VAR:-default}`, `${VAR:+alt}` are replaced using `lookup` (outside
/// single quotes). With `lookup = None` variables are kept literally.
pub fn words(text: &str, lookup: Option<Lookup<'_>>) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('\'') => break,
                        Some(&c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('"') => break,
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            word.push(chars[i + 1]);
                            i += 1;
                        }
                        Some('$') if lookup.is_some() => {
                            i = expand(&chars, i, lookup, &mut word)?;
                            continue;
                        }
                        Some(&c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                    i += 1;
                }
                i += 1;
            }
            '\\' => {
                in_word = true;
                if let Some(&n) = chars.get(i + 1) {
                    word.push(n);
                }
                i += 2;
            }
            '$' if lookup.is_some() => {
                in_word = true;
                i = expand(&chars, i, lookup, &mut word)?;
            }
            c => {
                in_word = true;
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// Replaces variables in `text` without splitting it into words (used for
/// values that may contain spaces, like the legacy `ENV KEY value` form).
pub fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 2;
            }
            '$' => i = expand(&chars, i, Some(lookup), &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Expands the variable starting at `chars[i] == '$'`; returns the index after it.
fn expand(
    chars: &[char],
    i: usize,
    lookup: Option<Lookup<'_>>,
    out: &mut String,
) -> Result<usize, String> {
    let get = |name: &str| lookup.and_then(|f| f(name));
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("unterminated ${ in variable substitution")?;
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let (name, op, word) = if let Some((n, w)) = inner.split_once(":-") {
                (n, Some('-'), w)
            } else if let Some((n, w)) = inner.split_once(":+") {
                (n, Some('+'), w)
            } else {
                (inner.as_str(), None, "")
            };
            if name.is_empty() || !name.chars().all(is_name) {
                return Err(format!(
                    "bad substitution ${{{inner}}}: expected ${{NAME}}, ${{NAME:-default}} or ${{NAME:+alternative}}"
                ));
            }
            let value = get(name).filter(|v| !v.is_empty());
            match (op, value) {
                (Some('-'), None) => out.push_str(word),
                (Some('+'), Some(_)) => out.push_str(word),
                (Some('+'), None) => {}
                (_, Some(v)) => out.push_str(&v),
                (_, None) => {}
            }
            Ok(i + 3 + close)
        }
        Some(&c) if is_name(c) => {
            let len = chars[i + 1..].iter().take_while(|&&c| is_name(c)).count();
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            if let Some(v) = get(&name) {
                out.push_str(&v);
            }
            Ok(i + 1 + len)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_directives() -> Result<()> {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# a comment\nFROM scratch\nCOPY --chown=1:1 a \\\n  # inner comment\n  b /x/\n\nCMD [\"run\"]\n",
            "Dockerfile",
        )?;
        let kw: Vec<_> = df
            .instructions
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect();
        assert_eq!(kw, vec![(3, "FROM"), (4, "COPY"), (8, "CMD")]);
        assert_eq!(
            df.instructions[1].flags,
            vec![("chown".to_string(), "1:1".to_string())]
        );
        assert_eq!(df.instructions[1].args, "a b /x/");
        assert_eq!(
            json_form(&df.instructions[2].args),
            Some(vec!["run".to_string()])
        );
        Ok(())
    }

    #[test]
    fn substitution() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        let w = words(
            "x=$A y=${A}b \"z=${B:-d f}\" '$A' ${E:-e} ${A:+p} \\$A",
            Some(&vars),
        );
        assert_eq!(
            w,
            Ok(vec![
                "x=1".to_string(),
                "y=1b".into(),
                "z=d f".into(),
                "$A".into(),
                "e".into(),
                "p".into(),
                "$A".into()
            ])
        );
        assert!(words("${A", Some(&vars)).is_err());
    }
}
