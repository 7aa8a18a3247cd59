//! YAML as previewd reads it. Every YAML text previewd parses, a repository's `.preview.yaml` as
//! much as the platform's policy and its rendered templates, goes through here, so that no file
//! can cost more than a bounded amount of memory and time, whoever wrote it.
//!
//! The bounds hold before anything is built: a cap on the size of the text, then a budget that
//! the parser (serde-saphyr) enforces on its stream of events (nodes, nesting depth, anchors,
//! aliases and the events they replay, bytes of scalars). A repository's file may hold no anchors
//! or aliases at all: nothing in `.preview.yaml` needs them, and they are how a 20 KB file asks
//! for gigabytes. The platform's files may use them within the budget. A key given twice is an
//! error everywhere: a second `ttl:` silently winning over the first is a mistake in any file.
//!
//! Scalars are read as YAML 1.2 reads them, as previewd always has: `yes` and `on` are text,
//! `0755` and `1_000` are text where the type is not fixed (an environment variable's value).

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, NonFiniteFloatPolicy, Options};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The most previewd reads of any file in a repository: far more than a `.preview.yaml` needs.
pub const MAX_REPOSITORY_FILE_BYTES: usize = 64 * 1024;
/// The most previewd reads of the platform's policy and of each template, and parses of each
/// rendered template.
pub const MAX_PLATFORM_FILE_BYTES: usize = 1024 * 1024;

/// Who wrote a text, which sets how much of it previewd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A pull request's author: `.preview.yaml`, and any other file read from a repository.
    Repository,
    /// The platform team: the policy, the templates and what they render.
    Platform,
}

impl Origin {
    pub const fn max_bytes(self) -> usize {
        match self {
            Origin::Repository => MAX_REPOSITORY_FILE_BYTES,
            Origin::Platform => MAX_PLATFORM_FILE_BYTES,
        }
    }

    /// The parser's options: the budget, and the rules every previewd file follows.
    fn options(self) -> Options {
        let budget = match self {
            Origin::Repository => serde_saphyr::budget! {
                max_reader_input_bytes: Some(MAX_REPOSITORY_FILE_BYTES),
                max_anchors: 0,
                max_aliases: 0,
                max_depth: 32,
                max_documents: 1,
                max_nodes: 50_000,
                max_total_scalar_bytes: MAX_REPOSITORY_FILE_BYTES,
            },
            Origin::Platform => serde_saphyr::budget! {
                max_reader_input_bytes: Some(MAX_PLATFORM_FILE_BYTES),
                max_anchors: 10_000,
                max_aliases: 10_000,
                max_depth: 64,
                max_documents: 1_000,
                // Counted on aliases' replays too, so they bound what an alias can expand to.
                max_nodes: 100_000,
                max_total_scalar_bytes: 4 * MAX_PLATFORM_FILE_BYTES,
            },
        };
        let replayed = match self {
            Origin::Repository => 0,
            Origin::Platform => 100_000,
        };
        serde_saphyr::options! {
            budget: budget,
            alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: replayed },
            duplicate_keys: DuplicateKeyPolicy::Error,
            merge_keys: match self {
                Origin::Repository => MergeKeyPolicy::Error,
                Origin::Platform => MergeKeyPolicy::Merge,
            },
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            underscored_numbers_as_strings: true,
            non_finite_float_policy: NonFiniteFloatPolicy::AsString,
            reject_unsupported_tags: true,
            with_snippet: false,
        }
    }
}

/// Why a YAML text was refused, for whoever wrote it: the field (a dotted path, empty when the
/// problem is not about one field) and what is wrong. The message ends with the line and column
/// when there is a path, and starts with them when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub path: String,
    pub message: String,
}

impl YamlError {
    /// Control characters in either are escaped: both may quote the file (a key, a value), and
    /// a line break there would let a file's text pass for a line of previewd's own message on
    /// the pull request or in a log.
    fn at(path: String, message: String) -> Self {
        YamlError { path: escape_control(&path), message: escape_control(&message) }
    }
}

