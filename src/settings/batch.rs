//! Group commit for the one-statement replace on PostgreSQL ([`super::replace_one`]): while
//! earlier replacements are in flight, the ones that arrive meanwhile wait and then go to the
//! database together, as one statement and one commit. A replacement that finds the queue
//! idle goes at once, alone, so a quiet service adds no latency.
//!
//! Each statement holds at most one replacement per user, and no user is in two statements
//! at once: a user's row in `users` (the feed position) and the byte-quota sum over the user's
//! scope are then read and written by one replacement only, and statements in flight never
//! wait for one another's rows. A replacement of a user already in flight waits for the next
//! statement. A statement the database refuses as a whole (for one value that a rule of its
//! own rejects) is retried one replacement at a time, so that each gets its own answer; when
//! the database cannot be reached, every replacement of the statement gets that error.

use std::collections::{HashSet, VecDeque};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use tokio::sync::{mpsc, oneshot};

/// Most replacements in one statement.
const MAX_BATCH: usize = 32;
/// Most statements in flight at once; replacements beyond them wait and go together.
const MAX_IN_FLIGHT: usize = 2;

/// One replacement: its user, its row of the statement's input as JSON text (the object
/// [`REPLACE_MANY_SQL`] describes), and where its result goes.
struct Job {
    user_id: String,
    row: String,
    reply: oneshot::Sender<Result<Option<QueryResult>, DbErr>>,
}

/// The sending end of the queue; the dispatching task ends when it is dropped.
pub(super) struct ReplaceQueue {
    jobs: mpsc::UnboundedSender<Job>,
}

impl ReplaceQueue {
    /// Starts the dispatching task on the current runtime.
    pub(super) fn start(db: DatabaseConnection) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(db, queue));
        ReplaceQueue { jobs }
    }

    /// Replaces `user_id`'s setting described by `row`: the statement's result row for it, or
    /// `None` when the statement wrote nothing for it (see [`REPLACE_MANY_SQL`]).
    pub(super) async fn replace(
        &self,
        user_id: &str,
        row: String,
    ) -> Result<Option<QueryResult>, DbErr> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            user_id: user_id.to_owned(),
            row,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| DbErr::Custom("the write queue has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbErr::Custom("the write queue dropped a write".into()))?
    }
}

/// Runs until every sender is gone and every statement has finished: takes the replacements
/// that arrived, and sends as many together as the rules above allow whenever fewer than
/// [`MAX_IN_FLIGHT`] statements are in flight.
async fn dispatch(db: DatabaseConnection, mut queue: mpsc::UnboundedReceiver<Job>) {
    let (finished, mut done) = mpsc::unbounded_channel::<Vec<String>>();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut in_flight = 0;
    let mut open = true;
    loop {
        while let Ok(users) = done.try_recv() {
            in_flight -= 1;
            release(&mut busy, users);
        }
        while open {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if in_flight < MAX_IN_FLIGHT {
            let batch = take_batch(&mut waiting, &mut busy);
            if !batch.is_empty() {
                in_flight += 1;
                let finished = Finished {
                    users: batch.iter().map(|job| job.user_id.clone()).collect(),
                    done: finished.clone(),
                };
                let db = db.clone();
                tokio::spawn(async move {
                    run(&db, batch).await;
                    drop(finished);
                });
                continue;
            }
        }
        if !open && waiting.is_empty() && in_flight == 0 {
            return;
        }
        tokio::select! {
            job = queue.recv(), if open => match job {
                Some(job) => waiting.push_back(job),
                None => open = false,
            },
            Some(users) = done.recv() => {
                in_flight -= 1;
                release(&mut busy, users);
            }
        }
    }
}

fn release(busy: &mut HashSet<String>, users: Vec<String>) {
    for user in users {
        busy.remove(&user);
    }
}

/// Tells the dispatcher that a statement finished, even if its task panicked.
struct Finished {
    users: Vec<String>,
    done: mpsc::UnboundedSender<Vec<String>>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.done.send(std::mem::take(&mut self.users));
    }
}

