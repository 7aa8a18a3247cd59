//! The CLI's admin commands: `previewd env ...` against a running previewd's admin API, and
//! `previewd token ...` on previewd's own database.

mod bypass;
pub mod client;
mod share;

pub use bypass::bypass;
pub use share::share;

use crate::cli::{EnvCommand, Output, Scope, ServerArgs, TokenCommand};
use crate::config::Config;
use crate::http::api::environments::{ActionAnswer, EnvironmentDetail, EnvironmentPage, EnvironmentView};
use crate::http::api::events::ChangeEvent;
use crate::http::api::usage::{LimitsAnswer, UsageAnswer};
use anyhow::Context;
use client::ApiClient;
use comfy_table::{ContentArrangement, Table, presets};
use http::Method;
use previewd_environments::model::short_sha;
use previewd_environments::store::{NewAuditEntry, Store, TokenRecord, TokenScope};
use previewd_environments::time::rfc3339;
use secrecy::ExposeSecret;
use std::time::Duration;

/// The wait before `env list --watch` reconnects to a stream that ended.
const RECONNECT: Duration = Duration::from_secs(1);

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    table
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), str::to_owned)
}

fn environments_table(environments: &[EnvironmentView]) -> Table {
    let mut t = table(&["ID", "PULL REQUEST", "STATE", "URL", "COMMIT", "EXPIRES", "REASON"]);
    for e in environments {
        t.add_row(vec![
            e.id.to_string(),
            format!("{}#{}", e.repository, e.pull_request.number),
            e.state.as_str().to_owned(),
            or_dash(e.url.as_deref()),
            short_sha(&e.head_sha).to_owned(),
            or_dash(e.expires_at.as_deref()),
            or_dash(e.reason.as_deref()),
        ]);
    }
    t
}

/// `previewd env ...`
pub async fn env(server: &ServerArgs, command: EnvCommand) -> anyhow::Result<()> {
    let api = ApiClient::new(server)?;
    let output = server.output;
    match command {
        EnvCommand::List { repository, owner, state, author, updated_since, limit, watch } => {
            let filters = [("repository", repository), ("owner", owner), ("state", state), ("author", author)];
            let filters: Vec<(&str, String)> = filters.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            let encode = |pairs: &[(&str, String)]| {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.extend_pairs(pairs);
                query.finish()
            };
            let mut listed = filters.clone();
            listed.extend(updated_since.map(|since| ("updated_since", since)));
            let query = encode(&listed);
            if !watch {
                let all = list_all(&api, &query, limit).await?;
                match output {
                    Output::Json => print_json(&all)?,
                    Output::Table => println!("{}", environments_table(&all)),
                }
                return Ok(());
            }
            // Following: the stream is opened first, so no change falls between it and the list.
            let path = format!("api/v1/events?{}", encode(&filters));
            let mut events = api.events(&path, None).await?;
            let all = list_all(&api, &query, limit).await?;
            match output {
                Output::Json => {
                    for e in &all {
                        println!("{}", serde_json::to_string(e)?);
                    }
                }
                Output::Table => println!("{}", environments_table(&all)),
            }
            watch_events(&api, &path, &mut events, output).await
        }
        EnvCommand::Show { id } => {
            let detail: EnvironmentDetail = api.call(Method::GET, &format!("api/v1/environments/{id}"), None).await?;
            match output {
                Output::Json => print_json(&detail),
                Output::Table => {
                    println!("{}", environments_table(std::slice::from_ref(&detail.environment)));
                    let mut t = table(&["AT", "FROM", "TO", "COMMIT", "BY", "REASON"]);
                    for tr in &detail.transitions {
                        t.add_row(vec![
                            tr.at.clone(),
                            or_dash(tr.from.as_deref()),
                            tr.to.clone(),
                            short_sha(&tr.head_sha).to_owned(),
                            or_dash(tr.actor.as_deref()),
                            or_dash(tr.reason.as_deref()),
                        ]);
                    }
                    println!("\n{t}");
                    let mut t = table(&["KIND", "NAME", "STATUS"]);
                    for o in &detail.objects {
                        t.add_row(vec![o.kind.clone(), o.name.clone(), o.status.clone()]);
                    }
                    match &detail.objects_error {
                        Some(error) => println!("\nobjects: cannot be read now: {error}"),
                        None if detail.objects.is_empty() => println!("\nobjects: none (no namespace)"),
                        None => println!("\n{t}"),
                    }
                    if let Some(f) = &detail.last_failure {
                        println!("\nlast failure ({}): {}", f.at, f.reason);
                        if let Some(hint) = &f.hint {
                            println!("what to do: {hint}");
                        }
                    }
                    Ok(())
                }
            }
        }
        EnvCommand::Extend { id, duration } => {
            let body = serde_json::json!({ "duration": duration });
            let path = format!("api/v1/environments/{id}/extend");
            let answer: ActionAnswer = api.call(Method::POST, &path, Some(body)).await?;
            action_done(output, &answer, "extended")
        }
        EnvCommand::Redeploy { id } => {
            let path = format!("api/v1/environments/{id}/redeploy");
            let answer: ActionAnswer = api.call(Method::POST, &path, None).await?;
            action_done(output, &answer, "redeploying")
        }
        EnvCommand::ResetDb { id } => {
            let path = format!("api/v1/environments/{id}/reset-db");
            let answer: ActionAnswer = api.call(Method::POST, &path, None).await?;
            action_done(output, &answer, "resetting its database")
        }
        EnvCommand::Wake { id } => {
            let path = format!("api/v1/environments/{id}/wake");
            let answer: ActionAnswer = api.call(Method::POST, &path, None).await?;
            action_done(output, &answer, "waking")
        }
        EnvCommand::Destroy { id } => {
            let path = format!("api/v1/environments/{id}");
            let answer: ActionAnswer = api.call(Method::DELETE, &path, None).await?;
            action_done(output, &answer, "destroying")
        }
    }
}

