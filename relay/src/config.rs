//! The relay's one configuration struct. Every field is a command-line flag, an environment
//! variable of the same name (`--quic-addr` ↔ `DUET_QUIC_ADDR`), and a key in the optional
//! TOML file given with `--config`. Precedence: flag or environment, then file, then the
//! default. The defaults make `cargo run --release -p duet-relay` serve a working app on
//! localhost with nothing else set up.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(
    name = "duet-relay",
    version,
    about = "Duet relay: random video chat over WebTransport"
)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TOML file with any of these settings (keys as the long flag names, with `_`).
    #[arg(long, env = "DUET_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// UDP address for WebTransport (QUIC). Port 0 picks a free port.
    #[arg(long, env = "DUET_QUIC_ADDR", default_value = "0.0.0.0:4433")]
    pub quic_addr: SocketAddr,

    /// TCP address for HTTP: the web client, /status, /metrics, /certificate.sha256.
    #[arg(long, env = "DUET_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// PEM certificate chain of a real deployment (with --key). Without it the relay makes
    /// a short-lived development certificate and rotates it.
    #[arg(long, env = "DUET_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, env = "DUET_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Extra DNS names or IP addresses for the development certificate (comma-separated).
    #[arg(long, env = "DUET_CERT_NAMES", value_delimiter = ',')]
    pub cert_names: Vec<String>,

    /// Serve the web client from this folder instead of the copy built into the binary.
    #[arg(long, env = "DUET_WEB_ROOT")]
    pub web_root: Option<PathBuf>,

    /// Most sessions at once; more are refused with `server_full`.
    #[arg(long, env = "DUET_MAX_SESSIONS", default_value_t = 20_000)]
    pub max_sessions: usize,

    /// Most sessions from one address: an IPv4 address or an IPv6 /64 (people behind one
    /// NAT share an address; one IPv6 client gets a whole /64). Parked sessions count.
    #[arg(long, env = "DUET_MAX_SESSIONS_PER_IP", default_value_t = 32)]
    pub max_sessions_per_ip: usize,

    /// Most connections between their first packet and `Hello` at once; more are refused
    /// before any handshake work.
    #[arg(long, env = "DUET_MAX_HANDSHAKES", default_value_t = 4_096)]
    pub max_handshakes: usize,

    /// With this many handshakes in flight, new connections must first prove their
    /// address (QUIC Retry, one extra round trip).
    #[arg(long, env = "DUET_RETRY_ABOVE", default_value_t = 1_024)]
    pub retry_above: usize,

    /// New connections one address (IPv4, or IPv6 /64) may open in a burst; 0 means as
    /// many as --max-sessions-per-ip (an address may open all its sessions at once), and
    /// at least 30.
    #[arg(long, env = "DUET_HANDSHAKE_BURST", default_value_t = 0)]
    pub handshake_burst: u32,
    /// ...and refilled per minute; 0 means four times --max-sessions-per-ip, at least 120.
    #[arg(long, env = "DUET_HANDSHAKES_PER_MINUTE", default_value_t = 0)]
    pub handshakes_per_minute: u32,

    /// On SIGTERM, how long calls may go on (no new pairs) before every session is closed
    /// with `shutting_down`, in seconds.
    #[arg(long, env = "DUET_DRAIN_S", default_value_t = 30)]
    pub drain_s: u64,

    /// File of blocked addresses and prefixes (one a line, CIDR allowed, `#` comments),
    /// re-read when it changes and on SIGHUP.
    #[arg(long, env = "DUET_BLOCK_LIST")]
    pub block_list: Option<PathBuf>,

    /// Address of the admin listener (HTTP: /sessions, /sessions/{id}/end, /metrics).
    /// Off unless set; needs --admin-token.
    #[arg(long, env = "DUET_ADMIN_ADDR", requires = "admin_token")]
    pub admin_addr: Option<SocketAddr>,

    /// Bearer token the admin listener requires (`Authorization: Bearer <token>`).
    #[arg(long, env = "DUET_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// How often the block list and certificate files are checked for changes, in ms.
    #[arg(long, env = "DUET_RELOAD_POLL_MS", default_value_t = 2_000)]
    pub reload_poll_ms: u64,

    /// Log as JSON lines (one object per event, with the session id) instead of text.
    #[arg(long, env = "DUET_LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    /// Serve no WebSocket fallback (`/ws` answers 404): WebTransport only, for a relay
    /// behind a proxy that cannot pass WebSockets, or an operator who wants UDP only.
    #[arg(long, env = "DUET_NO_WEBSOCKET", default_value_t = false)]
    pub no_websocket: bool,

    /// Time a new connection has to send `Hello`, in milliseconds.
    #[arg(long, env = "DUET_HELLO_TIMEOUT_MS", default_value_t = 5_000)]
    pub hello_timeout_ms: u64,

    /// A connection silent for this long is gone (QUIC idle timeout), in milliseconds.
    /// The relay sends keep-alives at a third of it, so live clients never hit it.
    #[arg(long, env = "DUET_IDLE_TIMEOUT_MS", default_value_t = 10_000)]
    pub idle_timeout_ms: u64,

    /// Longest wait for a partner who shares an interest before anyone will do, in ms.
    #[arg(long, env = "DUET_INTEREST_WAIT_MS", default_value_t = 3_000)]
    pub interest_wait_ms: u64,

    /// After Next, the two are not paired again for this long, in seconds.
    #[arg(long, env = "DUET_SKIP_COOLDOWN_S", default_value_t = 60)]
    pub skip_cooldown_s: u64,

    /// Someone reported by this many distinct people within --cooling-window-s is not
    /// paired for --cooling-off-s (told with `cooling_off`).
    #[arg(long, env = "DUET_COOLING_REPORTS", default_value_t = 3)]
    pub cooling_reports: usize,
    #[arg(long, env = "DUET_COOLING_WINDOW_S", default_value_t = 600)]
    pub cooling_window_s: u64,
    #[arg(long, env = "DUET_COOLING_OFF_S", default_value_t = 900)]
    pub cooling_off_s: u64,

    /// Next presses allowed in a burst, and refilled per minute.
    #[arg(long, env = "DUET_NEXT_BURST", default_value_t = 10)]
    pub next_burst: u32,
    #[arg(long, env = "DUET_NEXT_PER_MINUTE", default_value_t = 60)]
    pub next_per_minute: u32,

    /// Chat lines allowed in a burst, and refilled per minute.
    #[arg(long, env = "DUET_CHAT_BURST", default_value_t = 20)]
    pub chat_burst: u32,
    #[arg(long, env = "DUET_CHAT_PER_MINUTE", default_value_t = 120)]
    pub chat_per_minute: u32,

    /// Media a session may send, in kbit/s (with a one-second burst); more is dropped.
    #[arg(long, env = "DUET_MAX_MEDIA_KBPS", default_value_t = 8_000)]
    pub max_media_kbps: u32,

    /// How long a session whose connection was lost is held for its client to resume it
    /// (with the same partner), in seconds. 0 disables resuming.
    #[arg(long, env = "DUET_RESUME_GRACE_S", default_value_t = 30)]
    pub resume_grace_s: u64,

    /// How often each session is sent the relay's view of its connection, in ms.
    #[arg(long, env = "DUET_STATS_INTERVAL_MS", default_value_t = 1_000)]
    pub stats_interval_ms: u64,

    /// UDP socket buffer size in bytes. The kernel default (~208 KB) drops bursts at
    /// relay rates; the kernel caps it at net.core.rmem_max / wmem_max.
    #[arg(long, env = "DUET_SOCKET_BUFFER", default_value_t = 8 << 20)]
    pub socket_buffer: usize,

    /// Worker threads of the async runtime; 0 means one per CPU core. One thread costs
    /// less CPU per forwarded datagram (no wake-ups between threads) but uses one core.
    #[arg(long, env = "DUET_THREADS", default_value_t = 0)]
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        // The clap defaults are the one source of truth for default values.
        Config::parse_from(["duet-relay"])
    }
}

