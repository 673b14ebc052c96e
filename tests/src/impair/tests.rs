//! The shaper through real UDP sockets on 127.0.0.1: an echo server stands in for the relay
//! and a plain socket for the client. Every wait is bounded by [`PATIENCE`] and waits for an
//! event; where a test needs "nothing arrived", it first waits for the shaper's counters to
//! show the packet was dropped, then checks nothing is there.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::*;

/// How long any single wait may take before the test fails. Generous, because the build
/// machine has two cores and other builds run beside the tests.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    timeout(PATIENCE, future)
        .await
        .with_context(|| format!("timed out waiting for {what}"))
}

/// Polls `check` until it holds (readiness polling, bounded by [`PATIENCE`]).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// A UDP echo server that also reports who sent each datagram.
struct Echo {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    _task: tokio::task::JoinHandle<()>,
}

async fn echo() -> anyhow::Result<Echo> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let (tx, seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let datagram = buf[..len].to_vec();
            let _ = socket.send_to(&datagram, peer).await;
            if tx.send((peer, datagram)).is_err() {
                return;
            }
        }
    });
    Ok(Echo {
        addr,
        seen,
        _task: task,
    })
}

async fn start(upstream: SocketAddr, profile: Profile) -> anyhow::Result<ShaperHandle> {
    let config = ShaperConfig::new("127.0.0.1:0".parse()?, upstream, profile).with_seed(1);
    Ok(Shaper::start(config).await?)
}

async fn client(shaper: &ShaperHandle) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(shaper.local_addr()).await?;
    Ok(socket)
}

/// Sends `payload` and waits for it to come back; returns the round-trip time.
async fn round_trip(socket: &UdpSocket, payload: &[u8]) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    socket.send(payload).await?;
    let mut buf = [0u8; 2048];
    let len = within("the echo", socket.recv(&mut buf)).await??;
    if &buf[..len] != payload {
        bail!("the echo carried {:?}, not {:?}", &buf[..len], payload);
    }
    Ok(sent.elapsed())
}

#[tokio::test]
async fn packets_arrive_with_the_configured_delay() -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(
        echo.addr,
        Profile::lan().with_delay(Duration::from_millis(30)),
    )
    .await?;
    let socket = client(&shaper).await?;
    for i in 0..5u8 {
        let rtt = round_trip(&socket, &[i; 100]).await?;
        // 30 ms each way; the upper bound only guards against a wildly wrong delay.
        assert!(
            rtt >= Duration::from_millis(60),
            "round trip {rtt:?} is shorter than 2 × 30 ms"
        );
        assert!(rtt < Duration::from_millis(600), "round trip {rtt:?}");
    }
    let stats = shaper.stats();
    assert_eq!(
        (
            stats.up.forwarded_packets,
            stats.down.forwarded_packets,
            stats.flows
        ),
        (5, 5, 1)
    );
    assert_eq!(
        within("the echo log", echo.seen.recv())
            .await?
            .map(|(_, d)| d),
        Some(vec![0; 100])
    );
    Ok(())
}

#[tokio::test]
async fn rebind_changes_the_source_port_the_upstream_sees_and_traffic_continues(
) -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    round_trip(&socket, b"before").await?;
    let (before, _) = within("the first datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;

    assert_eq!(shaper.rebind()?, 1, "one flow moves");
    round_trip(&socket, b"after").await?;
    let (after, _) = within("the second datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_eq!(after.ip(), before.ip());
    assert_ne!(
        after.port(),
        before.port(),
        "the upstream sees a new source port"
    );
    assert_eq!(shaper.stats().rebinds, 1);
    Ok(())
}

#[tokio::test]
async fn blackout_stops_traffic_and_it_resumes_after() -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    round_trip(&socket, b"warm-up").await?;
    within("the warm-up", echo.seen.recv()).await?;

    shaper.blackout(true);
    for _ in 0..3 {
        socket.send(b"into the void").await?;
    }
    eventually("three blackout drops", || {
        shaper.stats().up.dropped.blackout == 3
    })
    .await?;
    assert!(
        echo.seen.try_recv().is_err(),
        "nothing reached the upstream"
    );
    let mut buf = [0u8; 64];
    assert!(socket.try_recv(&mut buf).is_err(), "nothing came back");

    shaper.blackout(false);
    round_trip(&socket, b"back").await?;
    Ok(())
}

