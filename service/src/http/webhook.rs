//! `POST /webhooks/github`: verify, classify, store durably, answer. Nothing slow happens
//! here; the work is done later by the job queue.

use super::AppState;
use crate::github::events::{Classified, classify};
use crate::process::GITHUB_EVENT;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use previewd_environments::model::Repo;
use previewd_environments::store::{DeliveryOutcome, NewDelivery, NewJob, Recorded};
use previewd_environments::time::now_ms;
use serde_json::json;
use std::borrow::Cow;
use std::time::Instant;
use tracing::Instrument;

/// GitHub caps webhook payloads at 25 MB; previewd accepts up to 25 MiB.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// A refused delivery: the status and a JSON body `{"error": ..., "message": ...}`.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.code, "message": self.message }))).into_response()
    }
}

pub async fn receive(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (response, event, outcome) = match accept(&app, &headers, body).await {
        Ok((response, event, outcome)) => (response, event, outcome),
        Err((refusal, event)) => {
            let outcome = refusal.code;
            (refusal.into_response(), event, outcome)
        }
    };
    app.metrics.delivery(&event, outcome);
    app.metrics.intake_seconds.observe(started.elapsed().as_secs_f64());
    response
}

type Accepted = (Response, String, &'static str);
type Refused = (Refusal, String);

async fn accept(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Accepted, Refused> {
    // Before authentication the event header is not trusted, not even as a metric label.
    let unknown = || "unknown".to_owned();
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("webhook bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        tracing::warn!(content_length = declared, "webhook refused: body too large");
        return Err((too_large(), unknown()));
    }
    let raw = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(raw) => raw,
        Err(error) => {
            let refusal = if is_length_limit(&error) {
                too_large()
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, "malformed", format!("could not read the body: {error}"))
            };
            tracing::warn!(reason = refusal.code, "webhook refused while reading the body");
            return Err((refusal, unknown()));
        }
    };
    let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    if let Err(error) = app.secrets.verify(signature, &raw) {
        tracing::warn!(reason = %error, "webhook refused: signature");
        return Err((Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()), unknown()));
    }

    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(event) = header("x-github-event") else {
        return Err((Refusal::new(StatusCode::BAD_REQUEST, "malformed", "missing X-GitHub-Event header"), unknown()));
    };
    let Some(delivery_id) = header("x-github-delivery") else {
        return Err((Refusal::new(StatusCode::BAD_REQUEST, "malformed", "missing X-GitHub-Delivery header"), event));
    };
    let hook_id = header("x-github-hook-id").unwrap_or_default();
    let span = tracing::info_span!("delivery", delivery = %delivery_id, event = %event, hook = %hook_id);
    async move {
        let json = match json_body(headers, &raw) {
            Ok(json) => json,
            Err(refusal) => {
                tracing::warn!(reason = %refusal.message, "webhook refused: body");
                return Err((refusal, event));
            }
        };
        let classified = match classify(&event, &json) {
            Ok(classified) => classified,
            Err(error) => {
                tracing::warn!(error = %error, "webhook refused: payload");
                return Err((Refusal::new(StatusCode::BAD_REQUEST, "malformed", error.to_string()), event));
            }
        };
        let (outcome, action, job) = match classified {
            Classified::Ping => (DeliveryOutcome::Ping, None, None),
            Classified::Ignored { action, why } => {
                tracing::info!(action = action.as_deref(), why, "delivery ignored");
                (DeliveryOutcome::Ignored, action, None)
            }
            Classified::Act { action, event }
                if event.repo().is_some_and(|repo| {
                    app.policy.as_ref().is_some_and(|p| !p.allows_repository(&repo.owner, &repo.name))
                }) =>
            {
                let repo = event.repo().map(Repo::full_name);
                tracing::info!(
                    action = action.as_deref(),
                    repo,
                    "delivery ignored: the repository is not in the policy's `allow` list"
                );
                (DeliveryOutcome::NotAllowed, action, None)
            }
            Classified::Act { action, event } => {
                let payload = serde_json::to_string(&event).map_err(|e| {
                    (
                        Refusal::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            format!("could not encode the event: {e}"),
                        ),
                        String::new(),
                    )
                })?;
                let job =
                    NewJob { kind: GITHUB_EVENT.to_owned(), payload, max_attempts: app.job_max_attempts, run_at: None };
                (DeliveryOutcome::Queued, action, Some(job))
            }
        };
        let delivery = NewDelivery {
            hook_id,
            delivery_id: delivery_id.clone(),
            event: event.clone(),
            action,
            outcome,
            received_at: now_ms(),
            job,
        };
        match app.intake.record(delivery).await {
            Ok(Recorded::New { .. }) => {
                tracing::info!(outcome = outcome.as_str(), "delivery stored");
                let status = if outcome == DeliveryOutcome::Ping { StatusCode::OK } else { StatusCode::ACCEPTED };
                let body = Json(json!({ "delivery": delivery_id, "status": outcome.as_str() }));
                Ok(((status, body).into_response(), event, outcome.as_str()))
            }
            Ok(Recorded::Duplicate) => {
                tracing::info!("delivery already received; acknowledged without processing it again");
                let body = Json(json!({ "delivery": delivery_id, "status": "duplicate" }));
                Ok(((StatusCode::OK, body).into_response(), event, "duplicate"))
            }
            Err(error) => Err((Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()), event)),
        }
    }
    .instrument(span)
    .await
}

/// The JSON document of a delivery: the body itself, or its `payload` field when GitHub was
/// configured to send `application/x-www-form-urlencoded`.
fn json_body<'a>(headers: &HeaderMap, raw: &'a [u8]) -> Result<Cow<'a, [u8]>, Refusal> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok(Cow::Borrowed(raw));
    }
    form_urlencoded::parse(raw)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| Cow::Owned(value.into_owned().into_bytes()))
        .ok_or_else(|| {
            Refusal::new(StatusCode::BAD_REQUEST, "malformed", "form-encoded delivery without a `payload` field")
        })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
