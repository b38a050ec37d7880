//! End-to-end tests: one binary, the real server on a free port, GraphQL over HTTP and WebSocket.

// A failed unwrap in a test is a test failure with a backtrace, which is what we want here.
#![allow(clippy::unwrap_used)]

mod helpers;

mod approvals;
mod at_rest;
mod audits;
mod auth;
mod backup;
mod exports;
mod governance;
mod graph;
mod graphiql;
mod graphql_http;
mod halts;
mod jobs;
mod limits;
mod operations;
mod persistence;
mod roles;
mod schema;
mod shadow;
mod simulations;
mod step_metrics;
mod subscriptions;
mod verifying;
mod webhooks;
mod websocket_hygiene;