#[tokio::test]
async fn blackout_for_ends_by_itself() -> anyhow::Result<()> {
    let echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    let began = Instant::now();
    shaper.blackout_for(Duration::from_millis(200));
    // Keep asking until an answer comes: the first ones fall into the blackout.
    let answered = within("traffic to resume", async {
        loop {
            if let Ok(Ok(_)) =
                timeout(Duration::from_millis(50), round_trip(&socket, b"anyone?")).await
            {
                return began.elapsed();
            }
        }
    })
    .await?;
    assert!(
        answered >= Duration::from_millis(200),
        "answered after {answered:?}, inside the blackout"
    );
    assert!(shaper.stats().up.dropped.blackout >= 1);
    Ok(())
}

#[tokio::test]
async fn handover_blacks_out_rebinds_and_switches_the_profile() -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    round_trip(&socket, b"on wifi").await?;
    let (before, _) = within("the first datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;

    let slower = Profile::lan().with_delay(Duration::from_millis(20));
    within("the handover", shaper.handover_to(slower.clone())).await??;
    let stats = shaper.stats();
    assert_eq!((stats.handovers, stats.rebinds), (1, 1));
    assert_eq!(shaper.profile(Direction::Up), slower);
    assert_eq!(shaper.profile(Direction::Down), slower);

    let rtt = round_trip(&socket, b"on cellular").await?;
    assert!(
        rtt >= Duration::from_millis(40),
        "the new profile applies: {rtt:?}"
    );
    let (after, _) = within("the second datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_ne!(after.port(), before.port());
    Ok(())
}

#[tokio::test]
async fn an_address_change_moves_every_flow_to_the_next_loopback_address() -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    round_trip(&socket, b"home").await?;
    let (home, _) = within("the first datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_eq!(home.ip().to_string(), "127.0.0.1");

    within(
        "the handover",
        shaper.handover_with(Profile::lan(), AddressChange::Ip),
    )
    .await??;
    round_trip(&socket, b"away").await?;
    let (away, _) = within("the second datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_eq!(
        away.ip().to_string(),
        "127.0.0.2",
        "the upstream sees a new address"
    );
    let stats = shaper.stats();
    assert_eq!(
        (stats.handovers, stats.rebinds, stats.address_changes),
        (1, 1, 1)
    );
    assert_eq!(stats.source_ip, Some(away.ip()));

    // A port-only rebinding keeps the new address.
    shaper.rebind()?;
    round_trip(&socket, b"rebound").await?;
    let (rebound, _) = within("the third datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_eq!(rebound.ip(), away.ip());
    assert_ne!(rebound.port(), away.port());
    Ok(())
}

#[tokio::test]
async fn an_address_change_without_a_loopback_upstream_is_refused() -> anyhow::Result<()> {
    let upstream: SocketAddr = "[::1]:9".parse()?;
    let shaper = Shaper::start(ShaperConfig::new(
        "[::1]:0".parse()?,
        upstream,
        Profile::lan(),
    ))
    .await;
    // A machine without IPv6 loopback cannot run this case; nothing else depends on it.
    let Ok(shaper) = shaper else { return Ok(()) };
    let refused = shaper.change_address();
    assert!(
        matches!(refused, Err(ShaperError::NoOtherAddress { .. })),
        "{:?}",
        refused.err()
    );
    Ok(())
}

#[tokio::test]
async fn a_repeating_timeline_runs_its_steps() -> anyhow::Result<()> {
    let echo = echo().await?;
    let timeline = Timeline::none()
        .at(Duration::from_millis(20), Step::Rebind)
        .repeating(Duration::from_millis(20));
    let shaper = start(echo.addr, Profile::lan().with_timeline(timeline)).await?;
    // The same timeline on both directions runs once, so rebinds count one per period.
    eventually("three scripted rebinds", || shaper.stats().rebinds >= 3).await?;
    Ok(())
}

#[tokio::test]
async fn each_client_gets_its_own_flow_and_its_own_replies() -> anyhow::Result<()> {
    let mut echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let (a, b) = (client(&shaper).await?, client(&shaper).await?);
    round_trip(&a, b"from a").await?;
    round_trip(&b, b"from b").await?;
    let first = within("a's datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    let second = within("b's datagram", echo.seen.recv())
        .await?
        .context("echo stopped")?;
    assert_ne!(first.0, second.0, "two clients, two source ports upstream");
    assert_eq!(shaper.stats().flows, 2);
    Ok(())
}

#[tokio::test]
async fn the_same_seed_drops_the_same_packets_through_sockets() -> anyhow::Result<()> {
    async fn survivors(seed: u64) -> anyhow::Result<Vec<u8>> {
        let mut echo = echo().await?;
        let profile = Profile::lan().with_loss(0.3);
        let config = ShaperConfig::new("127.0.0.1:0".parse()?, echo.addr, profile).with_seed(seed);
        let shaper = Shaper::start(config).await?;
        let socket = client(&shaper).await?;
        for i in 0..200u8 {
            socket.send(&[i]).await?;
        }
        eventually("every packet decided", || {
            let up = shaper.stats().up;
            up.received_packets == 200 && up.forwarded_packets + up.dropped.total() == 200
        })
        .await?;
        let forwarded = shaper.stats().up.forwarded_packets;
        let mut arrived = Vec::new();
        while (arrived.len() as u64) < forwarded {
            let (_, datagram) = within("a forwarded packet", echo.seen.recv())
                .await?
                .context("echo stopped")?;
            arrived.extend(datagram);
        }
        Ok(arrived)
    }
    let first = survivors(5).await?;
    assert!(
        (100..180).contains(&first.len()),
        "about 70% of 200 arrive: {}",
        first.len()
    );
    assert_eq!(first, survivors(5).await?);
    assert_ne!(first, survivors(6).await?);
    Ok(())
}

#[tokio::test]
async fn stopping_the_shaper_releases_its_port() -> anyhow::Result<()> {
    let echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let addr = shaper.local_addr();
    shaper.shutdown().await;
    UdpSocket::bind(addr)
        .await
        .context("the port is free after shutdown")?;

    let shaper = start(echo.addr, Profile::lan()).await?;
    let addr = shaper.local_addr();
    drop(shaper);
    within("the port to be released after drop", async {
        while UdpSocket::bind(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_profile_set_at_runtime_applies_to_new_packets() -> anyhow::Result<()> {
    let echo = echo().await?;
    let shaper = start(echo.addr, Profile::lan()).await?;
    let socket = client(&shaper).await?;
    round_trip(&socket, b"fast").await?;
    shaper.set_profile(
        Direction::Down,
        Profile::lan().with_delay(Duration::from_millis(50)),
    );
    let rtt = round_trip(&socket, b"slow").await?;
    assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
    assert_eq!(shaper.profile(Direction::Up), Profile::lan());
    Ok(())
}

#[tokio::test]
async fn the_cli_prints_its_address_and_periodic_stats() -> anyhow::Result<()> {
    /// Hands each written line to the test.
    struct Lines(mpsc::UnboundedSender<String>, Vec<u8>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(buf);
            while let Some(end) = self.1.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.1.drain(..=end).collect();
                let _ = self
                    .0
                    .send(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let echo = echo().await?;
    let upstream = echo.addr.to_string();
    let args = <cli::ImpairArgs as clap::Parser>::try_parse_from([
        "duet-impair",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--profile",
        "wifi",
        "--stats-every",
        "0.05",
    ])?;
    let (tx, mut lines) = mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        cli::run(&args, Lines(tx, Vec::new()), async {
            let _ = stopped.await;
        })
        .await
    });

    let first = within("the listening line", lines.recv())
        .await?
        .context("no output")?;
    let listen: SocketAddr = first
        .strip_prefix("listening ")
        .and_then(|rest| rest.split(' ').next())
        .with_context(|| format!("unexpected first line {first:?}"))?
        .parse()?;
    assert!(
        first.contains(&format!("upstream {upstream} profile wifi seed 0")),
        "{first}"
    );

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(listen).await?;
    // Wi-Fi loses 0.5% of packets; retry rather than depend on the seed.
    within("an echo through the cli's shaper", async {
        loop {
            if let Ok(Ok(_)) = timeout(Duration::from_millis(200), round_trip(&socket, b"hi")).await
            {
                return;
            }
        }
    })
    .await?;
    within("a stats line showing the traffic", async {
        while let Some(line) = lines.recv().await {
            let Some(json) = line.strip_prefix("stats ") else {
                continue;
            };
            let stats: serde_json::Value = serde_json::from_str(json)?;
            if stats["up"]["forwarded_packets"].as_u64() >= Some(1) {
                return Ok(());
            }
        }
        bail!("the output ended")
    })
    .await??;

    let _ = stop.send(());
    within("the cli to stop", run).await???;
    Ok(())
}

/// The two halves hold one shaper through an `Arc`, as a test harness sharing it would.
#[tokio::test]
async fn the_handle_can_be_shared_across_tasks() -> anyhow::Result<()> {
    let echo = echo().await?;
    let shaper = Arc::new(start(echo.addr, Profile::lan()).await?);
    let other = shaper.clone();
    within(
        "a rebind from another task",
        tokio::spawn(async move { other.rebind() }),
    )
    .await???;
    assert_eq!(shaper.stats().rebinds, 1);
    Ok(())
}
