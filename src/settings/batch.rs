//! Grouping concurrent operations into one statement (PostgreSQL): while earlier statements
//! are in flight, the operations that arrive meanwhile wait and then go to the database
//! together, as one statement (and, for a write, one commit). An operation that finds the
//! queue idle goes at once, alone, so a quiet service adds no latency.
//!
//! An operation may name a user whose operations of its kind must never be in flight two at a
//! time (see [`Grouped::exclusive_user`]): a statement then holds at most one of that user's,
//! and the next waits until that statement is done. The shared writes use this
//! (`grouped_write.rs`).

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
};

use sea_orm::DbErr;
use tokio::sync::{mpsc, oneshot};

/// An operation that may share a statement with others.
pub(super) trait Grouped: Send + 'static {
    /// The user whose operations of this kind must not be in flight two at a time, if any.
    fn exclusive_user(&self) -> Option<&str>;
    /// Whether this operation may go in the statement that `first` opens.
    fn joins(&self, first: &Self) -> bool;
    /// Whether its caller stopped waiting: then it is dropped unsent.
    fn abandoned(&self) -> bool;
}

/// How many operations go together, and how many statements may be in flight at once.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub per_statement: usize,
    pub in_flight: usize,
}

/// The sending end of a queue; its dispatching task ends when it is dropped.
pub(super) struct Queue<J> {
    jobs: mpsc::UnboundedSender<J>,
}

impl<J: Grouped> Queue<J> {
    /// Starts the dispatching task on the current runtime; `run` sends one statement's
    /// operations and answers each of them.
    pub(super) fn start<R, F>(limits: Limits, run: R) -> Self
    where
        R: Fn(Vec<J>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(limits, queue, run));
        Queue { jobs }
    }

    /// Queues the operation that `job` makes around its reply channel, and waits for the
    /// answer.
    pub(super) async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, DbErr>>) -> J,
    ) -> Result<T, DbErr> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| DbErr::Custom("the statement queue has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbErr::Custom("the statement queue dropped an operation".into()))?
    }
}

