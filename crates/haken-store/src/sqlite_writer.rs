//! SQLite's write path for the frequent writes (profile changes, user creation and deletion,
//! memberships, the delivery engine's rounds and attempt records).
//!
//! SQLite has one writer at a time, so these writes run on one dedicated thread that owns a
//! connection of its own. A caller hands over a synchronous job and awaits its result; the
//! thread takes every job queued at that moment, runs each in its own savepoint inside one
//! transaction, commits once and only then answers them all (group commit). A job that fails
//! rolls back to its savepoint and leaves the others standing. Compared with an async driver,
//! a write costs one hand-over instead of one per statement, and a commit is shared.
//!
//! The less frequent writes still go through the sqlx write connection; they take [`Gate`]
//! for their whole transaction, as the thread does for each group, so the two never wait on
//! SQLite's file lock for each other inside the process.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// Excludes the sqlx write connection and the writer thread from each other.
pub(crate) type Gate = Arc<tokio::sync::Mutex<()>>;

/// Most jobs in one transaction: bounds how long the first of them waits for the commit.
const MAX_GROUP: usize = 128;

/// Hands a job's result to its caller, given the commit's result (`Err`: why it failed).
type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// What a job leaves once it has run: whether its savepoint stands, and how to answer.
struct Ran {
    kept: bool,
    answer: Answer,
}

/// Runs with the connection, or with `None` when the transaction could not start.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Ran + Send>;

/// Handle to the writer thread; dropping every handle (or [`Writer::close`]) stops it.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens the write connection on `path` (the database exists and is migrated) and starts
    /// the thread.
    pub(crate) fn start(path: &str, gate: Gate) -> Result<Writer, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // The same settings as the sqlx connections: WAL (already set on the file), commits
        // durable at checkpoints, foreign keys enforced. Temporary storage in memory keeps the
        // savepoints' journal off the disk.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("haken-sqlite-writer".into())
            .spawn(move || run(&conn, &rx, &gate))
            .map_err(|e| StoreError::Database(format!("could not start the SQLite writer: {e}")))?;
        Ok(Writer { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Runs `f` in the next group's transaction and returns its result once that committed.
    /// An `Err` from `f` rolls back what `f` wrote, and only that.
    pub(crate) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Database("a write failed unexpectedly".into()).into())),
                None => Err(StoreError::Database("the write transaction could not start".into()).into()),
            };
            let kept = result.is_ok();
            Ran {
                kept,
                answer: Box::new(move |commit| {
                    let out = match (result, commit) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Ok(_), Err(why)) => Err(StoreError::Database(format!("commit failed: {why}")).into()),
                        (Err(e), _) => Err(e),
                    };
                    let _ = reply.send(out);
                }),
            }
        });
        let sent = match self.queue.lock() {
            Ok(q) => q.as_ref().is_some_and(|q| q.send(job).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(StoreError::Database("the store is closed".into()).into());
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Database("the SQLite writer stopped".into()).into()))
    }

    /// Lets queued jobs finish, stops the thread and closes its connection.
    pub(crate) async fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn run(conn: &Connection, queue: &mpsc::Receiver<Job>, gate: &Gate) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let held = gate.blocking_lock();
        let (commit, answers) = group(conn, jobs);
        drop(held);
        let commit = match &commit {
            Ok(()) => Ok(()),
            Err(why) => Err(why.as_str()),
        };
        for answer in answers {
            answer(commit);
        }
    }
}

