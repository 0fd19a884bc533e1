//! Logging. Log lines carry route templates, status codes, error codes and
//! ids: never a request body, a query string or a case value.

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to stderr. Call once, from `main`.
pub fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true);
    let result = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if result.is_err() {
        eprintln!("logging was already initialised");
    }
}
