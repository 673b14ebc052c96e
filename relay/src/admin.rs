//! The operator's listener (`--admin-addr`, `--admin-token`): list live sessions, end one,
//! and `/metrics`. Every request needs `Authorization: Bearer <token>`; it is meant for a
//! private address (localhost, a VPN), never the public one.
//!
//! `/metrics` stays on the public port too, as before: dashboards already scrape it there,
//! and it says nothing about any one person. The session list (names, addresses) is here
//! only.

use crate::http::{self, HttpState};
use crate::session::Shared;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub http: HttpState,
    pub shared: Arc<Shared>,
    pub token: Arc<str>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/sessions", get(sessions))
        .route("/sessions/{id}/end", post(end_session))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Compares the bearer token in constant time (for equal lengths).
fn authorized(s: &AdminState, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let want = s.token.as_bytes();
    let given = given.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "admin token required\n").into_response()
}

async fn sessions(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    Json(s.shared.list_sessions()).into_response()
}

async fn end_session(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    if s.shared.kick(id) {
        tracing::info!(session = id, "ended by the operator");
        (StatusCode::OK, "ended\n").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    http::metrics(State(s.http)).await.into_response()
}
