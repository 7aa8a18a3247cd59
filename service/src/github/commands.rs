//! `/preview` commands in pull request comments. Parsing is pure; carrying them out is in
//! `process`.

use std::time::Duration;

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
    /// Refresh the pull request comment.
    Status,
    /// Approve the fork's current head commit for an environment.
    Approve,
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
    CommandHelp { text: "/preview status", help: "refresh this comment" },
    CommandHelp { text: "/preview approve", help: "allow an environment for a fork's current head commit" },
];

impl Command {
    /// How the command is written, for replies and logs.
    pub fn text(&self) -> String {
        match self {
            Self::Deploy => "/preview deploy".to_owned(),
            Self::Redeploy => "/preview redeploy".to_owned(),
            Self::Extend(by) => format!("/preview extend {}", humantime::format_duration(*by)),
            Self::Destroy => "/preview destroy".to_owned(),
            Self::Status => "/preview status".to_owned(),
            Self::Approve => "/preview approve".to_owned(),
        }
    }
}

/// The first line of `body` that starts with `/preview`: `None` if there is none, the command
/// or what is wrong with it otherwise.
pub fn parse(body: &str) -> Option<Result<Command, String>> {
    let line = body.lines().map(str::trim).find(|l| l.split_whitespace().next() == Some("/preview"))?;
    let mut words = line.split_whitespace().skip(1);
    let Some(verb) = words.next() else {
        return Some(Err("`/preview` needs a command".to_owned()));
    };
    let rest: Vec<&str> = words.collect();
    let no_arguments = |command: Command| {
        if rest.is_empty() { Ok(command) } else { Err(format!("`/preview {verb}` takes no arguments")) }
    };
    Some(match verb {
        "deploy" => no_arguments(Command::Deploy),
        "redeploy" => no_arguments(Command::Redeploy),
        "destroy" => no_arguments(Command::Destroy),
        "status" => no_arguments(Command::Status),
        "approve" => no_arguments(Command::Approve),
        "extend" => match rest.as_slice() {
            [] => Err("`/preview extend` needs a duration, like `/preview extend 2h`".to_owned()),
            words => {
                let text = words.join(" ");
                match humantime::parse_duration(&text) {
                    Ok(by) if !by.is_zero() => Ok(Command::Extend(by)),
                    Ok(_) => Err("`/preview extend` needs a duration longer than zero".to_owned()),
                    Err(e) => Err(format!("`{text}` is not a duration ({e}); write it like `2h`, `90m` or `1d`")),
                }
            }
        },
        other => Err(format!("`{other}` is not a previewd command")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_on_any_line() {
        assert_eq!(parse("thanks!\n/preview extend 2h\n"), Some(Ok(Command::Extend(Duration::from_secs(7200)))));
        assert_eq!(parse("  /preview destroy  "), Some(Ok(Command::Destroy)));
        assert_eq!(parse("/preview approve"), Some(Ok(Command::Approve)));
        assert_eq!(parse("/preview extend 1h 30m"), Some(Ok(Command::Extend(Duration::from_secs(5400)))));
    }

    #[test]
    fn other_comments_are_not_commands() {
        assert_eq!(parse("looks good to me"), None);
        assert_eq!(parse("see /preview deploy in the docs"), None);
        assert_eq!(parse("/previewdeploy"), None);
    }

    #[test]
    fn malformed_commands_say_what_is_wrong() {
        assert!(parse("/preview").unwrap().unwrap_err().contains("needs a command"));
        assert!(parse("/preview launch").unwrap().unwrap_err().contains("`launch` is not"));
        assert!(parse("/preview extend").unwrap().unwrap_err().contains("needs a duration"));
        assert!(parse("/preview extend soon").unwrap().unwrap_err().contains("not a duration"));
        assert!(parse("/preview extend 0s").unwrap().unwrap_err().contains("longer than zero"));
        assert!(parse("/preview destroy now").unwrap().unwrap_err().contains("takes no arguments"));
    }

    #[test]
    fn every_command_round_trips_through_its_text() {
        for command in [
            Command::Deploy,
            Command::Redeploy,
            Command::Extend(Duration::from_secs(7200)),
            Command::Destroy,
            Command::Status,
            Command::Approve,
        ] {
            assert_eq!(parse(&command.text()), Some(Ok(command)));
        }
    }
}