/// Runs one group in one transaction. Returns the commit's result and the jobs' answers.
fn group(conn: &Connection, jobs: Vec<Job>) -> (Result<(), String>, Vec<Answer>) {
    let mut answers = Vec::with_capacity(jobs.len());
    let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    if let Err(e) = step("BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "SQLite write transaction could not start.");
        for job in jobs {
            let ran = job(None);
            answers.push(ran.answer);
        }
        return (Err(e.to_string()), answers);
    }
    let mut broken: Option<String> = None;
    for job in jobs {
        if broken.is_some() {
            let ran = job(None);
            answers.push(ran.answer);
            continue;
        }
        if let Err(e) = step("SAVEPOINT job") {
            broken = Some(e.to_string());
            let ran = job(None);
            answers.push(ran.answer);
            continue;
        }
        let ran = job(Some(conn));
        let end =
            if ran.kept { step("RELEASE job") } else { step("ROLLBACK TO job").and_then(|()| step("RELEASE job")) };
        if let Err(e) = end {
            broken = Some(e.to_string());
        }
        answers.push(ran.answer);
    }
    let commit = match broken {
        Some(why) => Err(why),
        None => step("COMMIT").map_err(|e| e.to_string()),
    };
    if let Err(why) = &commit {
        tracing::warn!(error = %why, "SQLite write transaction failed; its writes were rolled back.");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    (commit, answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("haken-writer-{}", haken_core::id::random_base62(10)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("w.db").to_string_lossy().into_owned();
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY);").expect("schema");
        (dir, path)
    }

    fn rows(path: &str) -> Vec<i64> {
        let conn = Connection::open(path).expect("open");
        let mut st = conn.prepare("SELECT n FROM t ORDER BY n").expect("prepare");
        st.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    }

    /// Jobs queued together share one transaction; the one that fails takes back only its
    /// own writes, and every answer comes after the commit (a second connection sees it).
    #[tokio::test]
    async fn a_failed_job_rolls_back_alone_in_its_group() {
        let (dir, path) = scratch();
        let writer = Arc::new(Writer::start(&path, Gate::default()).expect("writer"));
        // The first job holds the thread until the others are queued: they form one group.
        let (release, hold) = mpsc::channel::<()>();
        let first = {
            let w = writer.clone();
            tokio::spawn(async move {
                w.write(move |c| -> Result<(), StoreError> {
                    let _ = hold.recv_timeout(Duration::from_secs(5));
                    c.execute("INSERT INTO t (n) VALUES (0)", [])?;
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rest = Vec::new();
        for n in 1..=10i64 {
            let w = writer.clone();
            rest.push(tokio::spawn(async move {
                w.write(move |c| -> Result<i64, StoreError> {
                    c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                    if n == 5 {
                        return Err(StoreError::Conflict("n"));
                    }
                    // A constraint error inside a job is that job's error too.
                    if n == 7 {
                        c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                    }
                    Ok(n)
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).expect("release");
        first.await.expect("join").expect("first job");
        let mut ok = Vec::new();
        for (i, h) in rest.into_iter().enumerate() {
            match h.await.expect("join") {
                Ok(n) => {
                    ok.push(n);
                    // Committed before the answer: another connection sees the row.
                    assert!(rows(&path).contains(&n));
                }
                Err(StoreError::Conflict(_)) => assert_eq!(i + 1, 5),
                Err(StoreError::Embedded(_)) => assert_eq!(i + 1, 7),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(ok, vec![1, 2, 3, 4, 6, 8, 9, 10]);
        assert_eq!(rows(&path), vec![0, 1, 2, 3, 4, 6, 8, 9, 10]);
        writer.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A job that panics is answered with an error, rolled back, and the thread goes on.
    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_writer() {
        let (dir, path) = scratch();
        let writer = Writer::start(&path, Gate::default()).expect("writer");
        let r = writer
            .write(|c| -> Result<(), StoreError> {
                c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                panic!("job bug");
            })
            .await;
        assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
        writer
            .write(|c| -> Result<(), StoreError> {
                c.execute("INSERT INTO t (n) VALUES (2)", [])?;
                Ok(())
            })
            .await
            .expect("second job");
        assert_eq!(rows(&path), vec![2]);
        writer.close().await;
        let closed = writer.write(|_| -> Result<(), StoreError> { Ok(()) }).await;
        assert!(matches!(closed, Err(StoreError::Database(_))), "a closed writer refuses jobs");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// While an sqlx transaction holds the gate, the thread does not start a group.
    #[tokio::test]
    async fn the_gate_keeps_the_thread_out() {
        let (dir, path) = scratch();
        let gate = Gate::default();
        let writer = Arc::new(Writer::start(&path, gate.clone()).expect("writer"));
        let held = gate.clone().lock_owned().await;
        let w = writer.clone();
        let job = tokio::spawn(async move {
            w.write(|c| -> Result<(), StoreError> {
                c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                Ok(())
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!job.is_finished(), "the job ran while the gate was held");
        assert!(rows(&path).is_empty());
        drop(held);
        job.await.expect("join").expect("job");
        assert_eq!(rows(&path), vec![1]);
        writer.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
