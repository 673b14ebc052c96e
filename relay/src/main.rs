//! `duet-relay`: parse the configuration, start the relay, print where to find it, and
//! serve. SIGTERM drains (no new pairs, clients told, calls go on for `--drain-s`) and
//! exits 0; Ctrl-C closes at once; SIGHUP reloads the block list and the certificate.

use duet_relay::Config;

fn main() -> anyhow::Result<()> {
    // First, before any thread or allocation that matters: see `malloc_tunables.rs`.
    duet_relay::malloc_tunables::restart_with_malloc_tunables();
    let config = match Config::load() {
        Ok(config) => config,
        // `--help` and `--version` print and exit 0; a bad flag prints clap's usage and exits 2
        // (not an `Error:` with a backtrace).
        Err(e) => match e.downcast_ref::<clap::Error>() {
            Some(usage) => usage.exit(),
            None => return Err(e),
        },
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "duet_relay=info,warn".into());
    // Every line inside a session carries its id: the session task runs in a `session`
    // span, which both formats print. Logs go to stderr: stdout's first line is the
    // machine-readable `duet-relay listening ...` that scripts and tests parse.
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
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
    let drain = std::time::Duration::from_secs(relay.drain_s());
    loop {
        match signal().await {
            Signal::Reload => match relay.reload().await {
                Ok(()) => say("reloaded the block list and certificate"),
                Err(e) => say(&format!("reload failed: {e}")),
            },
            Signal::Drain => {
                say(&format!("draining for up to {} s", drain.as_secs()));
                relay.drain_and_shutdown(drain).await;
                break;
            }
            Signal::Stop => {
                say("shutting down");
                relay.shutdown().await;
                break;
            }
        }
    }
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

enum Signal {
    Reload,
    Drain,
    Stop,
}

async fn signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let wait = |kind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => Signal::Stop,
            _ = wait(SignalKind::terminate()) => Signal::Drain,
            _ = wait(SignalKind::hangup()) => Signal::Reload,
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        Signal::Stop
    }
}
