//! The one queue of writes that share statements on PostgreSQL (`batch.rs`): each write is
//! one user's rows of a statement's JSON input, and the statement returns rows naming their
//! user. One queue for every such statement, so that no user is in two write statements in
//! flight at once, whichever statement: a user's row in `users` (the feed position) and the
//! byte-quota sum over the user's scope are then read and written by one write only, and
//! statements in flight never wait for one another's rows.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    Setting, Store,
    batch::{Grouped, Limits, Queue},
    read::{ByUser, column, pg_row, pg_setting_of},
};

/// The statements writes share. Each takes a JSON array of the writes' rows, at most one write
/// per user (one statement also an array of the writes themselves, before it), and returns
/// rows with a `user_id` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shared {
    /// One stored setting replaced (`replace_one.rs`).
    Replace,
    /// Stored settings updated if still as read (`checked_update.rs`): the writes, then the
    /// keys written.
    Update,
}

impl Shared {
    fn sql(self) -> &'static str {
        match self {
            Shared::Replace => super::replace_one::REPLACE_MANY_SQL,
            Shared::Update => super::checked_update::UPDATE_MANY_SQL,
        }
    }
}

/// The last query of every shared write statement's `WITH`: notifies the other instances
/// (`listen.rs`) of the commits in the statement's query `notices` (one JSON array `[user,
/// scope, position]` per user, as text), so that the notice commits with the write. Each
/// notification carries the notices of about 4,000 bytes, plus at most one: a notice takes
/// at most about 2,100 (names of at most 255 characters), and PostgreSQL at most 8,000 in one
/// notification. The statement's last query must read `notified`, since PostgreSQL runs no
/// `WITH` query that is not read: `WHERE (SELECT count(*) FROM notified) >= 0`.
macro_rules! notified_sql {
    () => {
        r#"
), notified AS (
    SELECT pg_notify('settings_feed', '[' || string_agg(n.notice, ',') || ']')
    FROM (SELECT notice, sum(octet_length(notice) + 1) OVER (ORDER BY notice) / 4000 AS part
          FROM notices) AS n
    GROUP BY n.part
)"#
    };
}
pub(super) use notified_sql;

/// A setting as a shared write statement returns it: after its `user_id` (column 0), its `key`,
/// `scope`, `version`, `created_at`, `updated_at` and `expires_at` (columns 1 to 6), then its
/// feed `position` (column 7). Read by position: a lookup by name hashes the name. The rows of
/// one result share their columns' types, which `checked` checks: a caller checks the first
/// row it reads of a result, as the shared read does. The statement does not return the
/// value: it is the one the write sent for the key, which `sent` gives.
pub(super) fn saved_setting(
    user_id: &str,
    row: &QueryResult,
    checked: bool,
    sent: impl FnOnce(&str) -> Option<Value>,
) -> Result<(Setting, i64), DbErr> {
    let row = pg_row(row)?;
    let key: String = column(row, 1, checked)?;
    let scope = column(row, 2, checked)?;
    let value = sent(&key).ok_or_else(|| {
        DbErr::Custom(format!(
            "a shared write returned the key `{key}`, which it was not sent"
        ))
    })?;
    let setting = pg_setting_of(
        row,
        (user_id.to_owned(), scope, key),
        value,
        [3, 4, 5, 6],
        checked,
    )?;
    Ok((setting, column(row, 7, checked)?))
}

/// Most writes in one statement, and most such statements in flight at once. One at a time:
/// with two in flight, PostgreSQL spent a sixth more per patch and a third more per
/// replacement (they compete for the same index pages and the WAL), and the writes waiting
/// were split into uneven statements, which widened the tail of their latency
/// (bench/README.md). The one statement carries as many writes as two did, for a database
/// across a network, where each statement costs a round trip.
const WRITE_LIMITS: Limits = Limits {
    per_statement: 64,
    in_flight: 1,
};

