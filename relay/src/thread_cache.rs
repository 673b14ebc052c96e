//! Running the relay without glibc's per-thread malloc cache (tcache).
//!
//! Each thread keeps up to seven freed blocks of every small size for itself, out of reach of
//! `malloc_trim` (see `memory.rs`). On a relay those blocks sit on the runtime's worker
//! threads, scattered over pages that hold nothing else, and they keep a crowd's pages
//! resident long after it left: in `duet-bench soak`, the idle relay's anonymous memory was
//! 2.7–2.8 MiB with the cache and 1.35 MiB without, and with the cache it grew by 0.35 MiB
//! (about 3 % of RSS) over three minutes of churn with nothing live added (the live heap flat).
//! `duet-bench forward` showed no cost per datagram that stood out of its run-to-run noise.
//!
//! glibc reads its tunables once, when the program starts, from `GLIBC_TUNABLES`; there is no
//! call to change them later. So the relay binary re-executes itself, at once and under the
//! same process id, with `glibc.malloc.tcache_count=0` added, unless the environment already
//! names a `tcache_count` (an operator's own choice wins, and the second start sees its own
//! setting and goes on). [`tunables_without_thread_cache`] is the decision, pure and tested.

/// The tunable that turns the cache off.
const TCACHE_OFF: &str = "glibc.malloc.tcache_count=0";

/// The environment variable glibc reads its tunables from.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// The `GLIBC_TUNABLES` value to start again with, given the current one; `None` when the
/// current one already says how many blocks the cache keeps (set by us or by the operator).
/// Tunables are `name=value` pairs separated by colons.
pub fn tunables_without_thread_cache(current: Option<&str>) -> Option<String> {
    match current.map(str::trim).filter(|c| !c.is_empty()) {
        None => Some(TCACHE_OFF.to_string()),
        Some(c)
            if c.split(':')
                .any(|t| t.trim().starts_with("glibc.malloc.tcache_count=")) =>
        {
            None
        }
        Some(c) => Some(format!("{c}:{TCACHE_OFF}")),
    }
}

/// Re-executes this binary with the cache off, if glibc is the allocator and the environment
/// does not say otherwise. Returns only if it did not re-execute: there was nothing to do, or
/// `exec` failed (then the relay runs with the cache, and says why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_without_thread_cache() {
    use std::os::unix::process::CommandExt;
    let current = std::env::var(TUNABLES_VAR).ok();
    let Some(tunables) = tunables_without_thread_cache(current.as_deref()) else {
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
    eprintln!(
        "duet-relay: could not restart without the malloc thread cache ({err}); running with it"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_without_thread_cache() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_turned_off_beside_other_tunables() {
        assert_eq!(
            tunables_without_thread_cache(None).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_thread_cache(Some("  ")).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_thread_cache(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
    }

    #[test]
    fn a_count_already_set_is_kept_so_the_restart_happens_once() {
        let ours = tunables_without_thread_cache(None).unwrap();
        assert_eq!(tunables_without_thread_cache(Some(&ours)), None);
        assert_eq!(
            tunables_without_thread_cache(Some(
                "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=7"
            )),
            None,
            "the operator's own count wins"
        );
        assert!(
            tunables_without_thread_cache(Some("glibc.malloc.tcache_max=64")).is_some(),
            "another tcache tunable is not the count"
        );
    }
}
