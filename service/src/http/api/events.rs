//! `GET /api/v1/events`: the fleet's changes as Server-Sent Events, for the CLI's `--watch`,
//! scripts and the dashboard's live table.
//!
//! One [`ChangeFeed`] per process reads the store's change feed (written by triggers, see
//! `environments/src/store/changes.rs`) a few times a second and hands each change to every open
//! stream, so a thousand open streams cost one query per round, not a thousand. Each event
//! carries the environment as `GET /environments/{id}` shows it (not a delta), with the
//! change's id as its SSE id: a client that reconnects with `Last-Event-ID` is first sent what
//! it missed, read from the store, then the live changes. Every replica sees every change, since
//! the feed is in the shared store.

use super::environments::{EnvironmentView, filter_param};
use super::{ApiError, Caller};
use crate::http::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt;
use futures::stream::BoxStream;
use previewd_environments::store::{ChangeRecord, EnvironmentFilter, Store, TokenScope};
use previewd_environments::time::now_ms;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How often the feed reads the store: the most a change waits before it is sent.
const POLL: Duration = Duration::from_millis(200);
/// How far back each read also looks, for ids Postgres makes visible out of order.
const LOOKBACK_MS: i64 = 5_000;
/// Changes read per round and replayed per reconnect at most. A client further behind is sent
/// a `reset` event: it should read the list again.
const BATCH: u32 = 1_000;
/// Changes waiting for a slow client; beyond this it is sent `reset`.
const BUFFER: usize = 1_024;
/// How often an open stream checks that its token or session still holds.
const TOKEN_CHECK: Duration = Duration::from_secs(30);

/// One change, as every stream sends it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeEvent {
    /// The change's id, also the SSE event id.
    pub id: i64,
    /// The environment after the change.
    pub environment: EnvironmentView,
}

/// The events one client is sent.
pub(crate) type EventStream = BoxStream<'static, Result<Event, std::convert::Infallible>>;

/// The process's reader of the change feed.
pub struct ChangeFeed {
    sender: broadcast::Sender<Arc<ChangeEvent>>,
}

impl ChangeFeed {
    /// Starts reading the store's feed until `stop`.
    pub fn start(store: Store, stop: CancellationToken) -> Arc<ChangeFeed> {
        let (sender, _) = broadcast::channel(BUFFER);
        let feed = Arc::new(ChangeFeed { sender: sender.clone() });
        tokio::spawn(async move {
            let mut reader = Reader { store, sender, after: None, seen: BTreeMap::new() };
            loop {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = stop.cancelled() => return,
                }
                if let Err(error) = reader.round().await {
                    tracing::warn!(%error, "reading the change feed failed; trying again");
                }
            }
        });
        feed
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.sender.subscribe()
    }
}

struct Reader {
    store: Store,
    sender: broadcast::Sender<Arc<ChangeEvent>>,
    /// The highest id read; `None` until the first round, which starts at the newest change.
    after: Option<i64>,
    /// Ids read in the last [`LOOKBACK_MS`] (and when they were made), so none is sent twice.
    seen: BTreeMap<i64, i64>,
}

impl Reader {
    async fn round(&mut self) -> Result<(), previewd_environments::store::StoreError> {
        let now = now_ms();
        let Some(after) = self.after else {
            // From the newest change on: a stream that wants older ones asks with Last-Event-ID.
            self.after = Some(self.store.last_change_id().await?);
            return Ok(());
        };
        let rows = self.store.changes_since(after, now - LOOKBACK_MS, BATCH).await?;
        let fresh: Vec<ChangeRecord> = rows.into_iter().filter(|r| !self.seen.contains_key(&r.id)).collect();
        for row in &fresh {
            self.seen.insert(row.id, row.at);
            self.after = self.after.max(Some(row.id));
        }
        self.seen.retain(|_, at| *at >= now - 2 * LOOKBACK_MS);
        // Read on while nobody listens (one indexed query), so the first stream to open misses
        // nothing; the environments are read only for someone.
        if self.sender.receiver_count() > 0 {
            for event in events_of(&self.store, &fresh).await? {
                // No receiver left is not an error: the next round notices.
                let _ = self.sender.send(Arc::new(event));
            }
        }
        Ok(())
    }
}

