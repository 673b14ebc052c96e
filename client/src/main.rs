//! `duet-client`: the native client on the command line.
//!
//! `duet-client call --relay https://127.0.0.1:4433 --cert-hash HEX --name Ana --seconds 5`
//! joins the queue, waits for a partner, exchanges synthetic media and chat, and prints
//! one JSON object describing the call.

use clap::{Parser, Subcommand};
use duet_client::call::{self, CallOptions};
use duet_client::ConnectOptions;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "duet-client", version, about = "Native Duet client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the queue, talk to whoever you are paired with, print a JSON report.
    Call(CallArgs),
}

#[derive(Parser)]
struct CallArgs {
    /// The relay's WebTransport address, e.g. https://127.0.0.1:4433
    #[arg(long, env = "DUET_RELAY", default_value = "https://127.0.0.1:4433")]
    relay: String,
    /// SHA-256 of the relay's development certificate (hex; see /certificate.sha256).
    /// Without it the system's root certificates are used.
    #[arg(long, env = "DUET_CERT_HASH")]
    cert_hash: Option<String>,
    /// Display name shown to the partner.
    #[arg(long, default_value = "Native")]
    name: String,
    /// Interests, comma-separated; shared ones are paired first.
    #[arg(long, value_delimiter = ',')]
    interests: Vec<String>,
    /// Seconds to stay in the call once paired.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds to wait for a partner before giving up.
    #[arg(long, default_value_t = 30.0)]
    match_timeout: f64,
    /// Video bitrate in kbit/s (30 frames a second).
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    /// Press Next every this many seconds.
    #[arg(long)]
    next_every: Option<f64>,
    /// Move the call to a new UDP socket every this many seconds (as a phone does when it
    /// changes network); the relay follows the connection.
    #[arg(long)]
    migrate_every: Option<f64>,
    /// Send a chat line every this many seconds (0 disables chat).
    #[arg(long, default_value_t = 1.0)]
    chat_every: f64,
    /// Send no media, only chat: for a call with a browser, which decodes real video and
    /// not synthetic frames. Media received is still opened and counted, not checked.
    #[arg(long)]
    no_media: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Call(args) = Cli::parse().command;
    let cert_hash = match &args.cert_hash {
        Some(h) => Some(
            parse_hash(h).ok_or_else(|| anyhow::anyhow!("--cert-hash must be 64 hex digits"))?,
        ),
        None => None,
    };
    let mut opts = CallOptions::new(ConnectOptions::new(args.relay, cert_hash), args.name);
    opts.interests = args.interests;
    opts.duration = secs(args.seconds)?;
    opts.match_timeout = secs(args.match_timeout)?;
    opts.video_kbps = args.video_kbps;
    opts.next_every = args.next_every.map(secs).transpose()?;
    opts.migrate_every = args.migrate_every.map(secs).transpose()?;
    opts.synthetic_media = !args.no_media;
    opts.chat_every = (args.chat_every > 0.0)
        .then(|| secs(args.chat_every))
        .transpose()?;
    let report = call::run(opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.time_to_match_ms.is_none() {
        std::process::exit(2);
    }
    Ok(())
}

fn secs(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{s} is not a number of seconds"))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let clean: String = text.trim().chars().filter(|c| *c != ':').collect();
    hex::decode(clean).ok()?.try_into().ok()
}
