//! The relay's HTTP side (axum): the web client, `/config.json` (how the page reaches the
//! QUIC port), `/certificate.sha256`, `/status`, `/metrics` and `/health`.
//!
//! [`router`] builds the whole app from state, so tests call it without a socket.

use crate::metrics::{Metrics, StatusLimits};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The web client, built into the binary (in debug builds rust-embed reads the folder from
/// disk, so edits show on reload).
#[derive(rust_embed::RustEmbed)]
#[folder = "../web-client/app/"]
struct WebClient;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub limits: StatusLimits,
    pub quic_port: u16,
    /// Fingerprint of the development certificate in use; `None` with a real certificate.
    pub fingerprint: Arc<RwLock<Option<String>>>,
    pub web_root: Option<PathBuf>,
    /// Set when the relay drains or shuts down: `/health` answers 503 so a load balancer
    /// sends nobody new here.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/certificate.sha256", get(certificate))
        .route("/config.json", get(client_config))
        .fallback(get(static_file))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> Response {
    if s.draining.load(Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

async fn status(State(s): State<HttpState>) -> impl IntoResponse {
    no_store(Json(s.metrics.snapshot(s.started, s.limits)).into_response())
}

pub async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s.metrics.snapshot(s.started, s.limits).prometheus();
    no_store(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

fn current_fingerprint(s: &HttpState) -> Option<String> {
    s.fingerprint
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

async fn certificate(State(s): State<HttpState>) -> Response {
    match current_fingerprint(&s) {
        Some(hex) => no_store(hex.into_response()),
        None => (
            StatusCode::NOT_FOUND,
            "this relay uses a CA-signed certificate; no fingerprint is needed\n",
        )
            .into_response(),
    }
}

async fn client_config(State(s): State<HttpState>) -> Response {
    no_store(
        Json(serde_json::json!({
            "quic_port": s.quic_port,
            "path": duet_proto::SESSION_PATH,
            "certificate_sha256": current_fingerprint(&s),
            "protocol_version": duet_proto::PROTOCOL_VERSION,
        }))
        .into_response(),
    )
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn static_file(State(s): State<HttpState>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    if path
        .split('/')
        .any(|seg| seg == ".." || seg.starts_with('.'))
    {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let body: Option<Vec<u8>> = match &s.web_root {
        Some(root) => tokio::fs::read(root.join(path)).await.ok(),
        None => WebClient::get(path).map(|f| f.data.into_owned()),
    };
    match body {
        Some(bytes) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            no_store(([(header::CONTENT_TYPE, mime.as_ref().to_string())], bytes).into_response())
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> HttpState {
        HttpState {
            metrics: Arc::new(Metrics::default()),
            started: Instant::now(),
            limits: StatusLimits {
                max_sessions: 1,
                max_sessions_per_ip: 1,
                max_media_kbps: 1,
                max_chat_bytes: 1,
                max_frame_bytes: 1,
            },
            quic_port: 4433,
            fingerprint: Arc::new(RwLock::new(Some("ab".repeat(32)))),
            web_root: None,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn get(path: &str) -> (StatusCode, String, String) {
        let r = router(state())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = r.status();
        let ctype = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_app_and_the_endpoints() {
        let (s, ctype, body) = get("/").await;
        assert_eq!(s, StatusCode::OK);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
        assert_eq!(get("/health").await.0, StatusCode::OK);
        assert_eq!(get("/certificate.sha256").await.2, "ab".repeat(32));
        let (_, _, cfg) = get("/config.json").await;
        let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
        assert_eq!(cfg["quic_port"], 4433);
        assert_eq!(get("/../Cargo.toml").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get("/no-such-file.js").await.0, StatusCode::NOT_FOUND);
        let (_, ctype, metrics) = get("/metrics").await;
        assert!(ctype.starts_with("text/plain"));
        assert!(metrics.contains("duet_datagrams_forwarded_total 0"));
        assert!(metrics.contains("duet_time_to_match_seconds_bucket{le=\"+Inf\"} 0"));
    }
}