/// One event per environment among `changes` (its last change's id), in the order of those.
async fn events_of(
    store: &Store,
    changes: &[ChangeRecord],
) -> Result<Vec<ChangeEvent>, previewd_environments::store::StoreError> {
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for change in changes {
        last.insert(change.environment_id, change.id);
    }
    let mut ordered: Vec<(i64, i64)> = last.into_iter().map(|(env, id)| (id, env)).collect();
    ordered.sort_unstable();
    let mut events = Vec::with_capacity(ordered.len());
    for (id, environment) in ordered {
        // Deleted by retention meanwhile: nothing to show.
        if let Some(summary) = store.environment_summary(environment).await? {
            events.push(ChangeEvent { id, environment: summary.into() });
        }
    }
    Ok(events)
}

/// Whether `e` passes `filter` (its time bound and session aside, which a stream checks
/// otherwise): the list's rules (`fleet.rs`), names compared case-insensitively as GitHub does,
/// the search as a case-insensitive substring of the same text the list searches.
pub(crate) fn matches(filter: &EnvironmentFilter, e: &EnvironmentView) -> bool {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let (owner, name) = e.repository.split_once('/').unwrap_or((&e.repository, ""));
    filter.repository.as_ref().is_none_or(|(o, n)| same(o, owner) && same(n, name))
        && filter.owner.as_deref().is_none_or(|o| same(o, owner))
        && filter.state.is_none_or(|s| s == e.state)
        && filter.author.as_deref().is_none_or(|a| same(a, &e.pull_request.author))
        && filter.search.as_deref().is_none_or(|q| {
            let title = e.pull_request.title.as_deref().unwrap_or_default();
            format!("{} {} {} {title}", e.repository, e.pull_request.head_branch, e.pull_request.author)
                .to_lowercase()
                .contains(&q.to_lowercase())
        })
}

/// The fleet's changes as they happen.
#[utoipa::path(get, path = "/api/v1/events", operation_id = "streamEvents", tag = "environments", security(("bearer" = [])),
    params(
        ("repository" = Option<String>, Query, description = "`owner/name`"),
        ("owner" = Option<String>, Query, description = "The repositories' owner"),
        ("state" = Option<String>, Query, description = "Only changes to this state"),
        ("author" = Option<String>, Query, description = "The pull request's author"),
        ("Last-Event-ID" = Option<i64>, Header, description = "The last event id received: the stream starts with the changes after it"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: events `change` (data: a ChangeEvent, id: the change's id) and `reset` (the client is too far behind: read the list again)", body = ChangeEvent, content_type = "text/event-stream"),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn stream(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    caller.require(TokenScope::Read)?;
    let mut filter = EnvironmentFilter::default();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        if !filter_param(&mut filter, &key, &value)? {
            let problem = "is not a parameter of this endpoint (repository, owner, state, author)";
            return Err(ApiError::field(StatusCode::BAD_REQUEST, &key, problem));
        }
    }
    let resume = last_event_id(&headers)?;
    let keep = move |event: &ChangeEvent| matches(&filter, &event.environment);
    let events = app.changes.stream(&app.store, resume, Holder::Token(caller.token.id), keep).await?;
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The `Last-Event-ID` a reconnecting client sends.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| ApiError::field(StatusCode::BAD_REQUEST, "Last-Event-ID", "must be an event id"))
}

/// Who holds a stream open: it ends within [`TOKEN_CHECK`] of their access ending.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder {
    /// An API token, until revoked.
    Token(i64),
    /// A dashboard session, until it ends or expires.
    Session(i64),
}

