//! A synthetic call: join the queue, wait for a partner, exchange media shaped like a real
//! call (30 fps video at a chosen bitrate, frames larger than one datagram, 50 audio
//! packets a second) and chat, optionally pressing Next on a schedule, then report.
//!
//! Frame contents come from [`crate::synth`], so the receiver checks every byte; capture
//! timestamps ride in the media header, so on one machine the one-way latency is exact.
//! Media and chat are sealed end to end ([`crate::e2ee`]): each pairing agrees keys first
//! (`KeyShare` at `Matched`), and nothing is sent before that.

use crate::e2ee::{KeyAhead, PairingCrypto};
use crate::synth;
use crate::{Client, ClientError, ConnectOptions};
use duet_proto::media::{Frame, MediaHeader, Reassembler, Track};
use duet_proto::*;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{interval, Instant, MissedTickBehavior};

#[derive(Clone)]
pub struct CallOptions {
    pub connect: ConnectOptions,
    /// Share this endpoint (one UDP socket) with other calls; `None` opens one for the call.
    pub endpoint: Option<std::sync::Arc<crate::ClientEndpoint>>,
    pub name: String,
    pub interests: Vec<String>,
    /// How long to stay in the call(s) once first paired.
    pub duration: Duration,
    /// Give up if nobody is found by then.
    pub match_timeout: Duration,
    pub video_kbps: u32,
    pub fps: u32,
    pub audio_pps: u32,
    pub audio_bytes: usize,
    /// A keyframe (twice the size) this often, and whenever the partner asks.
    pub keyframe_every: Duration,
    pub chat_every: Option<Duration>,
    pub next_every: Option<Duration>,
    /// Move the call to a new UDP socket this often (implies a mobile connection).
    pub migrate_every: Option<Duration>,
    /// Send synthetic media and check that the partner's is synthetic too. Off: no media
    /// is sent, and what comes is opened and counted but not checked (a browser partner).
    pub synthetic_media: bool,
}