impl Config {
    /// Parses flags and environment, then fills what they left at default from `--config`.
    pub fn load() -> anyhow::Result<Config> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> anyhow::Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Config::command().try_get_matches_from(args)?;
        let cli = Config::from_arg_matches(&matches)?;
        let Some(path) = cli.config.clone() else {
            return Ok(cli);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let file: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        // Merge field by field through JSON: a value the user gave explicitly wins over the
        // file; a clap default gives way to it.
        let mut merged = serde_json::to_value(&cli)?;
        let file_value = serde_json::to_value(&file)?;
        if let (Some(m), Some(f)) = (merged.as_object_mut(), file_value.as_object()) {
            for (key, value) in f {
                let explicit = matches!(
                    matches.value_source(key),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
                if !explicit && text_has_key(&text, key) {
                    m.insert(key.clone(), value.clone());
                }
            }
        }
        let mut out: Config = serde_json::from_value(merged)?;
        out.config = Some(path);
        Ok(out)
    }
}

/// Whether the TOML text sets `key` (so a file's implicit default does not override a flag).
fn text_has_key(text: &str, key: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_localhost() {
        let c = Config::default();
        assert_eq!(c.quic_addr.port(), 4433);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.interest_wait_ms, 3_000);
    }

    #[test]
    fn file_fills_what_flags_leave_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("duet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("relay.toml");
        std::fs::write(&path, "max_sessions = 7\ninterest_wait_ms = 10\n").expect("write");
        let c = Config::load_from([
            "duet-relay",
            "--config",
            path.to_str().expect("utf8"),
            "--interest-wait-ms",
            "99",
        ])
        .expect("loads");
        assert_eq!(c.max_sessions, 7);
        assert_eq!(c.interest_wait_ms, 99);
        std::fs::write(&path, "no_such_setting = 1\n").expect("write");
        let err = Config::load_from(["duet-relay", "--config", path.to_str().expect("utf8")])
            .expect_err("unknown keys are refused");
        assert!(err.to_string().contains("no_such_setting"), "{err}");
    }
}
