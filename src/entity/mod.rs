//! sea-orm entities. Only the `settings` module builds queries with them.

pub mod org_default;
pub mod setting;
pub mod setting_change;
pub mod user;
