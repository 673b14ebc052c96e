//! Running the relay with glibc's allocator set for a long-lived server: no per-thread cache
//! (tcache) and one arena.
//!
//! `memory.rs` hands freed pages back with `malloc_trim`, but two things glibc does for speed
//! kept a crowd's pages resident long after it left, and showed in `duet-bench soak` as
//! growth with nothing live added (the live heap flat):
//! - **The per-thread cache.** Each thread keeps up to seven freed blocks of every small size
//!   for itself, out of `malloc_trim`'s reach. On the runtime's worker threads they sit on
//!   pages that hold nothing else. Turning it off took the idle relay's anonymous memory from
//!   2.7–2.8 MiB to 1.2–1.35 MiB, and a 10-minute soak's RSS growth from about 3 % to
//!   1.1–1.5 %.
//! - **An arena per thread.** `malloc_trim` shrinks only the main arena's top; a thread
//!   arena's top stays where the busiest moment left it, and its blocks drift upward as they
//!   are freed and allocated again. The rest of the growth was there. With one arena the same
//!   soak grew by 0.00 % (the live heap to the byte), and the busy peak was lower.
//!
//! `duet-bench forward` showed no cost per forwarded datagram that stood out of its
//! run-to-run noise with either (the relay's worker threads are few, so one arena's lock is
//! rarely contended).
//!
//! glibc reads its tunables once, when the program starts, from `GLIBC_TUNABLES`; there is no
//! call to change them later. So the relay binary re-executes itself, at once and under the
//! same process id, with the missing ones added. One the environment already names is left
//! as it is (an operator's own choice wins), and the second start finds both named and goes
//! on. [`tunables_to_add`] is that decision, pure and tested.

/// The tunables, by name, and the value the relay wants.
const WANTED: [(&str, &str); 2] = [
    ("glibc.malloc.tcache_count", "0"),
    ("glibc.malloc.arena_max", "1"),
];

/// The environment variable glibc reads its tunables from.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// The `GLIBC_TUNABLES` value to start again with, given the current one; `None` when the
/// current one already names every tunable the relay sets (by us or by the operator).
/// Tunables are `name=value` pairs separated by colons.
pub fn tunables_to_add(current: Option<&str>) -> Option<String> {
    let current = current.map(str::trim).unwrap_or("");
    let named = |name: &str| {
        current
            .split(':')
            .any(|t| t.trim().split_once('=').is_some_and(|(n, _)| n == name))
    };
    let missing: Vec<String> = WANTED
        .iter()
        .filter(|(name, _)| !named(name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<&str> = current
        .split(':')
        .filter(|t| !t.trim().is_empty())
        .collect();
    all.extend(missing.iter().map(String::as_str));
    Some(all.join(":"))
}

/// Re-executes this binary with the tunables added, if glibc is the allocator and the
/// environment does not name them already. Returns only if it did not re-execute: there was
/// nothing to do, or `exec` failed (then the relay runs with glibc's defaults, and says why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_with_malloc_tunables() {
    use std::os::unix::process::CommandExt;
    let current = std::env::var(TUNABLES_VAR).ok();
    let Some(tunables) = tunables_to_add(current.as_deref()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(TUNABLES_VAR, tunables)
        .exec();
    // Logging is not set up yet; this is the one line before it.
    eprintln!("duet-relay: could not restart with {TUNABLES_VAR} set ({err}); running with glibc's defaults");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_with_malloc_tunables() {}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &str = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1";

    #[test]
    fn both_are_added_beside_other_tunables() {
        assert_eq!(tunables_to_add(None).as_deref(), Some(BOTH));
        assert_eq!(tunables_to_add(Some("  ")).as_deref(), Some(BOTH));
        assert_eq!(
            tunables_to_add(Some("glibc.malloc.trim_threshold=65536")).as_deref(),
            Some("glibc.malloc.trim_threshold=65536:glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1")
        );
    }

    #[test]
    fn one_already_named_is_kept_so_the_restart_happens_once() {
        assert_eq!(
            tunables_to_add(Some(BOTH)),
            None,
            "the second start goes on"
        );
        assert_eq!(
            tunables_to_add(Some("glibc.malloc.arena_max=4")).as_deref(),
            Some("glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0"),
            "the operator's own arena count wins"
        );
        assert_eq!(
            tunables_to_add(Some("glibc.malloc.tcache_count=7:glibc.malloc.arena_max=8")),
            None
        );
        assert_eq!(
            tunables_to_add(Some("glibc.malloc.tcache_max=64:glibc.malloc.arena_max=1")).as_deref(),
            Some("glibc.malloc.tcache_max=64:glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0"),
            "another tcache tunable is not the count"
        );
    }
}
