//! The agenda's HTTP/JSON API (`/v1/users`, `/v1/sessions`, `/v1/me`, `/v1/groups`,
//! `/v1/events`, `/v1/agenda`, `/v1/invitations`, `/v1/freebusy`, `/v1/find-time`; iCalendar in
//! `ical.rs`): parsing and encoding only; every decision is the agenda layer's. Sessions travel as
//! `Authorization: Bearer <session token>`; errors are `{"code", "message"}` with a 4xx or 5xx
//! status, as in the key-value API. See docs/agenda-api.md for one example per endpoint.

use std::sync::Arc;

use agenda::AgendaError;
use agenda::events::Response as Rsvp;
use agenda::wire::{self, EventPatch, EventRequest};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::http::{ApiError, ApiResult, AppState, finish};
use crate::agenda::ServerAgenda;
use crate::metrics::Metrics;
use crate::service::Service;

/// The agenda's routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/users/{name}", get(user))
        .route("/v1/sessions", post(login))
        .route("/v1/sessions/current", delete(logout))
        .route("/v1/me", get(me).patch(update_me))
        .route("/v1/groups", post(create_group).get(my_groups))
        .route("/v1/groups/{id}", get(group))
        .route("/v1/groups/{id}/members", post(add_member))
        .route("/v1/groups/{id}/members/{user}", delete(remove_member))
        .route("/v1/events", post(create_event))
        .route(
            "/v1/events/{id}",
            get(event).patch(update_event).delete(delete_event),
        )
        .route("/v1/events/{id}/tally", get(tally))
        .route("/v1/events/{id}/alerts", get(alerts).put(set_alerts))
        .route("/v1/alerts", get(all_alerts))
        .route("/v1/agenda", get(agenda_range))
        .route("/v1/invitations", get(invitations))
        .route("/v1/invitations/{id}/rsvp", post(rsvp))
        .route("/v1/freebusy", post(free_busy))
        .route("/v1/find-time", post(find_time))
        // Last, so that it covers every route above: a method a route does not take is a
        // refused agenda request too (the server's own fallback would not count it as one).
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(State(state): AgendaState) -> HttpResponse {
    let refusal = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    );
    answer(&state.service, Err(refusal))
}

impl From<AgendaError> for ApiError {
    fn from(error: AgendaError) -> ApiError {
        let status = match &error {
            AgendaError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AgendaError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AgendaError::Forbidden(_) => StatusCode::FORBIDDEN,
            AgendaError::NotFound(_) => StatusCode::NOT_FOUND,
            AgendaError::AlreadyExists(_)
            | AgendaError::Conflict(_)
            | AgendaError::Contended(_) => StatusCode::CONFLICT,
            AgendaError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgendaError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

/// Counts a refused agenda request apart from the key-value API's, then answers as every route.
pub(super) fn answer(service: &Service, result: ApiResult) -> HttpResponse {
    if let Err(error) = &result {
        let counters = &service.metrics().counters;
        if error.status().is_client_error() {
            Metrics::add(&counters.calendar_requests_refused, 1);
        } else if error.status().is_server_error() {
            Metrics::add(&counters.calendar_requests_failed, 1);
        }
    }
    finish(service, result)
}

/// The session token the request carries.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing `Authorization: Bearer <session token>`",
            )
        })
}

/// The user whose session token the request carries.
pub(super) async fn caller(agenda: &ServerAgenda, headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(agenda.authenticate(bearer(headers)?).await?)
}

pub(super) fn created(body: serde_json::Value) -> HttpResponse {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn ok(body: impl serde::Serialize) -> HttpResponse {
    Json(body).into_response()
}

fn to_json(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Turns a `(shard, index)` position into its JSON form.
fn position((shard, index): (u64, u64)) -> serde_json::Value {
    json!({"shard": shard, "index": index})
}

type AgendaState = State<AppState>;

fn parts(state: &AppState) -> (&Service, &ServerAgenda) {
    (&state.service, &state.agenda)
}

async fn register(
    State(state): AgendaState,
    body: Result<Json<agenda::users::Registration>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let Json(registration) = body?;
        let profile = agenda.register(registration).await?;
        Ok(created(to_json(profile)))
    }
    .await;
    answer(service, result)
}

async fn user(
    State(state): AgendaState,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        caller(agenda, &headers).await?;
        let Path(name) = name?;
        Ok(ok(agenda.profile(&name).await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
}

async fn login(
    State(state): AgendaState,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let Json(body) = body?;
        let session = agenda.login(&body.name, &body.password).await?;
        Ok(created(to_json(session)))
    }
    .await;
    answer(service, result)
}

async fn logout(State(state): AgendaState, headers: HeaderMap) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        // `logout` checks the session itself.
        agenda.logout(bearer(&headers)?).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(service, result)
}

async fn me(State(state): AgendaState, headers: HeaderMap) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        Ok(ok(agenda.profile(&user).await?))
    }
    .await;
    answer(service, result)
}

