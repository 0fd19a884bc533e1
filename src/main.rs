fn main() -> std::process::ExitCode {
    referral_gateway::cli::run()
}
