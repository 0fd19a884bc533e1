/// jemalloc, not glibc's malloc: under sustained load glibc's per-thread
/// arenas (up to eight per core, one for each of SQLite's connection threads)
/// kept tens of MB of freed memory (`docs/performance.md`, the soak). The
/// unprefixed build replaces `malloc` for the whole process, so SQLite's
/// allocations, the ones that grew, are served by jemalloc too. Elsewhere
/// (musl, other systems), or built without the `jemalloc` feature, the
/// system's allocator stays.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    referral_gateway::cli::run()
}
