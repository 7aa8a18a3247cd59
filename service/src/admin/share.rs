//! `previewd share ...`: an environment's share links, through the admin API.

use super::client::ApiClient;
use super::{or_dash, print_json, table};
use crate::cli::{Output, ServerArgs, ShareCommand};
use crate::http::api::share::{CreatedShareLink, ShareLinkView};
use http::Method;

fn path(id: i64) -> String {
    format!("api/v1/environments/{id}/share-links")
}

/// `previewd share ...`
pub async fn share(server: &ServerArgs, command: ShareCommand) -> anyhow::Result<()> {
    let api = ApiClient::new(server)?;
    match command {
        ShareCommand::Create { id, expires_in } => {
            let body = serde_json::json!({ "expires_in": expires_in });
            let created: CreatedShareLink = api.call(Method::POST, &path(id), Some(body)).await?;
            match server.output {
                Output::Json => print_json(&created),
                Output::Table => {
                    println!("{}", created.url);
                    eprintln!(
                        "share link {} to environment {id}: opens the preview until {} (shown only now)",
                        created.link.id, created.link.expires_at
                    );
                    Ok(())
                }
            }
        }
        ShareCommand::List { id } => {
            let links: Vec<ShareLinkView> = api.call(Method::GET, &path(id), None).await?;
            match server.output {
                Output::Json => print_json(&links),
                Output::Table => {
                    let mut t = table(&["ID", "LIVE", "BY", "CREATED", "EXPIRES", "LAST USED", "REVOKED"]);
                    for link in &links {
                        t.add_row(vec![
                            link.id.to_string(),
                            if link.live { "yes" } else { "no" }.to_owned(),
                            link.created_by.clone(),
                            link.created_at.clone(),
                            link.expires_at.clone(),
                            or_dash(link.last_used_at.as_deref()),
                            or_dash(link.revoked_at.as_deref()),
                        ]);
                    }
                    println!("{t}");
                    Ok(())
                }
            }
        }
        ShareCommand::Revoke { id, link } => {
            let () = api.call(Method::DELETE, &format!("{}/{link}", path(id)), None).await?;
            println!("revoked share link {link} of environment {id}");
            Ok(())
        }
    }
}
