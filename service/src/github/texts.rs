//! The texts previewd posts on pull requests, rendered from the platform team's minijinja
//! templates in `<templates_dir>/github/`. Each template is rendered once with sample values
//! at start, so a broken one stops previewd with its name and line instead of failing a report.

use super::commands::{CommandHelp, HELP};
use serde::Serialize;
use std::path::Path;

/// The templates previewd needs, by file name.
const TEMPLATES: [&str; 5] = ["comment.md", "expiring.md", "help.md", "refused.md", "stale-approval.md"];

#[derive(Debug, thiserror::Error)]
pub enum TextsError {
    #[error("cannot read the pull request text template {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("pull request text template {name}: {message}")]
    Template { name: String, message: String },
}

fn template_error(name: &str, error: &minijinja::Error) -> TextsError {
    let mut message = error.to_string();
    if let Some(line) = error.line() {
        message = format!("line {line}: {message}");
    }
    TextsError::Template { name: name.to_owned(), message }
}

/// What the sticky comment shows.
#[derive(Debug, Clone, Serialize)]
pub struct CommentContext {
    pub state: String,
    pub url: Option<String>,
    /// Every public service, when there are several: (name, URL).
    pub services: Vec<(String, String)>,
    pub head_sha: String,
    pub deployed_sha: String,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub expires_at: Option<String>,
    pub expires_in: Option<String>,
    pub warned: bool,
    pub keep: bool,
    pub keep_label: String,
    pub environment: String,
    pub repo: String,
    pub number: i64,
    pub commands: &'static [CommandHelp],
}

impl CommentContext {
    fn sample() -> Self {
        CommentContext {
            state: "Ready".to_owned(),
            url: Some("https://web-pr-1-abcdef.preview.example.com".to_owned()),
            services: vec![("api".to_owned(), "https://api--web-pr-1-abcdef.preview.example.com".to_owned())],
            head_sha: "0".repeat(40),
            deployed_sha: "0".repeat(40),
            reason: Some("sample reason".to_owned()),
            note: Some("sample note".to_owned()),
            expires_at: Some("2026-01-01T00:00:00Z".to_owned()),
            expires_in: Some("2h".to_owned()),
            warned: true,
            keep: true,
            keep_label: "preview:keep".to_owned(),
            environment: "web-pr-1-abcdef".to_owned(),
            repo: "acme/web".to_owned(),
            number: 1,
            commands: HELP,
        }
    }
}

pub struct Texts {
    env: minijinja::Environment<'static>,
}

impl Texts {
    /// Loads the templates named in `TEMPLATES` from `dir` and tries each.
    pub fn load(dir: &Path) -> Result<Texts, TextsError> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for name in TEMPLATES {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| TextsError::Read { path: path.display().to_string(), source })?;
            env.add_template_owned(name, text).map_err(|e| template_error(name, &e))?;
        }
        let texts = Texts { env };
        texts.comment(&CommentContext::sample())?;
        texts.expiring(&CommentContext::sample(), "octocat")?;
        texts.help("sample problem")?;
        texts.refused("octocat", "/preview destroy")?;
        texts.stale_approval("octocat", "abcdef0", true)?;
        Ok(texts)
    }

    fn render(&self, name: &str, context: impl Serialize) -> Result<String, TextsError> {
        let template = self.env.get_template(name).map_err(|e| template_error(name, &e))?;
        let text = template
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))
            .map_err(|e| template_error(name, &e))?;
        Ok(text.trim().to_owned())
    }

    pub fn comment(&self, context: &CommentContext) -> Result<String, TextsError> {
        self.render("comment.md", context)
    }

    /// The warning before expiry, posted as a comment of its own so that GitHub notifies
    /// `author`, whom it mentions (an edit of the sticky comment notifies nobody).
    pub fn expiring(&self, context: &CommentContext, author: &str) -> Result<String, TextsError> {
        #[derive(Serialize)]
        struct Expiring<'a> {
            #[serde(flatten)]
            comment: &'a CommentContext,
            author: &'a str,
        }
        self.render("expiring.md", Expiring { comment: context, author })
    }

    pub fn help(&self, problem: &str) -> Result<String, TextsError> {
        #[derive(Serialize)]
        struct Help<'a> {
            problem: &'a str,
            commands: &'static [CommandHelp],
        }
        self.render("help.md", Help { problem, commands: HELP })
    }

    pub fn refused(&self, login: &str, command: &str) -> Result<String, TextsError> {
        self.render("refused.md", minijinja::context! { login, command })
    }

    /// `login` approved a commit, but `head` is the pull request's head now: pushed `after` the
    /// approval, or not known to be older.
    pub fn stale_approval(&self, login: &str, head: &str, after: bool) -> Result<String, TextsError> {
        self.render("stale-approval.md", minijinja::context! { login, head, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> Texts {
        Texts::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/github")).unwrap()
    }

    #[test]
    fn the_shipped_templates_load() {
        let text = texts().comment(&CommentContext::sample()).unwrap();
        assert!(text.contains("https://web-pr-1-abcdef.preview.example.com"));
        assert!(text.contains("Expires soon"));
        assert!(text.contains("/preview extend 2h"));
        let warning = texts().expiring(&CommentContext::sample(), "octocat").unwrap();
        assert!(warning.starts_with("@octocat"), "{warning}");
        assert!(warning.contains("2026-01-01T00:00:00Z") && warning.contains("/preview extend"), "{warning}");
    }

    #[test]
    fn a_broken_template_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        for name in TEMPLATES {
            std::fs::write(dir.path().join(name), "fine").unwrap();
        }
        std::fs::write(dir.path().join("comment.md"), "line one\n{{ state | nosuchfilter }}").unwrap();
        let error = Texts::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("comment.md") && error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_missing_template_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = Texts::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("comment.md"), "{error}");
    }
}
