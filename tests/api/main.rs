//! The API over real HTTP against the real application, on SQLite and on PostgreSQL when
//! `TEST_DATABASE_URL` is set.

mod helpers;

mod auth;
mod binary;
mod catalog;
mod checked_update;
mod connections;
mod cors;
mod disconnects;
mod faults;
mod feed;
mod graphql_direct;
mod graphql_http;
mod group_commit;
mod health;
mod isolation;
mod lifecycle;
mod limits;
mod merge_patch;
mod metrics;
mod migrations;
mod openapi;
mod rate_limit;
mod rest_c000_per_key;
mod rest_c001_partial;
mod rest_c002_preferences;
mod rest_c003_typed;
mod rest_c004_sparse;
mod rest_common;
mod rest_seed_examples;
mod schema;
mod settings;
mod sqlite_readers;
mod sse;
mod subscriptions;
mod support;
mod versions;
mod websocket_protocol;