/// Parses one YAML document into `T` within `origin`'s bounds. `Ok(None)` for an empty document
/// (nothing, only comments, or `~`), so callers can say what to write instead.
pub fn parse<T: DeserializeOwned>(text: &str, origin: Origin) -> Result<Option<T>, YamlError> {
    check_size(text, origin)?;
    // A first pass that builds nothing: syntax, budget, anchors and duplicate keys are about no
    // field (path_to_error would name a half-read one, like `ttl.?`).
    let present: Option<IgnoredAny> =
        serde_saphyr::from_str_with_options(text, origin.options()).map_err(|e| describe(&e, text, "", origin))?;
    if present.is_none() {
        return Ok(None);
    }
    // The field's path is kept aside: the parser's own error is what comes out, so that it is not
    // mistaken for a second document after the first stopped half-read.
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, origin.options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map(Some)
    .map_err(|e| {
        let path = if path == "." { "" } else { path.as_str() };
        describe(&e, text, path, origin)
    })
}

/// Parses a stream of YAML documents (`---`-separated) into JSON values within `origin`'s
/// bounds, skipping empty ones. An error carries the number of the document it is in, counting
/// the documents that are not empty.
pub fn documents(text: &str, origin: Origin) -> Result<Vec<serde_json::Value>, (usize, YamlError)> {
    check_size(text, origin).map_err(|e| (1, e))?;
    let mut reader = text.as_bytes();
    let mut values = Vec::new();
    for document in serde_saphyr::read_with_options::<_, serde_json::Value>(&mut reader, origin.options()) {
        match document {
            Ok(value) => values.push(value),
            Err(error) => return Err((values.len() + 1, describe(&error, text, "", origin))),
        }
    }
    Ok(values)
}

/// `value` as YAML text.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

fn check_size(text: &str, origin: Origin) -> Result<(), YamlError> {
    if text.len() > origin.max_bytes() {
        return Err(YamlError::at(String::new(), too_large(Some(text.len() as u64), origin.max_bytes())));
    }
    Ok(())
}

/// "is N bytes; previewd reads at most M", for a file of `size` bytes (unknown: more than `limit`).
pub fn too_large(size: Option<u64>, limit: usize) -> String {
    match size {
        Some(size) => format!("the file is {size} bytes; previewd reads at most {}", show_bytes(limit)),
        None => format!("the file is larger than {}, the most previewd reads", show_bytes(limit)),
    }
}

/// `65536` as `64 KiB (65536 bytes)`.
pub fn show_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1024 * 1024 && b % (1024 * 1024) == 0 => format!("{} MiB ({b} bytes)", b / (1024 * 1024)),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB ({b} bytes)", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// serde-saphyr's error in previewd's words: the budget's refusals say what the limit is for, and
/// the location goes where a person looks for it.
fn describe(error: &serde_saphyr::Error, text: &str, path: &str, origin: Origin) -> YamlError {
    use serde_saphyr::{Error as E, MessageFormatter as _};
    // An error met through an alias is wrapped with the alias's locations; the location of the
    // outer error (where the alias is used) is where a person looks.
    let location = error.location().filter(|l| l.line() > 0);
    let mut original = error;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = original {
        original = error;
    }
    let message = match original {
        E::Budget { breach: BudgetBreach::Anchors { .. } | BudgetBreach::Aliases { .. }, .. }
        | E::AliasReplayLimitExceeded { .. }
            if origin == Origin::Repository =>
        {
            "anchors and aliases (`&name`, `*name`) are not allowed in a repository's file; write each value out"
                .to_owned()
        }
        E::Budget { breach, .. } => budget_message(breach),
        E::AliasReplayLimitExceeded { max_total_replayed_events, .. } => {
            format!(
                "too large or too complex for previewd: aliases expand to more than {max_total_replayed_events} nodes"
            )
        }
        E::MergeKeyNotAllowed { .. } => "merge keys (`<<`) are not allowed in a repository's file".to_owned(),
        // serde's own wording, which names the value and the fields, as previewd always said.
        E::InvalidScalar { ty, location } => match scalar_at(text, location) {
            Some(value) => format!("invalid value {value:?}, expected {ty}"),
            None => format!("invalid value, expected {ty}"),
        },
        E::SerdeUnknownField { field, expected, .. } => format!("unknown field `{field}`, {}", one_of(expected)),
        E::SerdeUnknownVariant { variant, expected, .. } => {
            format!("unknown variant `{variant}`, {}", one_of(expected))
        }
        E::Unexpected { expected: "mapping start", .. } => "expected a mapping (`key: value`)".to_owned(),
        E::Unexpected { expected: "sequence start", .. } => "expected a list (`[a, b]` or `- a` lines)".to_owned(),
        E::Unexpected { expected: "string scalar" | "scalar", .. } => {
            "expected a value, not a list or a mapping".to_owned()
        }
        // The message without its location (placed below).
        other => serde_saphyr::DefaultMessageFormatter.format_message(other).into_owned(),
    };
    let message = match location {
        None => message,
        Some(location) if path.is_empty() => {
            format!("line {} column {}: {message}", location.line(), location.column())
        }
        Some(location) => format!("{message} (line {} column {})", location.line(), location.column()),
    };
    YamlError::at(path.to_owned(), message)
}