async fn update_me(
    State(state): AgendaState,
    headers: HeaderMap,
    body: Result<Json<agenda::users::ProfileChange>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Json(change) = body?;
        Ok(ok(agenda.update_profile(&user, change).await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    id: String,
    name: Option<String>,
}

async fn create_group(
    State(state): AgendaState,
    headers: HeaderMap,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Json(body) = body?;
        let name = body.name.unwrap_or_else(|| body.id.clone());
        Ok(created(to_json(
            agenda.create_group(&user, &body.id, &name).await?,
        )))
    }
    .await;
    answer(service, result)
}

async fn my_groups(State(state): AgendaState, headers: HeaderMap) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        Ok(ok(json!({"groups": agenda.my_groups(&user).await?})))
    }
    .await;
    answer(service, result)
}

async fn group(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        Ok(ok(agenda.group(&user, &id).await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    user: String,
    #[serde(default)]
    role: Option<agenda::groups::Role>,
}

async fn add_member(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<MemberBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        let Json(body) = body?;
        let role = body.role.unwrap_or(agenda::groups::Role::Member);
        Ok(ok(agenda.add_member(&user, &id, &body.user, role).await?))
    }
    .await;
    answer(service, result)
}

async fn remove_member(
    State(state): AgendaState,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path((id, member)) = path?;
        Ok(ok(agenda.remove_member(&user, &id, &member).await?))
    }
    .await;
    answer(service, result)
}

/// An event as the API shows it: the stored record, attendees in the API's form.
fn event_json(event: &agenda::events::Event) -> serde_json::Value {
    let mut value = to_json(event);
    value["attendees"] = to_json(wire::attendee_names(&event.attendees));
    value
}

fn saved_json(saved: &agenda::events::Saved) -> serde_json::Value {
    let mut value = event_json(&saved.event);
    value["conflicts"] = to_json(&saved.conflicts);
    value["position"] = position(saved.position);
    if let Some(truncated) = &saved.truncated {
        value["truncated"] = event_json(truncated);
    }
    if saved.replayed {
        value["replayed"] = true.into();
    }
    value
}

/// The `Idempotency-Key` header, if the request has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value.to_str().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "invalid idempotency key: visible ASCII only",
        )
    })
}

async fn create_event(
    State(state): AgendaState,
    headers: HeaderMap,
    body: Result<Json<EventRequest>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Json(request) = body?;
        let zone = agenda.profile(&user).await?.zone;
        let new = request.into_new_event(&zone)?;
        let key = idempotency_key(&headers)?;
        let saved = agenda.create_event_once(&user, new, key).await?;
        Ok(created(saved_json(&saved)))
    }
    .await;
    answer(service, result)
}

async fn event(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let Path(id) = id?;
        // axum cannot route a parameter with a suffix (`{id}.ics`): the export comes here.
        if let Some(id) = id.strip_suffix(".ics") {
            return super::ical::event_ics(agenda, &headers, id).await;
        }
        let user = caller(agenda, &headers).await?;
        Ok(ok(event_json(&agenda.event(&user, &id).await?)))
    }
    .await;
    answer(service, result)
}

async fn update_event(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EventPatch>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        let Json(patch) = body?;
        let event = agenda.event(&user, &id).await?;
        let schedule = &event.content.schedule;
        let change = patch.into_change(&schedule.zone, schedule.is_all_day())?;
        let saved = agenda.update_event(&user, &id, change).await?;
        Ok(ok(saved_json(&saved)))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeQuery {
    scope: Option<String>,
    occurrence: Option<String>,
}

async fn delete_event(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ScopeQuery>, QueryRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        let Query(query) = query?;
        let event = agenda.event(&user, &id).await?;
        let schedule = &event.content.schedule;
        let scope = wire::parse_scope(
            query.scope.as_deref(),
            query.occurrence.as_deref(),
            &schedule.zone,
            schedule.is_all_day(),
        )?;
        let written = agenda.delete_event(&user, &id, scope).await?;
        Ok(ok(json!({"position": position(written)})))
    }
    .await;
    answer(service, result)
}

