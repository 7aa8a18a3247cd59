//! Property test of the `/preview` command parser over what anyone can write in a pull request
//! comment: arbitrary unicode, lines as long as GitHub allows a comment (65,536 characters),
//! thousands of lines, and near-commands (`/preview` with odd spacing, case, verbs and
//! arguments). The parser must not panic, must answer within a bounded time, and must give a
//! typed answer that never carries the comment's text.
//!
//! The case count is proptest's default (256), or `PROPTEST_CASES`: `e2e/test.sh` runs the
//! default; the longer run is `PROPTEST_CASES=20000 cargo test -p previewd --test fuzz_commands`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd::github::commands::{Command, CommandError, parse};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// Generous on purpose: a 65,536-character comment parses in microseconds; the bound catches
/// anything worse than linear on this slow shared machine, not a regression of a few percent.
const LIMIT: Duration = Duration::from_secs(2);

fn verb() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("deploy".to_owned()),
        Just("redeploy".to_owned()),
        Just("destroy".to_owned()),
        Just("status".to_owned()),
        Just("approve".to_owned()),
        Just("extend".to_owned()),
        Just("Deploy".to_owned()),
        Just("approve\u{0}".to_owned()),
        "[a-z]{1,12}",
        "\\PC{1,20}",
    ]
}

fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}[smhdwy]",
        "[0-9a-fA-F]{1,45}",
        "[0-9]{1,6} ?(seconds|minutes|hours|days|weeks|months|years)",
        "-?[0-9]{1,30}(\\.[0-9]{1,10})?[a-zµ]{0,5}",
        "\\PC{1,40}",
        Just("18446744073709551616y".to_owned()),
        Just("99999999999999999999999999999d".to_owned()),
    ]
}

/// A line that is, or nearly is, a command.
fn near_command() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/preview".to_owned()),
        Just("  /preview".to_owned()),
        Just("\t/preview".to_owned()),
        Just("/Preview".to_owned()),
        Just("/previewd".to_owned()),
        Just("//preview".to_owned()),
        Just("\u{feff}/preview".to_owned()),
    ];
    let space = prop_oneof![Just(" "), Just("  "), Just("\t"), Just("\u{a0}"), Just("\u{3000}"), Just("\u{2028}")];
    (prefix, space, verb(), prop::collection::vec((argument(), Just(" ")), 0..12)).prop_map(
        |(prefix, space, verb, args)| {
            let args: String = args.into_iter().map(|(a, s)| format!("{s}{a}")).collect();
            format!("{prefix}{space}{verb}{args}")
        },
    )
}

/// A whole comment body.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,2000}",
        near_command(),
        // Many lines, some of them near-commands, the rest arbitrary.
        prop::collection::vec(prop_oneof![near_command(), "\\PC{0,80}", Just(String::new())], 0..3000)
            .prop_map(|lines| lines.join("\n")),
        // One line as long as GitHub allows a comment, with or without a command in front.
        (
            prop_oneof![Just(""), Just("/preview extend "), Just("/preview approve "), Just("/preview ")],
            0usize..65_536,
            any::<char>()
        )
            .prop_map(|(start, len, c)| format!("{start}{}", c.to_string().repeat(len / c.len_utf8().max(1)))),
        // Separators of every kind between lines.
        prop::collection::vec(
            (near_command(), prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("\u{85}")]),
            0..50
        )
        .prop_map(|parts| parts.into_iter().map(|(l, s)| format!("{l}{s}")).collect()),
    ]
}

/// Every message a malformed command can get: fixed texts, so none repeats the comment.
fn known_problem(problem: &CommandError) -> bool {
    let said = problem.to_string();
    let fixed = [
        CommandError::Missing,
        CommandError::Unknown,
        CommandError::NoDuration,
        CommandError::BadDuration,
        CommandError::ZeroDuration,
        CommandError::BadCommit,
    ];
    let verbs = ["deploy", "redeploy", "destroy", "status"];
    fixed.iter().any(|p| p.to_string() == said)
        || verbs.into_iter().any(|v| CommandError::NoArguments(v).to_string() == said)
}

proptest! {
    #[test]
    fn fuzz_command_parser(body in body()) {
        let started = Instant::now();
        let parsed = parse(&body);
        let took = started.elapsed();
        prop_assert!(took < LIMIT, "{} bytes took {took:?}", body.len());
        let has_command = body.lines().any(|l| l.split_whitespace().next() == Some("/preview"));
        prop_assert_eq!(parsed.is_some(), has_command);
        match parsed {
            None => {}
            Some(Ok(command)) => {
                // What previewd says it understood is what it would understand again.
                prop_assert_eq!(parse(&command.text()), Some(Ok(command.clone())));
                if let Command::Extend(by) = command {
                    prop_assert!(!by.is_zero());
                }
            }
            Some(Err(problem)) => prop_assert!(known_problem(&problem), "{problem}"),
        }
    }
}