/// `text` with control characters (line breaks, tabs, escape sequences) written as Rust
/// escapes (`\n`), everything else as it is.
pub fn escape_control(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_debug().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// The text of the scalar at `location`, when it is short enough to quote.
fn scalar_at<'a>(text: &'a str, location: &serde_saphyr::Location) -> Option<&'a str> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start.checked_add(len)?).filter(|s| !s.is_empty() && s.len() <= 100)
}

/// serde's "expected one of `a`, `b`".
fn one_of(expected: &[&str]) -> String {
    match expected {
        [] => "there are none".to_owned(),
        [only] => format!("expected `{only}`"),
        all => format!("expected one of {}", all.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")),
    }
}

fn budget_message(breach: &BudgetBreach) -> String {
    let what = match breach {
        BudgetBreach::Anchors { anchors } => format!("{anchors} anchors"),
        BudgetBreach::Aliases { aliases } => format!("{aliases} aliases"),
        BudgetBreach::Depth { depth } => format!("nesting {depth} deep"),
        BudgetBreach::Documents { documents } => format!("{documents} documents"),
        BudgetBreach::Nodes { nodes } => format!("{nodes} nodes (aliases counted as what they repeat)"),
        BudgetBreach::ScalarBytes { total_scalar_bytes } => format!("{total_scalar_bytes} bytes of values"),
        other => format!("{other:?}"),
    };
    format!("too large or too complex for previewd: {what} is beyond its limit")
}

/// A file previewd reads from the local disk (the policy, a template, a `.preview.yaml` for
/// `previewd render`) that it will not use.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {}", too_large(*size, *limit))]
    TooLarge { path: PathBuf, size: Option<u64>, limit: usize },
    #[error("{path}: the file is not UTF-8 text")]
    NotText { path: PathBuf },
}

