//! settings-api: per-user settings served over GraphQL and legacy REST routes.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod entity;
pub mod error;
pub mod graphql;
pub mod json_text;
pub mod rest;
pub mod settings;
pub mod telemetry;
pub mod timestamp;

pub use app::Application;
pub use config::Config;