impl Holder {
    async fn still_allowed(self, store: &Store) -> bool {
        let live = match self {
            Holder::Token(id) => {
                store.tokens().await.map(|all| all.iter().any(|t| t.id == id && t.revoked_at.is_none()))
            }
            Holder::Session(id) => store.session_is_live(id).await,
        };
        // A store that does not answer ends nothing: the stream's reads fail on their own.
        live.unwrap_or(true)
    }
}

impl ChangeFeed {
    /// The events one client receives: after `resume` (its Last-Event-ID) what it missed, then
    /// the live changes, each if `keep` says so, for as long as `holder` may read.
    pub(crate) async fn stream(
        &self,
        store: &Store,
        resume: Option<i64>,
        holder: Holder,
        keep: impl Fn(&ChangeEvent) -> bool + Send + 'static,
    ) -> Result<EventStream, ApiError> {
        // Subscribed before the replay is read, so nothing falls between the two.
        let mut live = self.subscribe();
        let replay = match resume {
            Some(after) => {
                let missed = store.changes_after(after, BATCH + 1).await?;
                Some((missed.len() > BATCH as usize, events_of(store, &missed).await?))
            }
            None => None,
        };
        let (out, mut receiver) = mpsc::channel::<Event>(64);
        let store = store.clone();
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            if let Some((too_far, events)) = replay {
                if too_far {
                    let _ = out.send(reset("more changes were missed than are replayed")).await;
                } else {
                    for event in events {
                        sent.insert(event.id);
                        if keep(&event) && out.send(change(&event)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let mut check = tokio::time::interval(TOKEN_CHECK);
            check.tick().await;
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(event) if sent.remove(&event.id) => {}
                        Ok(event) => {
                            if keep(&event) && out.send(change(&event)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = out.send(reset("this client fell behind")).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = check.tick() => {
                        if !holder.still_allowed(&store).await {
                            return;
                        }
                    }
                    () = out.closed() => return,
                }
            }
        });
        Ok(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx).map(|e| e.map(Ok))).boxed())
    }
}

fn change(event: &ChangeEvent) -> Event {
    Event::default()
        .event("change")
        .id(event.id.to_string())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("change").id(event.id.to_string()))
}

fn reset(why: &str) -> Event {
    Event::default().event("reset").data(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::api::environments::PullRequestView;
    use previewd_environments::model::EnvironmentState;

    fn view() -> EnvironmentView {
        EnvironmentView {
            id: 1,
            repository: "Acme/Shop".into(),
            repository_id: 7,
            pull_request: PullRequestView {
                number: 3,
                title: Some("Faster Checkout".into()),
                author: "Dev".into(),
                head_branch: "feature/pay_50%".into(),
                from_fork: false,
            },
            state: EnvironmentState::Ready,
            reason: None,
            name: None,
            url: None,
            services: Vec::new(),
            has_database: false,
            head_sha: "a".repeat(40),
            deployed_sha: None,
            created_at: String::new(),
            updated_at: String::new(),
            expires_at: None,
            expiry_warned_at: None,
            note: None,
        }
    }

    #[test]
    fn a_stream_keeps_what_the_list_would_show_names_and_search_case_insensitively() {
        let filter = |f: fn(&mut EnvironmentFilter)| {
            let mut filter = EnvironmentFilter::default();
            f(&mut filter);
            matches(&filter, &view())
        };
        assert!(filter(|_| {}));
        assert!(filter(|f| f.repository = Some(("acme".into(), "shop".into()))));
        assert!(!filter(|f| f.repository = Some(("acme".into(), "web".into()))));
        assert!(filter(|f| f.owner = Some("ACME".into())));
        assert!(filter(|f| f.author = Some("dev".into())));
        assert!(!filter(|f| f.state = Some(EnvironmentState::Failed)));
        for found in ["acme/sh", "PAY_50%", "dev", "faster checkout"] {
            assert!(
                matches(&EnvironmentFilter { search: Some(found.into()), ..EnvironmentFilter::default() }, &view()),
                "{found}"
            );
        }
        assert!(!filter(|f| f.search = Some("billing".into())));
    }
}
