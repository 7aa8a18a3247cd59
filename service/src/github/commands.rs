//! `/preview` commands in pull request comments. Parsing is pure; carrying them out is in
//! `process`.
//!
//! Comments are written by anyone who can comment on a public pull request, so the parser is
//! bounded (it reads one line, and only its first few words) and what it says about a malformed
//! command never quotes the comment: previewd's replies must not repeat a commenter's text.

use std::time::Duration;

/// The longest duration text `/preview extend` reads: more than any duration previewd writes
/// back (`Command::text`, at most nine parts like `584542046090years 11months ...`).
const MAX_DURATION_TEXT: usize = 128;

/// The most words after the verb any command takes (a duration has at most nine parts).
const MAX_ARGUMENTS: usize = 16;

/// A command previewd understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Give this pull request an environment whatever the trigger mode or draft state.
    Deploy,
    /// Deploy the head commit again.
    Redeploy,
    /// Move the expiry later.
    Extend(Duration),
    /// Tear the environment down now.
    Destroy,
    /// Replace the database with a new one, seeded again.
    ResetDatabase,
    /// Wake a sleeping environment.
    Wake,
    /// Refresh the pull request comment.
    Status,
    /// Approve a fork's head commit for an environment: the one named, or else the one that was
    /// the head when the comment was written.
    Approve(Option<ShaPrefix>),
}

/// The start of a commit SHA, as `/preview approve <sha>` names it: 7 to 40 lower-case
/// hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShaPrefix(String);

impl ShaPrefix {
    pub const MIN: usize = 7;
    pub const MAX: usize = 40;

    pub fn parse(text: &str) -> Option<ShaPrefix> {
        let fits = (Self::MIN..=Self::MAX).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
        fits.then(|| ShaPrefix(text.to_ascii_lowercase()))
    }

