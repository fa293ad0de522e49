//! sea-orm entities. Only `settings::store` builds queries with them.

pub mod setting;
pub mod user;
