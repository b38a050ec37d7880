//! Logging: human-readable by default, one JSON object per line with `--log-format json`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Install the global subscriber. `RUST_LOG` wins over the configured level when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests start several servers in one process) is not an error.
    // Logs go to stderr; stdout is for what a command prints for the user (keys, the schema).
    let ansi = std::io::stderr().is_terminal();
    let _ = match format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