/// Reads the text of `path`, refusing a file over `origin`'s cap before reading it (and reading
/// no more than the cap if it grows meanwhile).
pub fn read_file(path: &Path, origin: Origin) -> Result<String, ReadError> {
    let limit = origin.max_bytes();
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limit as u64 {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: Some(size), limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(limit));
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: None, limit });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        a: u32,
        #[serde(default)]
        b: BTreeMap<String, String>,
    }

    fn error(text: &str, origin: Origin) -> YamlError {
        parse::<Doc>(text, origin).unwrap_err()
    }

    /// Found by the long fuzz run (`e2e/fuzz.sh`): a quoted key with line breaks came back in
    /// the message as they were, so the file's text could pass for lines of previewd's own.
    #[test]
    fn a_key_with_line_breaks_is_quoted_on_one_line() {
        for origin in [Origin::Repository, Origin::Platform] {
            let e = error(r#"{"\n\n\u001b[31m": 0}"#, origin);
            let shown = format!("{}: {}", e.path, e.message);
            assert_eq!(shown.lines().count(), 1, "{shown}");
            assert!(shown.contains(r"unknown field `\n\n\u{1b}[31m`"), "{shown}");
        }
    }

    #[test]
    fn anchors_and_aliases_are_refused_in_repository_files_only() {
        let text = "b: { x: &v hello, y: *v }\n";
        let e = error(text, Origin::Repository);
        assert_eq!(e.path, "");
        assert!(e.message.contains("anchors and aliases (`&name`, `*name`) are not allowed"), "{e:?}");
        assert!(e.message.starts_with("line 1 column "), "{e:?}");
        let doc = parse::<Doc>(text, Origin::Platform).unwrap().unwrap();
        assert_eq!(doc.b["y"], "hello");
    }

    #[test]
    fn an_alias_bomb_is_refused_by_the_budget_in_platform_files() {
        let leaf = vec!["x"; 4000].join(", ");
        let bomb = vec!["*l"; 4000].join(", ");
        let text = format!("x-leaf: &l [{leaf}]\nx-bomb: [{bomb}]\n");
        let started = std::time::Instant::now();
        let e = parse::<serde_json::Value>(&text, Origin::Platform).unwrap_err();
        assert!(e.message.contains("too large or too complex for previewd"), "{e:?}");
        // Generous: the refusal takes milliseconds; this machine is slow and shared.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        for origin in [Origin::Repository, Origin::Platform] {
            let e = error("a: 1\na: 2\n", origin);
            assert!(e.message.contains("duplicate"), "{e:?}");
            let e = error("b: { k: x, k: y }\n", origin);
            assert!(e.message.contains("duplicate"), "{e:?}");
        }
    }

    #[test]
    fn texts_over_the_cap_are_refused_before_parsing() {
        let text = format!("b: {{ k: \"{}\" }}\n", "x".repeat(MAX_REPOSITORY_FILE_BYTES));
        let e = error(&text, Origin::Repository);
        assert!(e.message.contains(&format!("the file is {} bytes", text.len())), "{e:?}");
        assert!(e.message.contains("at most 64 KiB (65536 bytes)"), "{e:?}");
        assert!(parse::<Doc>(&text, Origin::Platform).is_ok());
    }

    #[test]
    fn scalars_are_read_as_yaml_1_2_reads_them() {
        let values: BTreeMap<String, serde_json::Value> =
            parse("a: yes\nb: 0755\nc: 1_000\nd: true\ne: 12\nf: .inf\ng: ~\n", Origin::Repository).unwrap().unwrap();
        assert_eq!(values["a"], "yes");
        assert_eq!(values["b"], "0755");
        assert_eq!(values["c"], "1_000");
        assert_eq!(values["d"], true);
        assert_eq!(values["e"], 12);
        assert_eq!(values["f"], ".inf");
        assert_eq!(values["g"], serde_json::Value::Null);
    }

    #[test]
    fn empty_documents_are_none() {
        for empty in ["", "\n", "# nothing\n", "~", "null\n"] {
            assert_eq!(parse::<Doc>(empty, Origin::Repository), Ok(None), "{empty:?}");
        }
    }

    #[test]
    fn documents_are_counted_in_errors() {
        let values = documents("a: 1\n---\n---\nb: 2\n", Origin::Platform).unwrap();
        assert_eq!(values, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]);
        let (document, e) = documents("a: 1\n---\nb: [\n", Origin::Platform).unwrap_err();
        assert_eq!(document, 2);
        assert!(e.message.starts_with("line "), "{e:?}");
    }

    #[test]
    fn files_over_the_cap_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; MAX_REPOSITORY_FILE_BYTES + 1]).unwrap();
        let e = read_file(&path, Origin::Repository).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { size: Some(65537), .. }), "{e:?}");
        assert!(e.to_string().contains("big.yaml: the file is 65537 bytes; previewd reads at most 64 KiB"), "{e}");
        assert_eq!(read_file(&path, Origin::Platform).unwrap().len(), MAX_REPOSITORY_FILE_BYTES + 1);
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(read_file(&path, Origin::Platform), Err(ReadError::NotText { .. })));
    }
}