/// Runs until every sender is gone and every statement has finished: takes the operations
/// that arrived, and sends as many together as the rules allow whenever fewer than
/// `limits.in_flight` statements are in flight.
async fn dispatch<J, R, F>(limits: Limits, mut queue: mpsc::UnboundedReceiver<J>, run: R)
where
    J: Grouped,
    R: Fn(Vec<J>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (finished, mut done) = mpsc::unbounded_channel::<Vec<String>>();
    let mut waiting: VecDeque<J> = VecDeque::new();
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
        if in_flight < limits.in_flight {
            let batch = take_batch(&mut waiting, &mut busy, limits.per_statement);
            if !batch.is_empty() {
                in_flight += 1;
                let finished = Finished {
                    users: batch
                        .iter()
                        .filter_map(|job| job.exclusive_user().map(str::to_owned))
                        .collect(),
                    done: finished.clone(),
                };
                let statement = run(batch);
                tokio::spawn(async move {
                    statement.await;
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

/// The next statement's operations, oldest first: at most `most`, each joining the first,
/// at most one of each exclusive user and none of a user in `busy` (to which their users are
/// added). An abandoned operation is dropped. The others stay in `waiting`, in order.
fn take_batch<J: Grouped>(
    waiting: &mut VecDeque<J>,
    busy: &mut HashSet<String>,
    most: usize,
) -> Vec<J> {
    let mut batch: Vec<J> = Vec::new();
    let mut kept = VecDeque::new();
    while batch.len() < most
        && let Some(job) = waiting.pop_front()
    {
        if job.abandoned() {
            continue;
        }
        let joins = batch.first().is_none_or(|first| job.joins(first));
        let free = job.exclusive_user().is_none_or(|user| !busy.contains(user));
        if joins && free {
            if let Some(user) = job.exclusive_user() {
                busy.insert(user.to_owned());
            }
            batch.push(job);
        } else {
            kept.push_back(job);
        }
    }
    kept.append(waiting);
    *waiting = kept;
    batch
}

/// How a queue with `limits` groups operations that wait: one operation goes alone, and while
/// it is in flight `waiting` operations of as many users arrive; each statement then runs
/// until the test ends it, oldest first. Returns the sizes of the statements in the order
/// they started and the most that were in flight at once, once every operation is answered.
#[cfg(test)]
pub(super) async fn statement_sizes(limits: Limits, waiting: usize) -> (Vec<usize>, usize) {
    struct Operation {
        user_id: String,
        reply: oneshot::Sender<Result<(), DbErr>>,
    }
    impl Grouped for Operation {
        fn exclusive_user(&self) -> Option<&str> {
            Some(&self.user_id)
        }
        fn joins(&self, _: &Self) -> bool {
            true
        }
        fn abandoned(&self) -> bool {
            self.reply.is_closed()
        }
    }
    // Each statement tells the test it started, and ends when the test says so.
    let (started, mut starts) = mpsc::unbounded_channel::<(usize, oneshot::Sender<()>)>();
    let queue = Queue::start(limits, move |batch: Vec<Operation>| {
        let started = started.clone();
        async move {
            let (end, ended) = oneshot::channel();
            let _ = started.send((batch.len(), end));
            let _ = ended.await;
            for operation in batch {
                let _ = operation.reply.send(Ok(()));
            }
        }
    });
    let mut answers = Vec::new();
    let mut send = |user_id: String| {
        let (reply, answer) = oneshot::channel();
        queue.jobs.send(Operation { user_id, reply }).unwrap();
        answers.push(answer);
    };
    send("first".to_owned());
    let (size, end) = starts.recv().await.unwrap();
    let mut sizes = vec![size];
    let mut running = VecDeque::from([end]);
    let mut most_in_flight = 1;
    for n in 0..waiting {
        send(format!("user-{n}"));
    }
    loop {
        // Whatever the dispatcher starts now, it starts before these yields end (the test
        // runs on one thread).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        while let Ok((size, end)) = starts.try_recv() {
            sizes.push(size);
            running.push_back(end);
        }
        most_in_flight = most_in_flight.max(running.len());
        let Some(end) = running.pop_front() else {
            break;
        };
        end.send(()).unwrap();
    }
    for answer in answers {
        answer.await.unwrap().unwrap();
    }
    (sizes, most_in_flight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_that_wait_go_together_in_statements_of_at_most_the_limit() {
        // With two in flight, the second statement starts while the first is in flight.
        for in_flight in [1, 2] {
            let limits = Limits {
                per_statement: 4,
                in_flight,
            };
            let sizes = statement_sizes(limits, 10).await;
            assert_eq!(
                sizes,
                (vec![1, 4, 4, 2], in_flight),
                "{in_flight} in flight"
            );
        }
    }

    struct Job {
        user_id: String,
        exclusive: bool,
        group: u8,
        abandoned: bool,
    }

    impl Grouped for Job {
        fn exclusive_user(&self) -> Option<&str> {
            self.exclusive.then_some(self.user_id.as_str())
        }
        fn joins(&self, first: &Self) -> bool {
            self.group == first.group
        }
        fn abandoned(&self) -> bool {
            self.abandoned
        }
    }

    fn job(user_id: &str) -> Job {
        Job {
            user_id: user_id.to_owned(),
            exclusive: true,
            group: 0,
            abandoned: false,
        }
    }

    fn users<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Vec<String> {
        jobs.into_iter().map(|job| job.user_id.clone()).collect()
    }

    #[test]
    fn a_batch_takes_one_operation_per_exclusive_user_and_none_of_a_user_in_flight() {
        let mut waiting: VecDeque<Job> = ["a", "b", "a", "c", "d", "b"].map(job).into();
        let mut busy = HashSet::from(["c".to_owned()]);
        let batch = take_batch(&mut waiting, &mut busy, 32);
        assert_eq!(users(&batch), ["a", "b", "d"]);
        assert_eq!(users(&waiting), ["a", "c", "b"]);
        let mut busy_now: Vec<_> = busy.iter().cloned().collect();
        busy_now.sort();
        assert_eq!(busy_now, ["a", "b", "c", "d"]);
        // Nothing more until the statement in flight finishes.
        assert!(take_batch(&mut waiting, &mut busy, 32).is_empty());
        release(&mut busy, users(&batch));
        assert_eq!(users(&take_batch(&mut waiting, &mut busy, 32)), ["a", "b"]);
        assert_eq!(users(&waiting), ["c"]);
    }

    #[test]
    fn a_batch_is_bounded_and_skips_operations_nobody_waits_for() {
        let mut waiting: VecDeque<Job> = (0..7).map(|n| job(&format!("user-{n}"))).collect();
        waiting[0].abandoned = true;
        let batch = take_batch(&mut waiting, &mut HashSet::new(), 4);
        assert_eq!(users(&batch), ["user-1", "user-2", "user-3", "user-4"]);
        assert_eq!(users(&waiting), ["user-5", "user-6"]);
    }

    #[test]
    fn a_batch_takes_only_operations_that_join_its_first_and_shared_users_repeat() {
        let mut waiting: VecDeque<Job> = [(0, "a"), (1, "b"), (0, "a"), (1, "c"), (0, "d")]
            .into_iter()
            .map(|(group, user)| Job {
                group,
                exclusive: false,
                ..job(user)
            })
            .collect();
        let mut busy = HashSet::new();
        assert_eq!(
            users(&take_batch(&mut waiting, &mut busy, 32)),
            ["a", "a", "d"]
        );
        assert!(busy.is_empty());
        assert_eq!(users(&take_batch(&mut waiting, &mut busy, 32)), ["b", "c"]);
        assert!(waiting.is_empty());
    }
}