fn action_done(output: Output, answer: &ActionAnswer, what: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(answer),
        Output::Table => {
            let e = &answer.environment;
            let until = e.expires_at.as_deref().map(|at| format!(" (expires {at})")).unwrap_or_default();
            let capped = if answer.capped { "; capped at the policy's ttl.max" } else { "" };
            println!("{what} {}#{}{until}{capped}", e.repository, e.pull_request.number);
            Ok(())
        }
    }
}

/// Every page of a listing, up to `limit` environments.
/// Prints each change of the stream at `path` as it comes, one line each; reconnects where it
/// left off when the connection drops (`Last-Event-ID`), and ends only with an error the server
/// words (a revoked token) or when previewd cannot be reached again.
async fn watch_events(
    api: &ApiClient,
    path: &str,
    events: &mut client::EventStream,
    output: Output,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let mut last: Option<String> = None;
    loop {
        while let Some(Ok(event)) = events.next().await {
            if !event.id.is_empty() {
                last = Some(event.id.clone());
            }
            match event.event.as_str() {
                "change" => {
                    let change: ChangeEvent = serde_json::from_str(&event.data)?;
                    let e = &change.environment;
                    match output {
                        Output::Json => println!("{}", serde_json::to_string(e)?),
                        Output::Table => println!(
                            "{}  {}#{}  {}  expires {}  {}",
                            e.updated_at,
                            e.repository,
                            e.pull_request.number,
                            e.state.as_str(),
                            or_dash(e.expires_at.as_deref()),
                            e.reason.as_deref().or(e.url.as_deref()).unwrap_or_default()
                        ),
                    }
                }
                "reset" => eprintln!("previewd: {} (run `env list` again for the whole list)", event.data),
                _ => {}
            }
        }
        tokio::time::sleep(RECONNECT).await;
        *events = api.events(path, last.as_deref()).await?;
    }
}

async fn list_all(api: &ApiClient, query: &str, limit: usize) -> anyhow::Result<Vec<EnvironmentView>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_size = limit.saturating_sub(all.len()).clamp(1, 100);
        let mut path = format!("api/v1/environments?limit={page_size}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let page: EnvironmentPage = api.call(Method::GET, &path, None).await?;
        all.extend(page.environments);
        match page.next_cursor {
            Some(next) if all.len() < limit => cursor = Some(next),
            _ => return Ok(all),
        }
    }
}

