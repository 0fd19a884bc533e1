/// mimalloc rather than glibc's malloc: under sustained load glibc kept an
/// arena per SQLite connection thread and the gateway's memory crept up
/// (`docs/performance.md`, soak benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    referral_gateway::cli::run()
}
