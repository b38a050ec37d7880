//! The HTTP/GraphQL adapter of the governance service and the `governance` binary's commands.
//! It authenticates, translates and calls `governance_core`; it holds no domain rule.

pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod media;
pub mod metrics;
pub mod offline_verify;
pub mod state;
pub mod telemetry;
pub mod ws;

pub use app::Application;
pub use config::Config;