/// One write in the queue: its statement, its user, its input as JSON text (its value in the
/// array of the writes, for a statement that takes one, and its rows: JSON values separated
/// by commas), and where the statement's rows for the user go.
pub(super) struct GroupedWrite {
    statement: Shared,
    user_id: String,
    write: Option<String>,
    rows: String,
    reply: oneshot::Sender<Result<Vec<QueryResult>, DbErr>>,
}

impl Grouped for GroupedWrite {
    fn exclusive_user(&self) -> Option<&str> {
        Some(&self.user_id)
    }

    fn joins(&self, first: &Self) -> bool {
        self.statement == first.statement
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The queue of shared write statements on `db`.
pub(super) fn write_queue(db: DatabaseConnection) -> Queue<GroupedWrite> {
    Queue::start(WRITE_LIMITS, move |batch| {
        let db = db.clone();
        async move { run(&db, batch).await }
    })
}

impl Store {
    /// Sends `user_id`'s `rows` (JSON values separated by commas), and the value of the
    /// write itself where `statement` takes one, with the other writes of `statement` that
    /// are waiting, and returns the statement's rows for the user (none when it wrote nothing
    /// for them).
    pub(super) async fn shared_write(
        &self,
        statement: Shared,
        user_id: &str,
        write: Option<String>,
        rows: String,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let job = |reply| GroupedWrite {
            statement,
            user_id: user_id.to_owned(),
            write,
            rows,
            reply,
        };
        self.write_queue().ask(job).await
    }
}

/// Sends `batch` as one statement and answers each write. When the database refuses the
/// statement, sends the writes again one by one; when it cannot be reached, each gets that
/// error.
async fn run(db: &DatabaseConnection, batch: Vec<GroupedWrite>) {
    match execute(db, &batch).await {
        Ok(rows) => {
            // Every row names its user first (`saved_setting`).
            let mut by_user: ByUser<Vec<QueryResult>> = ByUser::default();
            for (at, row) in rows.into_iter().enumerate() {
                let Ok(user) = pg_row(&row).and_then(|pg| column::<&str, _>(pg, 0, at == 0)) else {
                    continue;
                };
                match by_user.get_mut(user) {
                    Some(rows) => rows.push(row),
                    None => {
                        let user = user.to_owned();
                        by_user.insert(user, vec![row]);
                    }
                }
            }
            for job in batch {
                let rows = by_user.remove(&job.user_id).unwrap_or_default();
                let _ = job.reply.send(Ok(rows));
            }
        }
        // The database cannot be reached: no write would fare better alone.
        Err(err) if batch.len() == 1 || crate::error::is_unavailable(&err) => {
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
        Err(_) => {
            for job in batch {
                let answer = execute(db, std::slice::from_ref(&job)).await;
                let _ = job.reply.send(answer);
            }
        }
    }
}

/// Sends the writes of `batch`, which share their statement, as one statement.
async fn execute(
    db: &DatabaseConnection,
    batch: &[GroupedWrite],
) -> Result<Vec<QueryResult>, DbErr> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let mut values = Vec::with_capacity(2);
    if first.write.is_some() {
        values.push(json_array(batch.iter().filter_map(|job| job.write.as_deref())).into());
    }
    values.push(json_array(batch.iter().map(|job| job.rows.as_str())).into());
    let statement =
        Statement::from_sql_and_values(DbBackend::Postgres, first.statement.sql(), values);
    db.query_all_raw(statement).await
}

/// The JSON array of `parts`, each one or more values separated by commas.
fn json_array<'a>(parts: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut array =
        String::with_capacity(2 + parts.clone().map(|part| part.len() + 1).sum::<usize>());
    array.push('[');
    for (at, part) in parts.enumerate() {
        if at > 0 {
            array.push(',');
        }
        array.push_str(part);
    }
    array.push(']');
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_that_wait_go_one_statement_at_a_time_of_at_most_64() {
        let (sizes, most_in_flight) = super::super::batch::statement_sizes(WRITE_LIMITS, 130).await;
        assert_eq!(sizes, [1, 64, 64, 2]);
        assert_eq!(most_in_flight, 1);
    }
}
