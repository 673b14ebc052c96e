//! `duet-relay`: parse the configuration, start the relay, print where to find it, and
//! serve until Ctrl-C or SIGTERM.

use duet_relay::Config;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "duet_relay=info,warn".into()),
        )
        .init();
    let config = Config::load()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    runtime.enable_all().build()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let relay = duet_relay::start(config).await?;
    let http = relay.http_addr;
    let scheme = if relay.https { "https" } else { "http" };
    let open = if http.ip().is_unspecified() {
        format!("{scheme}://localhost:{}/", http.port())
    } else {
        format!("{scheme}://{http}/")
    };
    let fingerprint = relay
        .fingerprint()
        .unwrap_or_else(|| "none (real certificate)".into());
    // One machine-readable line first (tests and scripts parse it), then the human summary.
    say(&format!(
        "duet-relay listening http={scheme}://{http} quic={} cert_sha256={fingerprint}\n  \
         Open {open} in a Chromium-based browser (two tabs to talk to yourself).\n  \
         WebTransport: https://{}/chat (UDP)\n  \
         Certificate SHA-256: {fingerprint}\n  \
         Status: {open}status   Metrics: {open}metrics",
        relay.quic_addr, relay.quic_addr
    ));
    shutdown_signal().await;
    say("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// Prints a line to stdout. A closed stdout (the reader went away) must not take the relay
/// down, as `println!` would by panicking.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
