//! The API over real HTTP against the real application, on SQLite and on PostgreSQL when
//! `TEST_DATABASE_URL` is set.

mod helpers;

mod auth;
mod binary;
mod catalog;
mod health;
mod isolation;
mod limits;
mod merge_patch;
mod rest_account_settings;
mod rest_common;
mod rest_me_settings;
mod rest_preferences;
mod rest_settings_user;
mod rest_user_settings;
mod schema;
mod settings;
mod subscriptions;
mod versions;