impl CallOptions {
    pub fn new(connect: ConnectOptions, name: impl Into<String>) -> Self {
        Self {
            connect,
            endpoint: None,
            name: name.into(),
            interests: Vec::new(),
            duration: Duration::from_secs(5),
            match_timeout: Duration::from_secs(30),
            video_kbps: 1000,
            fps: 30,
            audio_pps: 50,
            audio_bytes: 80,
            keyframe_every: Duration::from_secs(2),
            chat_every: Some(Duration::from_secs(1)),
            next_every: None,
            migrate_every: None,
            synthetic_media: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub count: u64,
}

impl Percentiles {
    fn from_us(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Some(Self {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            count: h.len(),
        })
    }
}

/// What `duet-client call` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallReport {
    pub name: String,
    pub partner: Option<String>,
    pub partners: Vec<String>,
    pub matches: u32,
    pub time_to_match_ms: Option<f64>,
    /// The codec the relay chose for this client's video to its first partner.
    pub send_codec: Option<String>,
    pub video_frames_sent: u64,
    pub audio_frames_sent: u64,
    pub frames_sent: u64,
    pub datagrams_sent: u64,
    pub video_frames_received: u64,
    pub audio_frames_received: u64,
    pub frames_received: u64,
    pub datagrams_received: u64,
    pub frames_lost: u64,
    pub frames_corrupt: u64,
    pub latency_ms: Option<Percentiles>,
    pub chat_sent: u64,
    pub chat_received: u64,
    pub nexts: u32,
    /// Moves to a new UDP socket during the call.
    pub migrations: u32,
    /// From pressing Next (or being left) to the first datagram from the new partner.
    pub next_to_media_ms: Option<Percentiles>,
    pub keyframes_requested_by_partner: u64,
    pub rtt_ms: Option<f64>,
    /// Keys were agreed with a partner and every frame and line went sealed.
    pub e2ee: bool,
    /// The first pairing's safety code (the words; the browser shows them beside emoji).
    pub safety_code: Option<String>,
    /// Every pairing's safety code, in order.
    pub safety_codes: Vec<String>,
    /// Frames from the partner that did not open (changed in transit, or sealed for
    /// another pairing): dropped, never used.
    pub frames_unopened: u64,
    /// Chat lines that did not open, or came in clear: dropped, never shown.
    pub chat_unopened: u64,
    pub errors: Vec<String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant figures: a few tens of KB, fixed.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[allow(clippy::panic)]
fn unreachable_histogram() -> Histogram<u64> {
    // Histogram::new(3) only fails for precision > 5.
    panic!("hdrhistogram rejected 3 significant figures")
}

struct Pairing {
    match_id: u64,
    crypto: PairingCrypto,
    reassembler: Reassembler,
    since_unpaired: Option<Instant>,
    first_media_seen: bool,
}

/// Seals one frame and sends it as fragments; returns the datagrams sent.
#[allow(clippy::too_many_arguments)]
fn send_frame(
    client: &Client,
    crypto: &mut PairingCrypto,
    sealed: &mut Vec<u8>,
    track: Track,
    seq: &mut u32,
    frame: u32,
    keyframe: bool,
    data: &[u8],
    max_payload: usize,
    buf: &mut Vec<u8>,
) -> u64 {
    let header = MediaHeader {
        match_id: crypto.match_id(),
        track,
        seq: 0,
        frame,
        frag_index: 0,
        frag_count: 1,
        keyframe,
        capture_us: now_us(),
        // Synthetic media: each delta frame refers to the one before it.
        ref_frame: if keyframe {
            frame
        } else {
            frame.wrapping_sub(1)
        },
    };
    if crypto.seal_frame(&header, data, sealed).is_err() {
        return 0;
    }
    let mut sent = 0;
    duet_proto::media::fragment(header, sealed, max_payload, seq, buf, |d| {
        if client.send_datagram(d).is_ok() {
            sent += 1;
        }
    });
    sent
}

/// Counts the chat lines waiting: those of the current pairing that open are received;
/// the rest (another pairing's, or lines that do not open) are not shown.
fn read_chat(client: &mut Client, mut pairing: Option<&mut Pairing>, report: &mut CallReport) {
    while let Some((m, line)) = client.try_recv_chat_frame() {
        let Some(p) = pairing.as_deref_mut().filter(|p| p.match_id == m) else {
            continue;
        };
        match p.crypto.open_line(&line) {
            Some(_) => report.chat_received += 1,
            None => report.chat_unopened += 1,
        }
    }
}

/// The partner's key for `match_id` arrived (in `Matched`, or as `PeerKey`): once agreed,
/// the safety code goes in the report and the first frame is a keyframe.
fn agreed(
    crypto: &mut PairingCrypto,
    match_id: u64,
    public: &[u8; 32],
    report: &mut CallReport,
    keyframe_due: &mut bool,
) {
    match crypto.on_peer_key(match_id, public) {
        Ok(true) => {
            let code = crypto.safety_code().unwrap_or_default();
            report.safety_code.get_or_insert_with(|| code.clone());
            report.safety_codes.push(code);
            report.e2ee = true;
            *keyframe_due = true;
        }
        Ok(false) => {}
        Err(e) => report.errors.push(format!(
            "the partner's key for pairing {match_id} was refused: {e}"
        )),
    }
}

/// Runs a whole call and reports on it.
pub async fn run(opts: CallOptions) -> Result<CallReport, ClientError> {
    let started = Instant::now();
    let mut report = CallReport {
        name: opts.name.clone(),
        ..CallReport::default()
    };
    let mut connect = opts.connect.clone();
    connect.mobile |= opts.migrate_every.is_some();
    let mut client = match &opts.endpoint {
        Some(endpoint) if !connect.mobile => Client::connect_on(endpoint, &connect).await?,
        _ => Client::connect(&connect).await?,
    };
    client.hello(&opts.name, &opts.interests, None).await?;
    let conn = client.connection().clone();

    let mut latency = histogram();
    let mut rematch = histogram();
    let mut pairing: Option<Pairing> = None;
    // The next pairing's key, registered ahead so that `Matched` brings the partner's.
    let mut ahead = KeyAhead::new();
    if let Some(msg) = ahead.register(rand::random()) {
        client.send(&msg).await?;
    }
    let mut unpaired_at: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let match_deadline = started + opts.match_timeout;

    let mut video = interval(Duration::from_secs_f64(1.0 / f64::from(opts.fps.max(1))));
    let mut audio = interval(Duration::from_secs_f64(
        1.0 / f64::from(opts.audio_pps.max(1)),
    ));
    let mut chat = interval(opts.chat_every.unwrap_or(Duration::from_secs(3600)));
    let mut next = interval(opts.next_every.unwrap_or(Duration::from_secs(3600)));
    let mut migrate = interval(opts.migrate_every.unwrap_or(Duration::from_secs(3600)));
    for t in [&mut video, &mut audio, &mut chat, &mut next, &mut migrate] {
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    }
    next.reset();
    migrate.reset();
    let frame_bytes = (u64::from(opts.video_kbps) * 1000 / 8 / u64::from(opts.fps.max(1))) as usize;
    let (mut vbuf, mut abuf, mut dgbuf, mut scratch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
    let (mut vseq, mut aseq, mut vframe, mut aframe) = (0u32, 0u32, 0u32, 0u32);
    let mut keyframe_due = true;
    let mut last_keyframe = Instant::now();
    let mut chat_n = 0u64;
    // After the call time is up, keep receiving briefly so in-flight media is counted.
    const DRAIN: Duration = Duration::from_millis(300);

    loop {
        let stop_at = end.map(|e| e + DRAIN).unwrap_or(match_deadline);
        // Nothing goes before the pairing's keys are agreed.
        let sending = pairing.as_ref().is_some_and(|p| p.crypto.ready())
            && end.is_none_or(|e| Instant::now() < e);
        tokio::select! {
            _ = tokio::time::sleep_until(stop_at) => {
                if end.is_none() {
                    report.errors.push(format!("no partner within {:?}", opts.match_timeout));
                }
                break;
            }
            msg = client.recv() => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => { report.errors.push(e.to_string()); break; }
                };
                match msg {
                    ServerMsg::Matched(m) if pairing.as_ref().is_some_and(|p| p.match_id == m.match_id) => {
                        // A resumed session: the same pairing, the same keys; the key is
                        // sent again in case it was lost with the old connection.
                        if let Some(p) = &mut pairing {
                            let _ = client.send(&p.crypto.key_share()).await;
                            if let Some(public) = m.partner_key {
                                agreed(&mut p.crypto, m.match_id, &public, &mut report, &mut keyframe_due);
                            }
                        }
                    }
                    ServerMsg::Matched(m) => {
                        if report.time_to_match_ms.is_none() {
                            report.time_to_match_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                            report.partner = Some(m.partner_name.clone());
                            report.send_codec = m.send_codec.map(|c| format!("{c:?}"));
                            end = Some(Instant::now() + opts.duration);
                        }
                        report.matches += 1;
                        report.partners.push(m.partner_name.clone());
                        let (secret, partner_has_it) = ahead.secret_for(m.your_key, rand::random());
                        let mut crypto = PairingCrypto::new(m.match_id, secret);
                        if !partner_has_it {
                            let _ = client.send(&crypto.key_share()).await;
                        }
                        if let Some(msg) = ahead.register(rand::random()) {
                            let _ = client.send(&msg).await;
                        }
                        if let Some(public) = m.partner_key {
                            agreed(&mut crypto, m.match_id, &public, &mut report, &mut keyframe_due);
                        }
                        pairing = Some(Pairing {
                            match_id: m.match_id,
                            crypto,
                            reassembler: Reassembler::new(),
                            since_unpaired: unpaired_at.take(),
                            first_media_seen: false,
                        });
                        keyframe_due = true;
                        vframe = 0;
                        aframe = 0;
                    }
                    ServerMsg::PeerKey { match_id, public } => {
                        let Some(p) = pairing.as_mut().filter(|p| p.match_id == match_id) else { continue };
                        agreed(&mut p.crypto, match_id, &public, &mut report, &mut keyframe_due);
                    }
                    ServerMsg::PeerLeft { .. } => {
                        pairing = None;
                        unpaired_at.get_or_insert_with(Instant::now);
                    }
                    ServerMsg::KeyframeRequested => {
                        report.keyframes_requested_by_partner += 1;
                        keyframe_due = true;
                    }
                    ServerMsg::Stats(s) => report.rtt_ms = Some(f64::from(s.rtt_us) / 1000.0),
                    ServerMsg::Error(e) => {
                        report.errors.push(format!("{}: {}", e.code, e.message));
                        if e.fatal { break; }
                    }
                    _ => {}
                }
            }
            dg = conn.receive_datagram() => {
                let Ok(dg) = dg else { report.errors.push("connection lost".into()); break; };
                report.datagrams_received += 1;
                let bytes = dg.payload();
                let Ok((h, off)) = MediaHeader::read(&bytes) else { continue; };
                let Some(p) = pairing.as_mut().filter(|p| p.match_id == h.match_id) else { continue; };
                if !p.first_media_seen {
                    p.first_media_seen = true;
                    if let Some(t) = p.since_unpaired {
                        let _ = rematch.record(t.elapsed().as_micros().max(1) as u64);
                    }
                }
                let Some(frame): Option<Frame> = p.reassembler.push(&h, &bytes[off..]) else {
                    if p.reassembler.take_keyframe_request() {
                        let _ = client.send(&ClientMsg::RequestKeyframe { match_id: p.match_id }).await;
                    }
                    continue;
                };
                if !p.crypto.open_frame(&frame, &mut opened) {
                    report.frames_unopened += 1;
                    continue;
                }
                let tag = if frame.track == Track::Video { 1 } else { 0 };
                if opts.synthetic_media && !synth::verify(tag, frame.frame, &opened, &mut scratch) {
                    report.frames_corrupt += 1;
                }
                match frame.track {
                    Track::Video => report.video_frames_received += 1,
                    Track::Audio => report.audio_frames_received += 1,
                    Track::VideoParity => {}
                }
                let _ = latency.record(now_us().saturating_sub(frame.capture_us).max(1));
                if p.reassembler.take_keyframe_request() {
                    let _ = client.send(&ClientMsg::RequestKeyframe { match_id: p.match_id }).await;
                }
            }
            _ = video.tick(), if sending && opts.synthetic_media => {
                let Some(p) = &mut pairing else { continue };
                let max_payload = MediaHeader::max_payload(conn.max_datagram_size().unwrap_or(1200));
                if last_keyframe.elapsed() >= opts.keyframe_every { keyframe_due = true; }
                let key = std::mem::take(&mut keyframe_due);
                if key { last_keyframe = Instant::now(); }
                let len = if key { frame_bytes * 2 } else { frame_bytes }.max(1);
                synth::fill(1, vframe, &mut vbuf, len);
                report.datagrams_sent += send_frame(&client, &mut p.crypto, &mut sealed, Track::Video, &mut vseq, vframe, key, &vbuf, max_payload, &mut dgbuf);
                report.video_frames_sent += 1;
                vframe += 1;
            }
            _ = audio.tick(), if sending && opts.synthetic_media => {
                let Some(p) = &mut pairing else { continue };
                synth::fill(0, aframe, &mut abuf, opts.audio_bytes.max(1));
                report.datagrams_sent += send_frame(&client, &mut p.crypto, &mut sealed, Track::Audio, &mut aseq, aframe, true, &abuf, usize::MAX, &mut dgbuf);
                report.audio_frames_sent += 1;
                aframe += 1;
            }
            _ = chat.tick(), if sending && opts.chat_every.is_some() => {
                let Some(p) = &mut pairing else { continue };
                chat_n += 1;
                let Ok(line) = p.crypto.seal_line(&format!("line {chat_n} from {} ✓", opts.name)) else { continue };
                if client.send_chat_frame(p.match_id, &line).await.is_ok() {
                    report.chat_sent += 1;
                }
            }
            _ = migrate.tick(), if sending && opts.migrate_every.is_some() => {
                match client.migrate().await {
                    Ok(_) => report.migrations += 1,
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            _ = next.tick(), if sending && opts.next_every.is_some() => {
                let match_id = pairing.as_ref().map(|p| p.match_id);
                if client.send(&ClientMsg::Next { match_id }).await.is_ok() {
                    report.nexts += 1;
                    pairing = None;
                    unpaired_at = Some(Instant::now());
                }
            }
        }
        read_chat(&mut client, pairing.as_mut(), &mut report);
    }
    read_chat(&mut client, pairing.as_mut(), &mut report);
    for p in pairing.iter() {
        report.frames_lost += p.reassembler.stats.frames_lost;
    }
    report.frames_sent = report.video_frames_sent + report.audio_frames_sent;
    report.frames_received = report.video_frames_received + report.audio_frames_received;
    report.latency_ms = Percentiles::from_us(&latency);
    report.next_to_media_ms = Percentiles::from_us(&rematch);
    client.close().await;
    Ok(report)
}