    /// Whether `sha` (a full commit SHA) starts with this prefix.
    pub fn names(&self, sha: &str) -> bool {
        sha.len() >= self.0.len() && sha[..self.0.len()].eq_ignore_ascii_case(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is wrong with a `/preview` line. The messages are posted on the pull request, so none
/// of them holds any of the comment's own text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`/preview` needs a command")]
    Missing,
    #[error("that is not a previewd command")]
    Unknown,
    #[error("`/preview {0}` takes no arguments")]
    NoArguments(&'static str),
    #[error("`/preview extend` needs a duration, like `/preview extend 2h`")]
    NoDuration,
    #[error("`/preview extend` needs a duration written like `2h`, `90m` or `1d`")]
    BadDuration,
    #[error("`/preview extend` needs a duration longer than zero")]
    ZeroDuration,
    #[error("`/preview approve` takes at most one argument, a commit SHA of 7 to 40 hexadecimal characters")]
    BadCommit,
}

/// One line of the help text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandHelp {
    pub text: &'static str,
    pub help: &'static str,
}

pub const HELP: &[CommandHelp] = &[
    CommandHelp { text: "/preview deploy", help: "create the environment (whatever the trigger mode or draft state)" },
    CommandHelp { text: "/preview redeploy", help: "deploy the head commit again" },
    CommandHelp { text: "/preview extend 2h", help: "keep the environment longer (within the policy's maximum)" },
    CommandHelp { text: "/preview destroy", help: "tear the environment down now" },
    CommandHelp {
        text: "/preview reset-db",
        help: "replace the database with a new, empty one, seed it again, and deploy",
    },
    CommandHelp { text: "/preview wake", help: "wake the environment when it sleeps (a visit wakes it too)" },
    CommandHelp { text: "/preview status", help: "refresh this comment" },
    CommandHelp {
        text: "/preview approve",
        help: "allow an environment for a fork's head commit as it was when you wrote the comment \
               (or `/preview approve <sha>` for that commit); a later push needs a new approval",
    },
];

impl Command {
    /// How the command is written, for replies and logs.
    pub fn text(&self) -> String {
        match self {
            Self::Deploy => "/preview deploy".to_owned(),
            Self::Redeploy => "/preview redeploy".to_owned(),
            Self::Extend(by) => format!("/preview extend {}", humantime::format_duration(*by)),
            Self::Destroy => "/preview destroy".to_owned(),
            Self::ResetDatabase => "/preview reset-db".to_owned(),
            Self::Wake => "/preview wake".to_owned(),
            Self::Status => "/preview status".to_owned(),
            Self::Approve(None) => "/preview approve".to_owned(),
            Self::Approve(Some(sha)) => format!("/preview approve {}", sha.as_str()),
        }
    }
}

/// The first line of `body` that starts with `/preview`: `None` if there is none, the command
/// or what is wrong with it otherwise. Time is linear in `body`, and only a few words of the
/// command's line are looked at.
pub fn parse(body: &str) -> Option<Result<Command, CommandError>> {
    let line = body.lines().map(str::trim).find(|l| l.split_whitespace().next() == Some("/preview"))?;
    let mut words = line.split_whitespace().skip(1);
    let Some(verb) = words.next() else {
        return Some(Err(CommandError::Missing));
    };
    // One more than any command takes, so that too many is seen without reading them all.
    let args: Vec<&str> = words.take(MAX_ARGUMENTS + 1).collect();
    let no_arguments =
        |command: Command, name| if args.is_empty() { Ok(command) } else { Err(CommandError::NoArguments(name)) };
    Some(match verb {
        "deploy" => no_arguments(Command::Deploy, "deploy"),
        "redeploy" => no_arguments(Command::Redeploy, "redeploy"),
        "destroy" => no_arguments(Command::Destroy, "destroy"),
        "reset-db" => no_arguments(Command::ResetDatabase, "reset-db"),
        "wake" => no_arguments(Command::Wake, "wake"),
        "status" => no_arguments(Command::Status, "status"),
        "approve" => match args.as_slice() {
            [] => Ok(Command::Approve(None)),
            [sha] => ShaPrefix::parse(sha).map(|s| Command::Approve(Some(s))).ok_or(CommandError::BadCommit),
            _ => Err(CommandError::BadCommit),
        },
        "extend" => {
            let text = args.join(" ");
            if args.is_empty() {
                Err(CommandError::NoDuration)
            } else if args.len() > MAX_ARGUMENTS || text.len() > MAX_DURATION_TEXT {
                Err(CommandError::BadDuration)
            } else {
                match humantime::parse_duration(&text) {
                    Ok(by) if by.is_zero() => Err(CommandError::ZeroDuration),
                    Ok(by) => Ok(Command::Extend(by)),
                    Err(_) => Err(CommandError::BadDuration),
                }
            }
        }
        _ => Err(CommandError::Unknown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_on_any_line() {
        assert_eq!(parse("thanks!\n/preview extend 2h\n"), Some(Ok(Command::Extend(Duration::from_secs(7200)))));
        assert_eq!(parse("  /preview destroy  "), Some(Ok(Command::Destroy)));
        assert_eq!(parse("/preview approve"), Some(Ok(Command::Approve(None))));
        assert_eq!(parse("/preview extend 1h 30m"), Some(Ok(Command::Extend(Duration::from_secs(5400)))));
    }

    #[test]
    fn approve_may_name_a_commit() {
        let Some(Ok(Command::Approve(Some(sha)))) = parse("/preview approve ABCDEF1") else { panic!("not parsed") };
        assert_eq!(sha.as_str(), "abcdef1");
        assert!(sha.names(&format!("abcdef1{}", "0".repeat(33))));
        assert!(sha.names(&format!("ABCDEF1{}", "0".repeat(33))));
        assert!(!sha.names(&format!("abcdef2{}", "0".repeat(33))));
        assert!(!sha.names("abc"));
        assert_eq!(parse("/preview approve abc12"), Some(Err(CommandError::BadCommit)), "too short");
        assert_eq!(parse(&format!("/preview approve {}", "a".repeat(41))), Some(Err(CommandError::BadCommit)));
        assert_eq!(parse("/preview approve abcdefg"), Some(Err(CommandError::BadCommit)), "not hexadecimal");
        assert_eq!(parse("/preview approve abcdef1 abcdef2"), Some(Err(CommandError::BadCommit)));
    }

    #[test]
    fn other_comments_are_not_commands() {
        assert_eq!(parse("looks good to me"), None);
        assert_eq!(parse("see /preview deploy in the docs"), None);
        assert_eq!(parse("/previewdeploy"), None);
    }

    #[test]
    fn malformed_commands_say_what_is_wrong() {
        assert_eq!(parse("/preview"), Some(Err(CommandError::Missing)));
        assert_eq!(parse("/preview launch"), Some(Err(CommandError::Unknown)));
        assert_eq!(parse("/preview extend"), Some(Err(CommandError::NoDuration)));
        assert_eq!(parse("/preview extend soon"), Some(Err(CommandError::BadDuration)));
        assert_eq!(parse("/preview extend 0s"), Some(Err(CommandError::ZeroDuration)));
        assert_eq!(parse(&format!("/preview extend{}", " 1h".repeat(17))), Some(Err(CommandError::BadDuration)));
        assert_eq!(parse("/preview destroy now"), Some(Err(CommandError::NoArguments("destroy"))));
        assert_eq!(parse("/preview reset-db"), Some(Ok(Command::ResetDatabase)));
        assert_eq!(parse("/preview wake"), Some(Ok(Command::Wake)));
        assert_eq!(parse("/preview reset-db please"), Some(Err(CommandError::NoArguments("reset-db"))));
    }

    #[test]
    fn what_is_wrong_never_quotes_the_comment() {
        for body in ["/preview launch-the-rockets", "/preview extend soon-ish", "/preview destroy everything-now"] {
            let Some(Err(problem)) = parse(body) else { panic!("{body} parsed") };
            let said = problem.to_string();
            let quoted = body.split_whitespace().last().unwrap();
            assert!(!said.contains(quoted), "{said:?} quotes {quoted:?}");
        }
    }

    #[test]
    fn every_command_round_trips_through_its_text() {
        for command in [
            Command::Deploy,
            Command::Redeploy,
            Command::Extend(Duration::from_secs(7200)),
            Command::Destroy,
            Command::Status,
            Command::Approve(None),
            Command::Approve(ShaPrefix::parse("0123456789abcdef")),
        ] {
            assert_eq!(parse(&command.text()), Some(Ok(command)));
        }
    }
}
