//! The fenced examples of a README, for tests that run them as written.
//!
//! A block whose info string names a file after the language (```` ```yaml my-values.yaml ````)
//! is that file's content: GitHub shows only the language, the tests write the file. In an
//! example, `<NAME>` (capitals, digits, `_`) marks a value of the reader's, which a test fills
//! in with [`fill`]; one it was not told about is an error, so a new placeholder cannot slip
//! through unfilled.

use anyhow::bail;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Block {
    /// The language: the info string's first word (may be empty).
    pub lang: String,
    /// The file the block is, when the info string names one.
    pub file: Option<String>,
    pub text: String,
    /// Line of the opening fence (1-based), for messages.
    pub line: usize,
}

/// Every fenced block (```` ``` ````) of `markdown`, in order.
pub fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or("").to_owned();
                let file = words.next().map(str::to_owned);
                open = Some(Block { lang, file, text: String::new(), line: i + 1 });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// `text` with each `<NAME>` replaced by its value in `values`.
pub fn fill(text: &str, values: &BTreeMap<&str, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
        match name_len {
            Some(n) if n > 0 && after[n..].starts_with('>') => {
                let name = &after[..n];
                let Some(value) = values.get(name) else {
                    bail!("the example has a placeholder <{name}> the test does not fill in");
                };
                out.push_str(value);
                rest = &after[n + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_files_and_placeholders() {
        let md = "x\n```yaml a.yaml\nk: <V>\n```\n```sh\necho <set> <W>\n```\n";
        let blocks = fenced_blocks(md);
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].lang.as_str(), blocks[0].file.as_deref(), blocks[0].line), ("yaml", Some("a.yaml"), 2));
        let values = BTreeMap::from([("V", "1".to_owned())]);
        assert_eq!(fill(&blocks[0].text, &values).unwrap(), "k: 1\n");
        assert!(fill(&blocks[1].text, &values).unwrap_err().to_string().contains("<W>"));
    }
}