/// The next statement's replacements, oldest first: at most [`MAX_BATCH`], one per user, none
/// of a user in `busy` (to which their users are added). A replacement whose caller stopped
/// waiting is dropped unsent. The others stay in `waiting`, in order.
fn take_batch(waiting: &mut VecDeque<Job>, busy: &mut HashSet<String>) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut kept = VecDeque::new();
    while batch.len() < MAX_BATCH
        && let Some(job) = waiting.pop_front()
    {
        if job.reply.is_closed() {
            continue;
        }
        if busy.contains(&job.user_id) {
            kept.push_back(job);
        } else {
            busy.insert(job.user_id.clone());
            batch.push(job);
        }
    }
    kept.append(waiting);
    *waiting = kept;
    batch
}

/// Sends `batch` as one statement and answers each replacement. When the database refuses the
/// statement, sends the replacements again one by one; when it cannot be reached, each gets
/// that error.
async fn run(db: &DatabaseConnection, batch: Vec<Job>) {
    match execute(db, &batch).await {
        Ok(rows) => {
            let mut rows: Vec<(Option<String>, QueryResult)> = rows
                .into_iter()
                .map(|row| (row.try_get("", "user_id").ok(), row))
                .collect();
            for job in batch {
                let row = rows
                    .iter()
                    .position(|(user, _)| user.as_deref() == Some(job.user_id.as_str()))
                    .map(|at| rows.swap_remove(at).1);
                let _ = job.reply.send(Ok(row));
            }
        }
        // The database cannot be reached: no replacement would fare better alone.
        Err(err) if batch.len() == 1 || crate::error::is_unavailable(&err) => {
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
        Err(_) => {
            for job in batch {
                let answer = execute(db, std::slice::from_ref(&job))
                    .await
                    .map(|mut rows| rows.pop());
                let _ = job.reply.send(answer);
            }
        }
    }
}

async fn execute(db: &DatabaseConnection, batch: &[Job]) -> Result<Vec<QueryResult>, DbErr> {
    let mut rows =
        String::with_capacity(2 + batch.iter().map(|job| job.row.len() + 1).sum::<usize>());
    rows.push('[');
    for (at, job) in batch.iter().enumerate() {
        if at > 0 {
            rows.push(',');
        }
        rows.push_str(&job.row);
    }
    rows.push(']');
    let statement =
        Statement::from_sql_and_values(DbBackend::Postgres, REPLACE_MANY_SQL, [rows.into()]);
    db.query_all_raw(statement).await
}

/// The statement: replaces each setting the input describes, one version up, and appends its
/// history row, as [`super::replace_one`] explains. The one parameter is a JSON array of
/// objects, at most one per user, with `user_id`, `scope`, `key`, `value` (alone in an array,
/// so that a JSON `null` stays a value), `now`, `actor`, `interface`, `correlation_id`, the
/// history `kind`, the scope's byte `quota` (null for none), `expires_at` (null: never) and
/// `lockable` (a catalog key, which the organisation may lock). A row is returned, with its
/// `user_id`, for each setting replaced; none for a key without a row, an expired value, a row
/// changed meanwhile, a locked key or a value that would take the scope past its byte quota.
/// The rows are locked in the order of their users.
pub(super) const REPLACE_MANY_SQL: &str = r#"
WITH input AS (
    SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS i(
        user_id text, scope text, key text, value jsonb, now timestamptz, actor text,
        interface text, correlation_id text, kind text, quota bigint, expires_at timestamptz,
        lockable boolean)
), old AS (
    SELECT s.user_id, s.value, s.value_bytes, s.version, s.updated_at, s.expires_at
    FROM settings AS s JOIN input AS i
        ON s.user_id = i.user_id AND s.scope = i.scope AND s.key = i.key
    WHERE s.expires_at IS NULL OR s.expires_at > i.now
    ORDER BY s.user_id
    FOR UPDATE OF s
), saved AS (
    UPDATE settings AS s SET value = i.value -> 0, version = s.version + 1,
        updated_at = i.now, expires_at = i.expires_at
    FROM input AS i JOIN old ON old.user_id = i.user_id
    WHERE s.user_id = i.user_id AND s.scope = i.scope AND s.key = i.key
      AND s.version = old.version
      AND NOT (i.lockable AND EXISTS (
          SELECT 1 FROM org_defaults AS d WHERE d.key = i.key AND d.locked))
      AND (i.quota IS NULL
           OR octet_length((i.value -> 0)::text) <= old.value_bytes
           OR (SELECT sum(t.value_bytes) FROM settings AS t
               WHERE t.user_id = i.user_id AND t.scope = i.scope)
              - old.value_bytes + octet_length((i.value -> 0)::text) <= i.quota)
    RETURNING s.user_id, s.key, s.scope, s.value, s.version, s.created_at, s.updated_at,
        s.expires_at
), bump AS (
    UPDATE users AS u SET feed_position = u.feed_position + 1
    FROM saved WHERE u.id = saved.user_id
    RETURNING u.id, u.feed_position
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at, position)
    SELECT saved.user_id, saved.scope, saved.key, i.kind, saved.version, old.value,
        saved.value, i.actor, i.interface, i.correlation_id, i.now, bump.feed_position
    FROM saved JOIN old ON old.user_id = saved.user_id
        JOIN bump ON bump.id = saved.user_id
        JOIN input AS i ON i.user_id = saved.user_id
)
SELECT saved.user_id, saved.key, saved.scope, saved.value, saved.version, saved.created_at,
    saved.updated_at, saved.expires_at, old.version AS old_version, old.value AS old_value,
    old.updated_at AS old_updated_at, old.expires_at AS old_expires_at,
    bump.feed_position AS position
