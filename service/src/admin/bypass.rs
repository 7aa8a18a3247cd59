//! `previewd bypass ...`: a repository's bypass tokens, through the admin API.

use super::client::ApiClient;
use super::{or_dash, print_json, table};
use crate::cli::{BypassCommand, Output, ServerArgs};
use crate::http::api::bypass::{BypassTokenView, CreatedBypassToken};
use anyhow::Context;
use http::Method;

fn path(repository: &str) -> anyhow::Result<String> {
    let (owner, name) = repository
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .context("--repository: write it as owner/name")?;
    let encode = |part: &str| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
    Ok(format!("api/v1/repositories/{}/{}/bypass-tokens", encode(owner), encode(name)))
}

/// `previewd bypass ...`
pub async fn bypass(server: &ServerArgs, command: BypassCommand) -> anyhow::Result<()> {
    let api = ApiClient::new(server)?;
    match command {
        BypassCommand::Create { repository, name } => {
            let body = serde_json::json!({ "name": name });
            let created: CreatedBypassToken = api.call(Method::POST, &path(&repository)?, Some(body)).await?;
            match server.output {
                Output::Json => print_json(&created),
                Output::Table => {
                    println!("{}", created.secret);
                    eprintln!(
                        "bypass token `{}` for {repository}: send it as the header `x-previewd-bypass` (shown only now)",
                        created.token.name
                    );
                    Ok(())
                }
            }
        }
        BypassCommand::List { repository } => {
            let tokens: Vec<BypassTokenView> = api.call(Method::GET, &path(&repository)?, None).await?;
            match server.output {
                Output::Json => print_json(&tokens),
                Output::Table => {
                    let mut t = table(&["NAME", "CREATED", "BY", "LAST USED", "REVOKED"]);
                    for token in &tokens {
                        t.add_row(vec![
                            token.name.clone(),
                            token.created_at.clone(),
                            token.created_by.clone(),
                            or_dash(token.last_used_at.as_deref()),
                            or_dash(token.revoked_at.as_deref()),
                        ]);
                    }
                    println!("{t}");
                    Ok(())
                }
            }
        }
        BypassCommand::Revoke { repository, name } => {
            let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let () = api.call(Method::DELETE, &format!("{}/{encoded}", path(&repository)?), None).await?;
            println!("revoked bypass token `{name}` of {repository}");
            Ok(())
        }
    }
}
