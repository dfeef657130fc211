//! The agenda's iCalendar endpoints: `GET /v1/events/{id}.ics` (answered by the event route of
//! `calendar.rs`, which hands a `.ics` id here), `POST` and `DELETE /v1/me/feed`,
//! `GET /v1/feeds/{user}/{secret}.ics` (no session: calendar applications cannot send one; the
//! secret in the URL is the credential) and `POST /v1/events/import`. Parsing and encoding
//! only; `agenda::ical` decides. See docs/agenda-api.md.

use agenda::ical::{IMPORT_BYTES_MAX, ImportReport};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use serde_json::json;

use super::calendar::{answer, caller, created};
use super::http::{ApiError, AppState};
use crate::agenda::ServerAgenda;

/// The media type of every answer in iCalendar form.
const CALENDAR_TYPE: &str = "text/calendar; charset=utf-8";

/// How many refused VEVENTs the message of a wholly refused import names.
const ERRORS_SHOWN_MAX: usize = 5;

/// The iCalendar routes (the event export is the event route's).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/feed", post(rotate_feed).delete(delete_feed))
        .route("/v1/feeds/{user}/{file}", get(feed))
        .route("/v1/events/import", post(import))
}

fn calendar_text(text: String) -> HttpResponse {
    ([(header::CONTENT_TYPE, CALENDAR_TYPE)], text).into_response()
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} not found"),
    )
}

/// `GET /v1/events/{id}.ics`, for the event route: `id` without its suffix.
pub(super) async fn event_ics(
    agenda: &ServerAgenda,
    headers: &HeaderMap,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let user = caller(agenda, headers).await?;
    Ok(calendar_text(agenda.event_ics(&user, id).await?))
}

async fn rotate_feed(State(state): State<AppState>, headers: HeaderMap) -> HttpResponse {
    let result = async {
        let user = caller(&state.agenda, &headers).await?;
        let url = state.agenda.rotate_feed(&user).await?;
        Ok(created(json!(url)))
    }
    .await;
    answer(&state.service, result)
}

async fn delete_feed(State(state): State<AppState>, headers: HeaderMap) -> HttpResponse {
    let result = async {
        let user = caller(&state.agenda, &headers).await?;
        state.agenda.delete_feed(&user).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state.service, result)
}

async fn feed(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> HttpResponse {
    let result = async {
        let Path((user, file)) = path?;
        let secret = file.strip_suffix(".ics").ok_or_else(|| not_found("feed"))?;
        Ok(calendar_text(state.agenda.feed(&user, secret).await?))
    }
    .await;
    answer(&state.service, result)
}

/// Whether the request says its body is iCalendar.
fn is_calendar(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/calendar"))
}

async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let result = async {
        let user = caller(&state.agenda, &headers).await?;
        if !is_calendar(&headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_request",
                "expected `Content-Type: text/calendar`",
            ));
        }
        let body = body.map_err(|rejection| {
            ApiError::new(rejection.status(), "bad_request", rejection.body_text())
        })?;
        if body.len() > IMPORT_BYTES_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("an import takes at most {IMPORT_BYTES_MAX} bytes"),
            ));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the calendar is not UTF-8"))?;
        let report = state.agenda.import_ics(&user, text).await?;
        if report.created.is_empty() {
            return Err(refused(&report));
        }
        Ok(created(json!(report)))
    }
    .await;
    answer(&state.service, result)
}

/// The answer to an import that created nothing: its first reasons.
fn refused(report: &ImportReport) -> ApiError {
    let reasons: Vec<String> = report
        .errors
        .iter()
        .take(ERRORS_SHOWN_MAX)
        .map(|error| format!("VEVENT {}: {}", error.index, error.message))
        .collect();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!(
            "no event imported ({} refused): {}",
            report.errors.len(),
            reasons.join("; ")
        ),
    )
}