FROM saved JOIN old ON old.user_id = saved.user_id JOIN bump ON bump.id = saved.user_id
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(user_id: &str) -> (Job, oneshot::Receiver<Result<Option<QueryResult>, DbErr>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            user_id: user_id.to_owned(),
            row: String::new(),
            reply,
        };
        (job, answer)
    }

    fn users(jobs: impl IntoIterator<Item = impl std::borrow::Borrow<Job>>) -> Vec<String> {
        jobs.into_iter()
            .map(|job| job.borrow().user_id.clone())
            .collect()
    }

    #[test]
    fn a_batch_takes_one_replacement_per_user_and_none_of_a_user_in_flight() {
        let mut answers = Vec::new();
        let mut waiting = VecDeque::new();
        for user in ["a", "b", "a", "c", "d", "b"] {
            let (job, answer) = job(user);
            waiting.push_back(job);
            answers.push(answer);
        }
        let mut busy = HashSet::from(["c".to_owned()]);
        let batch = take_batch(&mut waiting, &mut busy);
        assert_eq!(users(&batch), ["a", "b", "d"]);
        assert_eq!(users(&waiting), ["a", "c", "b"]);
        let mut busy_now: Vec<_> = busy.iter().cloned().collect();
        busy_now.sort();
        assert_eq!(busy_now, ["a", "b", "c", "d"]);
        // Nothing more until the statement in flight finishes.
        assert!(take_batch(&mut waiting, &mut busy).is_empty());
        release(&mut busy, users(&batch));
        assert_eq!(users(take_batch(&mut waiting, &mut busy)), ["a", "b"]);
        assert_eq!(users(&waiting), ["c"]);
    }

    #[test]
    fn a_batch_is_bounded_and_skips_replacements_nobody_waits_for() {
        let mut answers = Vec::new();
        let mut waiting = VecDeque::new();
        for n in 0..MAX_BATCH + 3 {
            let (job, answer) = job(&format!("user-{n}"));
            waiting.push_back(job);
            answers.push(answer);
        }
        // The first caller gave up.
        drop(answers.remove(0));
        let mut busy = HashSet::new();
        let batch = take_batch(&mut waiting, &mut busy);
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[0].user_id, "user-1");
        assert_eq!(
            users(&waiting),
            [
                format!("user-{}", MAX_BATCH + 1),
                format!("user-{}", MAX_BATCH + 2)
            ]
        );
    }
}