/// `previewd usage`
pub async fn usage(
    server: &ServerArgs,
    from: Option<String>,
    to: Option<String>,
    group_by: &str,
) -> anyhow::Result<()> {
    let api = ApiClient::new(server)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("group_by", group_by);
    for (key, value) in [("from", from), ("to", to)] {
        if let Some(value) = value {
            query.append_pair(key, &value);
        }
    }
    let answer: UsageAnswer = api.call(Method::GET, &format!("api/v1/usage?{}", query.finish()), None).await?;
    if server.output == Output::Json {
        return print_json(&answer);
    }
    println!("{} to {}", answer.from, answer.to);
    let mut t = table(&[&group_by.to_uppercase(), "ENVIRONMENTS", "ENV-HOURS", "CPU-HOURS", "MEMORY GIB-HOURS"]);
    for g in &answer.groups {
        t.add_row(vec![
            g.key.clone(),
            g.environments.to_string(),
            format!("{:.1}", g.environment_hours),
            format!("{:.1}", g.cpu_hours),
            format!("{:.1}", g.memory_gib_hours),
        ]);
    }
    println!("{t}\n");
    print_limits(&answer.limits);
    Ok(())
}

/// `previewd limits`
pub async fn limits(server: &ServerArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(server)?;
    let answer: LimitsAnswer = api.call(Method::GET, "api/v1/limits", None).await?;
    if server.output == Output::Json {
        return print_json(&answer);
    }
    print_limits(&answer);
    Ok(())
}

fn print_limits(limits: &LimitsAnswer) {
    let mut t = table(&["SCOPE", "LIVE", "LIMIT", "WAITING"]);
    for c in std::iter::once(&limits.global).chain(&limits.owners).chain(&limits.repositories) {
        t.add_row(vec![
            c.scope.clone(),
            c.live.to_string(),
            c.limit.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            c.waiting.to_string(),
        ]);
    }
    println!("{t}");
    println!("when full: {}; jobs queued: {}", limits.when_full.as_deref().unwrap_or("-"), limits.queued_jobs);
}

#[derive(serde::Serialize)]
struct TokenView<'a> {
    name: &'a str,
    scope: &'a str,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl<'a> From<&'a TokenRecord> for TokenView<'a> {
    fn from(t: &'a TokenRecord) -> Self {
        TokenView {
            name: &t.name,
            scope: t.scope.as_str(),
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// `previewd token ...`: on the database the settings name, audited as `cli`.
pub async fn token(config: &Config, command: TokenCommand, output: Output) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await.context("migrating the database")?;
    let audit = |action: &'static str, target: String, outcome: &'static str| {
        let store = store.clone();
        async move {
            store
                .audit(&NewAuditEntry {
                    actor: "cli",
                    action,
                    environment_id: None,
                    target: &target,
                    detail: None,
                    outcome,
                    remote: None,
                })
                .await
        }
    };
    match command {
        TokenCommand::Create { name, scope } => {
            let scope = match scope {
                Scope::Read => TokenScope::Read,
                Scope::Admin => TokenScope::Admin,
            };
            let (record, secret) = store.create_token(&name, scope).await?;
            audit("token.create", record.name.clone(), "done").await?;
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "name": record.name, "scope": record.scope.as_str(), "token": secret.expose_secret()
                }))?,
                Output::Table => {
                    // The secret alone on stdout, so `token=$(previewd token create ...)` works;
                    // what it is goes to stderr.
                    eprintln!("token `{}` ({}) created; it is shown only this once:", record.name, record.scope);
                    println!("{}", secret.expose_secret());
                }
            }
        }
        TokenCommand::List => {
            let tokens = store.tokens().await?;
            match output {
                Output::Json => print_json(&tokens.iter().map(TokenView::from).collect::<Vec<_>>())?,
                Output::Table => {
                    let mut t = table(&["NAME", "SCOPE", "CREATED", "LAST USED", "REVOKED"]);
                    for v in tokens.iter().map(TokenView::from) {
                        t.add_row(vec![
                            v.name.to_owned(),
                            v.scope.to_owned(),
                            v.created_at,
                            or_dash(v.last_used_at.as_deref()),
                            or_dash(v.revoked_at.as_deref()),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        TokenCommand::Revoke { name } => {
            if !store.revoke_token(&name).await? {
                anyhow::bail!("there is no live token named `{name}` (see `previewd token list`)");
            }
            audit("token.revoke", name.clone(), "done").await?;
            if output == Output::Table {
                eprintln!("token `{name}` revoked");
            }
        }
    }
    store.close().await;
    Ok(())
}
