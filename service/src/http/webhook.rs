//! `POST /webhooks/github`: verify, classify, store durably, answer. Nothing slow happens
//! here; the work is done later by the job queue.

use super::AppState;
use super::body::BodyError;
use crate::github::events::{Classified, classify};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use previewd_environments::model::Repo;
use previewd_environments::store::{DeliveryOutcome, NewDelivery, NewJob, Recorded};
use previewd_environments::time::now_ms;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A refused delivery: the status and a JSON body `{"error": ..., "message": ...}`.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For 503 `busy`: when the client may try again (`Retry-After`).
    retry_after: Option<Duration>,
    /// The body was not read whole: the connection is closed after the answer, since the rest
    /// of the body would have to be read first to keep it.
    close: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into(), retry_after: None, close: false }
    }

    /// A body that was not read whole.
    fn body(error: BodyError) -> Self {
        let (status, code) = match &error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BodyError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            BodyError::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            BodyError::Read(_) => (StatusCode::BAD_REQUEST, "malformed"),
        };
        let retry_after = match &error {
            BodyError::Busy { retry_after } => Some(*retry_after),
            _ => None,
        };
        Refusal { status, code, message: error.to_string(), retry_after, close: true }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.code, "message": self.message }))).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
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
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let raw = match app.bodies.read(body, declared).await {
        Ok(raw) => raw,
        Err(error) => {
            let refusal = Refusal::body(error);
            tracing::warn!(
                reason = refusal.code,
                content_length = declared,
                message = %refusal.message,
                "webhook refused while reading the body"
            );
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
                let job = NewJob::github_event(&event, app.job_max_attempts).map_err(|e| {
                    (
                        Refusal::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            format!("could not encode the event: {e}"),
                        ),
                        String::new(),
                    )
                })?;
                (DeliveryOutcome::Queued, action, Some(job))
            }
        };
        let delivery = NewDelivery {
            hook_id,
            delivery_id: delivery_id.clone(),
            body_sha256: Some(hex::encode(Sha256::digest(&*raw))),
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
            Ok(Recorded::Replay { of }) => {
                // The signature covers the body only: a captured body sent again under a new
                // delivery id is signed as well as the original. It is answered like a
                // duplicate, so the sender learns nothing, and logged for the operator.
                tracing::warn!(
                    original_delivery = %of,
                    "delivery refused as a replay: the same body was received within the redelivery window under another delivery id"
                );
                let body = Json(json!({ "delivery": delivery_id, "status": "duplicate" }));
                Ok(((StatusCode::OK, body).into_response(), event, "replay"))
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