async fn tally(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        Ok(ok(agenda.tally(&user, &id).await?))
    }
    .await;
    answer(service, result)
}

async fn alerts(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        Ok(ok(agenda.alerts(&user, &id).await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsBody {
    minutes_before: Vec<u32>,
}

async fn set_alerts(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<AlertsBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        let Json(body) = body?;
        Ok(ok(agenda
            .set_alerts(&user, &id, &body.minutes_before)
            .await?))
    }
    .await;
    answer(service, result)
}

async fn all_alerts(State(state): AgendaState, headers: HeaderMap) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        Ok(ok(agenda.all_alerts(&user).await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: String,
    to: String,
}

async fn agenda_range(
    State(state): AgendaState,
    headers: HeaderMap,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Query(range) = query?;
        let from_ms = wire::parse_instant("from", &range.from)?;
        let to_ms = wire::parse_instant("to", &range.to)?;
        Ok(ok(
            json!({"occurrences": agenda.agenda(&user, from_ms, to_ms).await?}),
        ))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitationsQuery {
    #[serde(default)]
    all: bool,
}

async fn invitations(
    State(state): AgendaState,
    headers: HeaderMap,
    query: Result<Query<InvitationsQuery>, QueryRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Query(query) = query?;
        let invitations = agenda.invitations(&user, !query.all).await?;
        Ok(ok(json!({"invitations": invitations})))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RsvpBody {
    response: Rsvp,
    #[serde(default)]
    occurrence: Option<String>,
}

async fn rsvp(
    State(state): AgendaState,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<RsvpBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Path(id) = id?;
        let Json(body) = body?;
        let occurrence = match &body.occurrence {
            None => None,
            Some(text) => {
                let invitation = agenda
                    .invitations(&user, false)
                    .await?
                    .into_iter()
                    .find(|invitation| invitation.copy.event_id == id)
                    .ok_or_else(|| AgendaError::NotFound(format!("event {id}")))?;
                let schedule = &invitation.copy.content.schedule;
                Some(wire::parse_local(
                    "occurrence",
                    text,
                    &schedule.zone,
                    schedule.is_all_day(),
                )?)
            }
        };
        Ok(ok(agenda
            .rsvp(&user, &id, body.response, occurrence)
            .await?))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreeBusyBody {
    users: Vec<String>,
    from: String,
    to: String,
}

async fn free_busy(
    State(state): AgendaState,
    headers: HeaderMap,
    body: Result<Json<FreeBusyBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        caller(agenda, &headers).await?;
        let Json(body) = body?;
        let from_ms = wire::parse_instant("from", &body.from)?;
        let to_ms = wire::parse_instant("to", &body.to)?;
        Ok(ok(
            json!({"users": agenda.free_busy(&body.users, from_ms, to_ms).await?}),
        ))
    }
    .await;
    answer(service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindTimeBody {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    group: Option<String>,
    from: String,
    to: String,
    minutes: u32,
    #[serde(default)]
    max: Option<u32>,
}

/// The most slots one find-a-time answers.
const SLOTS_MAX: u32 = 50;

async fn find_time(
    State(state): AgendaState,
    headers: HeaderMap,
    body: Result<Json<FindTimeBody>, JsonRejection>,
) -> HttpResponse {
    let (service, agenda) = parts(&state);
    let result = async {
        let user = caller(agenda, &headers).await?;
        let Json(body) = body?;
        let mut users = body.users;
        if let Some(group) = &body.group {
            users.extend(agenda.group_members(&user, group).await?);
        }
        users.sort();
        users.dedup();
        let from_ms = wire::parse_instant("from", &body.from)?;
        let to_ms = wire::parse_instant("to", &body.to)?;
        if body.minutes == 0 || body.minutes > 24 * 60 {
            return Err(ApiError::bad_request("minutes: 1 to 1440"));
        }
        let max = body.max.unwrap_or(10).clamp(1, SLOTS_MAX) as usize;
        let length_ms = i64::from(body.minutes) * 60_000;
        let slots = agenda
            .find_time(&users, from_ms, to_ms, length_ms, max)
            .await?;
        let slots: Vec<_> = slots
            .into_iter()
            .map(|(start, end)| json!({"start_ms": start, "end_ms": end}))
            .collect();
        Ok(ok(json!({"users": users, "slots": slots})))
    }
    .await;
    answer(service, result)
}

/// The agenda a router serves.
pub(super) type SharedAgenda = Arc<ServerAgenda>;
