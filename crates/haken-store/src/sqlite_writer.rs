//! SQLite's write path for the frequent writes (profile changes, user creation and deletion,
//! memberships, the delivery engine's rounds and attempt records).
//!
//! SQLite has one writer at a time, so these writes run on one dedicated thread that owns a
//! connection of its own. A caller hands over a synchronous job and awaits its result; the
//! thread takes every job queued at that moment, runs them in one transaction, commits once and
//! only then answers them all (group commit). Compared with an async driver, a write costs one
//! hand-over instead of one per statement, and a commit is shared.
//!
//! A job that fails must leave the others standing and nothing of its own. Jobs check before
//! they write, so a failed job has almost always written nothing, and then there is nothing to
//! undo: the group runs without savepoints (each one copies every page the job touches). When a
//! job fails after writing, the group's transaction is rolled back and run again with a
//! savepoint per job, the failed job answered with its error and not run again; so a job may
//! run more than once before it is answered, and must be repeatable.
//!
//! After the jobs, still inside the transaction, a group end given at start may write more
//! (the backend forms the group's deliveries there) and leave work for after the commit.
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

/// Under steady load, a group of fewer than [`LINGER_BELOW`] jobs waits up to this long (from
/// its first job's queueing) for more before it runs. Each commit writes every page its group
/// touched to the log, whatever the group holds, and its deliveries hold the group's events:
/// at 1,000 changes/s groups held one or two jobs. Steady means that within [`STEADY`] a
/// caller's job was queued while another caller's group ran: jobs from several callers at
/// once. An idle writer, or one caller writing in turn (whose next job comes only after its
/// answer), runs a lone job at once. The delivery engine's own jobs (rounds, attempt records)
/// do not count: they come beside every caller's writes. 4 ms: at 1,000 changes/s the
/// server's CPU per change was 6 % lower than with 2 ms (1 ms was worse than 2), p99 from
/// change to delivery 5-6 ms instead of 3-5.
const LINGER: Duration = Duration::from_millis(4);
const LINGER_BELOW: usize = 4;
const STEADY: Duration = Duration::from_millis(20);

/// A queued write. It may run more than once (see the module docs) and is answered once.
trait Job: Send {
    /// Runs the write on `conn`, keeping the result of this run only; returns whether it
    /// succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Hands the kept result to the caller, given the commit's result (`Err`: why it failed;
    /// a job the failure kept from running is told that).
    fn answer(self: Box<Self>, commit: Result<(), &str>);
    /// When it was queued, and whether a caller waits on it (not the delivery engine's own).
    fn queued(&self) -> (std::time::Instant, bool);
}

struct Pending<T, E, F> {
    f: F,
    result: Option<Result<T, E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    queued: std::time::Instant,
    foreground: bool,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnMut(&Connection) -> Result<T, E> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (self.f)(conn)))
            .unwrap_or_else(|_| Err(StoreError::Database("a write failed unexpectedly".into()).into()));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), &str>) {
        let out = match (self.result, commit) {
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(why)) => Err(StoreError::Database(format!("commit failed: {why}")).into()),
            (Some(Err(e)), _) => Err(e),
            (None, Err(why)) => Err(StoreError::Database(format!("the write did not run: {why}")).into()),
            (None, Ok(())) => Err(StoreError::Database("the write did not run".into()).into()),
        };
        let _ = self.reply.send(out);
    }

    fn queued(&self) -> (std::time::Instant, bool) {
        (self.queued, self.foreground)
    }
}

/// What a group does after its jobs, inside their transaction: it returns what to do once the
/// commit's outcome is known (`true`: committed). It must leave the transaction as it would
/// commit (undoing its own writes if it fails). The SQLite backend puts the group's routed
/// events into deliveries here and hands them to the delivery engine.
pub(crate) type GroupEnd = Box<dyn FnMut(&Connection) -> Option<AfterCommit> + Send>;

/// What a [`GroupEnd`] leaves for after the commit.
pub(crate) type AfterCommit = Box<dyn FnOnce(bool) + Send>;

/// Handle to the writer thread; dropping every handle (or [`Writer::close`]) stops it.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens the write connection on `path` (the database exists and is migrated) and starts
    /// the thread; `end` runs at the end of every group.
    pub(crate) fn start(path: &str, gate: Gate, end: Option<GroupEnd>) -> Result<Writer, StoreError> {
        Writer::start_with(path, gate, end, RESTART_AFTER_FRAMES)
    }

    /// [`Writer::start`], the log made to start over once it holds `restart_after` frames.
    fn start_with(path: &str, gate: Gate, mut end: Option<GroupEnd>, restart_after: i64) -> Result<Writer, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // The same settings as the sqlx connections: WAL (already set on the file), commits
        // durable at checkpoints, foreign keys enforced. Temporary storage in memory keeps the
        // savepoints' journal off the disk.
        // Checkpoints run on a thread of their own (below), not inside the writer's commits.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.query_row(&format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"), [], |_| Ok(()))?;
        // Plans that do not look at bound values: otherwise SQLite re-prepares a cached
        // statement whose LIMIT is a parameter every time it is bound again (the forming of
        // deliveries at each group's end: 4 % of the server's CPU at 1,000 changes/s).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(64);
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(Duration::from_secs(10))?;
        let (committed, wake) = mpsc::sync_channel::<()>(1);
        let checkpointer = std::thread::Builder::new()
            .name("haken-sqlite-checkpoint".into())
            .spawn({
                let gate = gate.clone();
                move || checkpoint(&checkpoints, &wake, &gate, restart_after)
            })
            .map_err(|e| StoreError::Database(format!("could not start the SQLite checkpoints: {e}")))?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("haken-sqlite-writer".into())
            .spawn(move || {
                run(&conn, &rx, &gate, &mut end, &committed);
                // The last checkpoint is done when the writer is.
                drop(committed);
                checkpointer.thread().unpark();
                let _ = checkpointer.join();
            })
            .map_err(|e| StoreError::Database(format!("could not start the SQLite writer: {e}")))?;
        Ok(Writer { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Runs `f` in the next group's transaction and returns its result once that committed.
    /// An `Err` from `f` rolls back what `f` wrote, and only that. `f` may run more than once
    /// (its earlier runs rolled back): it must compute its writes from what it reads.
    pub(crate) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.write_as(f, true).await
    }

    /// [`Writer::write`] for the delivery engine's own jobs, which do not count as load (see
    /// [`LINGER`]).
    pub(crate) async fn write_background<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.write_as(f, false).await
    }

    async fn write_as<T, E, F>(&self, f: F, foreground: bool) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Box<dyn Job> =
            Box::new(Pending { f, result: None, reply, queued: std::time::Instant::now(), foreground });
        let sent = match self.queue.lock() {
            Ok(q) => q.as_ref().is_some_and(|q| q.send(job).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(StoreError::Database("the store is closed".into()).into());
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Database("the SQLite writer stopped".into()).into()))
    }

    /// Lets queued jobs finish, stops the thread and closes its connection (after a last
    /// checkpoint).
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

/// How long the checkpoint thread lets commits gather after the first it hears of: pages
/// written many times in that while are copied into the database once.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(200);

/// Frames the write-ahead log may hold before a checkpoint makes sure it can start over
/// (4 KiB pages: 16 MiB).
const RESTART_AFTER_FRAMES: i64 = 4096;

/// What the log is truncated to when it starts over after growing beyond it.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Copies the write-ahead log back into the database (a passive checkpoint: it never waits
/// for, nor holds up, the writer or readers) a while after commits, until the writer stops.
/// Commits are durable at checkpoints (`synchronous = NORMAL`); in the writer's commits a
/// checkpoint held up every job of the group behind it.
///
/// The log starts over from its beginning only when a checkpoint copied all of it, and under
/// steady writes a passive checkpoint never does: the writer appends while it copies. The log
/// then grows without end (hundreds of MB a minute at 1,000 changes/s), and every commit
/// writes to new file blocks. So when the log has grown long, a second checkpoint runs holding
/// the writers' gate: it copies only what came during the first, and the next write starts the
/// log over (unless a reader still reads from it then; the next pass tries again).
fn checkpoint(conn: &Connection, committed: &mpsc::Receiver<()>, gate: &Gate, restart_after: i64) {
    while committed.recv().is_ok() {
        // Later commits join this checkpoint. The wait is a park, not a receive, so they do
        // not wake the thread; a writer that stops unparks it.
        std::thread::park_timeout(CHECKPOINT_AFTER);
        let _ = committed.try_recv();
        match passive_checkpoint(conn) {
            Ok(log) if log > restart_after => {
                // Once more first, so the one holding the writers copies only what came during
                // a short checkpoint.
                let _ = passive_checkpoint(conn);
                let held = gate.blocking_lock();
                if let Err(e) = passive_checkpoint(conn) {
                    tracing::warn!(error = %e, "SQLite checkpoint failed; the next commit tries again.");
                }
                drop(held);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; the next commit tries again."),
        }
    }
    let _ = passive_checkpoint(conn);
}

/// Runs a passive checkpoint; returns the frames in the log as it found it (the writer may
/// have added more while it copied).
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

fn run(
    conn: &Connection,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    gate: &Gate,
    end: &mut Option<GroupEnd>,
    committed: &mpsc::SyncSender<()>,
) {
    // When the last group with a caller's job committed, and when a caller's job was last
    // found queued while such a group ran.
    let mut last_commit: Option<std::time::Instant> = None;
    let mut last_overlap: Option<std::time::Instant> = None;
    let waited_behind = |j: &dyn Job, last_commit: Option<std::time::Instant>| {
        let (queued, foreground) = j.queued();
        overlaps(queued, foreground, last_commit)
    };
    while let Ok(first) = queue.recv() {
        let since = first.queued().0;
        if waited_behind(&*first, last_commit) {
            last_overlap = Some(std::time::Instant::now());
        }
        let mut jobs = vec![first];
        loop {
            while jobs.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(j) => {
                        if waited_behind(&*j, last_commit) {
                            last_overlap = Some(std::time::Instant::now());
                        }
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let steady = last_overlap.is_some_and(|t| t.elapsed() < STEADY);
            match linger(jobs.len(), steady, since.elapsed()) {
                Some(left) => match queue.recv_timeout(left) {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                },
                None => break,
            }
        }
        let held = gate.blocking_lock();
        let (commit, after) = group(conn, &mut jobs, end);
        drop(held);
        if jobs.iter().any(|j| j.queued().1) {
            last_commit = Some(std::time::Instant::now());
        }
        if let Some(after) = after {
            let committed = commit.is_ok();
            if std::panic::catch_unwind(AssertUnwindSafe(move || after(committed))).is_err() {
                tracing::error!("The work after a SQLite commit failed unexpectedly.");
            }
        }
        let commit = match &commit {
            Ok(()) => {
                // Full: the checkpoint thread has already been told.
                let _ = committed.try_send(());
                Ok(())
            }
            Err(why) => Err(why.as_str()),
        };
        for job in jobs {
            job.answer(commit);
        }
    }
}

/// Whether a job queued at `queued` waited behind a caller's group (the last committed at
/// `last_commit`): true only for a caller's job (`foreground`) queued before that commit. One
/// caller writing in turn queues its next job after the answer, so after the commit.
fn overlaps(queued: std::time::Instant, foreground: bool, last_commit: Option<std::time::Instant>) -> bool {
    foreground && last_commit.is_some_and(|t| queued < t)
}

/// How much longer a group of `jobs`, its first queued `waited` ago, waits for more jobs
/// (`steady`: the writer is under steady load); `None`: it runs now.
fn linger(jobs: usize, steady: bool, waited: Duration) -> Option<Duration> {
    (steady && jobs < LINGER_BELOW).then(|| LINGER.checked_sub(waited)).flatten().filter(|d| !d.is_zero())
}

/// Runs one group in one transaction, then `end`, and returns the commit's result (each job
/// keeps its own) with what `end` left for after it.
fn group(
    conn: &Connection,
    jobs: &mut [Box<dyn Job>],
    end: &mut Option<GroupEnd>,
) -> (Result<(), String>, Option<AfterCommit>) {
    let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    let mut after = None;
    let outcome = step("BEGIN IMMEDIATE").map_err(|e| e.to_string()).and_then(|()| match run_plain(conn, jobs)? {
        None => Ok(()),
        Some(failed) => {
            step("ROLLBACK").and_then(|()| step("BEGIN IMMEDIATE")).map_err(|e| e.to_string())?;
            run_in_savepoints(conn, jobs, failed)
        }
    });
    let outcome = outcome.and_then(|()| {
        if let Some(end) = end.as_mut() {
            // A panic here would stop the thread, and every write with it: the group fails.
            after = std::panic::catch_unwind(AssertUnwindSafe(|| end(conn)))
                .map_err(|_| "the end of a write group failed unexpectedly".to_owned())?;
        }
        if conn.is_autocommit() { Err("the transaction was rolled back by SQLite".to_owned()) } else { Ok(()) }
    });
    let commit = outcome.and_then(|()| step("COMMIT").map_err(|e| e.to_string()));
    if let Err(why) = &commit {
        tracing::warn!(error = %why, "SQLite write transaction failed; its writes were rolled back.");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    (commit, after)
}

/// Runs the jobs in order without savepoints. Returns the index of the first job that failed
/// after writing (the transaction then holds some of its writes), or `None` when every failed
/// job wrote nothing. `Err` when the transaction itself is gone.
fn run_plain(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<Option<usize>, String> {
    for (i, job) in jobs.iter_mut().enumerate() {
        let before = conn.total_changes();
        let ok = job.run(conn);
        if conn.is_autocommit() {
            return Err("the transaction was rolled back by SQLite".into());
        }
        if !ok && conn.total_changes() != before {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Runs the jobs again, each in its own savepoint, except `failed`, which keeps the error of
/// its first run.
fn run_in_savepoints(conn: &Connection, jobs: &mut [Box<dyn Job>], failed: usize) -> Result<(), String> {
    let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    for (i, job) in jobs.iter_mut().enumerate() {
        if i == failed {
            continue;
        }
        step("SAVEPOINT job").map_err(|e| e.to_string())?;
        let kept = job.run(conn);
        if kept { step("RELEASE job") } else { step("ROLLBACK TO job").and_then(|()| step("RELEASE job")) }
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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

    /// A cached statement with a parameter in its LIMIT runs again without being prepared
    /// again (SQLite would re-prepare it at each new binding without the planner setting).
    #[tokio::test]
    async fn a_bound_limit_does_not_re_prepare() {
        let (dir, path) = scratch();
        let writer = Writer::start(&path, Gate::default(), None).expect("writer");
        let reprepared = writer
            .write(|c| -> Result<i32, StoreError> {
                c.execute("INSERT INTO t (n) VALUES (1), (2), (3)", [])?;
                for limit in [1i64, 2, 3, 2] {
                    let mut st = c.prepare_cached("SELECT n FROM t ORDER BY n LIMIT ?1")?;
                    let got: Vec<i64> = st.query_map([limit], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    assert_eq!(got.len() as i64, limit);
                }
                let st = c.prepare_cached("SELECT n FROM t ORDER BY n LIMIT ?1")?;
                Ok(st.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .expect("job");
        assert_eq!(reprepared, 0);
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Jobs queued together share one transaction; the one that fails takes back only its
    /// own writes, and every answer comes after the commit (a second connection sees it).
    #[tokio::test]
    async fn a_failed_job_rolls_back_alone_in_its_group() {
        let (dir, path) = scratch();
        let writer = Arc::new(Writer::start(&path, Gate::default(), None).expect("writer"));
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

    /// A job that fails before writing costs the others nothing: every job runs once. One that
    /// fails after writing sends the group round again with savepoints: the jobs before it run
    /// twice, it runs once, and what it wrote is gone.
    #[tokio::test]
    async fn only_a_job_that_failed_after_writing_makes_the_group_run_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (dir, path) = scratch();
        let writer = Arc::new(Writer::start(&path, Gate::default(), None).expect("writer"));
        for (base, dirty) in [(100i64, false), (200, true)] {
            let (release, hold) = mpsc::channel::<()>();
            let w = writer.clone();
            let first = tokio::spawn(async move {
                w.write(move |_| -> Result<(), StoreError> {
                    let _ = hold.recv_timeout(Duration::from_secs(5));
                    Ok(())
                })
                .await
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
            let mut jobs = Vec::new();
            for k in 0..5usize {
                let (w, runs) = (writer.clone(), runs.clone());
                jobs.push(tokio::spawn(async move {
                    w.write(move |c| -> Result<(), StoreError> {
                        runs[k].fetch_add(1, Ordering::SeqCst);
                        if k == 2 {
                            if dirty {
                                c.execute("INSERT INTO t (n) VALUES (?1)", [base + 99])?;
                            }
                            return Err(StoreError::Conflict("n"));
                        }
                        c.execute("INSERT INTO t (n) VALUES (?1)", [base + k as i64])?;
                        Ok(())
                    })
                    .await
                }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            release.send(()).expect("release");
            first.await.expect("join").expect("first job");
            for (k, j) in jobs.into_iter().enumerate() {
                let r = j.await.expect("join");
                assert_eq!(r.is_err(), k == 2, "job {k}: {r:?}");
            }
            let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
            assert_eq!(counts, if dirty { vec![2, 2, 1, 1, 1] } else { vec![1, 1, 1, 1, 1] });
            let stored: Vec<i64> = rows(&path).into_iter().filter(|n| (base..base + 100).contains(n)).collect();
            assert_eq!(stored, vec![base, base + 1, base + 3, base + 4]);
        }
        writer.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Commits reach the database file by the checkpoint thread: the writer itself never
    /// checkpoints, and nothing else here does.
    #[tokio::test]
    async fn commits_are_checkpointed_into_the_database_file() {
        let (dir, path) = scratch();
        let writer = Writer::start(&path, Gate::default(), None).expect("writer");
        let before = std::fs::metadata(&path).expect("db file").len();
        for n in 0..20i64 {
            writer
                .write(move |c| -> Result<(), StoreError> {
                    for k in 0..50 {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [n * 1000 + k])?;
                    }
                    Ok(())
                })
                .await
                .expect("write");
        }
        let mut grew = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::fs::metadata(&path).expect("db file").len() > before {
                grew = true;
                break;
            }
        }
        assert!(grew, "the database file never took the logged pages ({before} bytes)");
        assert_eq!(rows(&path).len(), 1000);
        // Closing waits for a last checkpoint of what came since.
        let checkpointed = std::fs::metadata(&path).expect("db file").len();
        writer
            .write(|c| -> Result<(), StoreError> {
                for k in 0..2000 {
                    c.execute("INSERT INTO t (n) VALUES (?1)", [100_000 + k])?;
                }
                Ok(())
            })
            .await
            .expect("write");
        writer.close().await;
        assert!(std::fs::metadata(&path).expect("db file").len() > checkpointed, "no checkpoint at close");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The group end runs after a group's jobs, in their transaction (it sees their rows and
    /// its own writes commit with them), and is told once whether the group committed. One
    /// that panics fails its group without stopping the thread; one whose transaction is gone
    /// is told the group did not commit.
    #[tokio::test]
    async fn the_group_end_writes_with_the_group_and_hears_its_outcome() {
        use std::sync::atomic::{AtomicU8, Ordering};
        let (dir, path) = scratch();
        let mode = Arc::new(AtomicU8::new(0));
        let heard: Arc<Mutex<Vec<(i64, bool)>>> = Arc::default();
        let end: GroupEnd = {
            let (mode, heard) = (mode.clone(), heard.clone());
            Box::new(move |c| {
                let seen: i64 = c.query_row("SELECT count(*) FROM t WHERE n < 1000", [], |r| r.get(0)).ok()?;
                match mode.load(Ordering::SeqCst) {
                    1 => panic!("group end bug"),
                    2 => c.execute_batch("ROLLBACK").ok()?,
                    _ => {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [1000 + seen]).ok()?;
                    }
                }
                let heard = heard.clone();
                Some(Box::new(move |committed| heard.lock().expect("heard").push((seen, committed))) as AfterCommit)
            })
        };
        let writer = Writer::start(&path, Gate::default(), Some(end)).expect("writer");
        let insert = |n: i64| {
            move |c: &Connection| -> Result<(), StoreError> {
                c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                Ok(())
            }
        };
        writer.write(insert(1)).await.expect("first");
        writer.write(insert(2)).await.expect("second");
        assert_eq!(rows(&path), vec![1, 2, 1001, 1002], "the end saw each group's rows and wrote with it");
        mode.store(1, Ordering::SeqCst);
        assert!(writer.write(insert(3)).await.is_err(), "a panicking end fails its group");
        mode.store(2, Ordering::SeqCst);
        assert!(writer.write(insert(4)).await.is_err(), "a group whose transaction is gone fails");
        mode.store(0, Ordering::SeqCst);
        writer.write(insert(5)).await.expect("the thread goes on");
        writer.close().await;
        assert_eq!(rows(&path), vec![1, 2, 5, 1001, 1002, 1003]);
        assert_eq!(*heard.lock().expect("heard"), vec![(1, true), (2, true), (3, false), (3, true)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A small group under steady load waits what is left of the linger; a group without
    /// steady load, a large group, or one that waited long enough runs at once.
    #[test]
    fn only_small_groups_under_steady_load_wait() {
        let ms = Duration::from_millis;
        assert_eq!(linger(1, true, ms(0)), Some(LINGER));
        assert_eq!(linger(LINGER_BELOW - 1, true, ms(1)), Some(LINGER - ms(1)));
        assert_eq!(linger(1, false, ms(0)), None, "no steady load");
        assert_eq!(linger(LINGER_BELOW, true, ms(0)), None, "a group large enough");
        assert_eq!(linger(2, true, LINGER), None, "waited long enough");
        let t = std::time::Instant::now();
        let later = t + ms(1);
        assert!(overlaps(t, true, Some(later)), "a caller's job queued while a group ran");
        assert!(!overlaps(later, true, Some(t)), "a caller's next job after its answer");
        assert!(!overlaps(t, false, Some(later)), "the delivery engine's own job");
        assert!(!overlaps(t, true, None), "nothing committed yet");
    }

    /// Under steady writes the log starts over instead of growing by every commit: it stays
    /// far smaller than what was written through it.
    #[tokio::test]
    async fn the_log_starts_over_under_steady_writes() {
        let (dir, path) = scratch();
        Connection::open(&path).expect("open").execute_batch("CREATE TABLE b (v BLOB)").expect("table");
        let writer = Writer::start_with(&path, Gate::default(), None, 64).expect("writer");
        let wal = format!("{path}-wal");
        let (started, mut written, mut largest) = (std::time::Instant::now(), 0u64, 0u64);
        while started.elapsed() < Duration::from_millis(1500) {
            writer
                .write(|c| -> Result<(), StoreError> {
                    for _ in 0..3 {
                        c.execute("INSERT INTO b (v) VALUES (zeroblob(3000))", [])?;
                    }
                    Ok(())
                })
                .await
                .expect("write");
            written += 9000;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.close().await;
        assert!(written > 3_000_000, "too few writes to tell ({written} bytes)");
        assert!(largest < written / 2, "the log grew to {largest} bytes for {written} bytes written");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A job that panics is answered with an error, rolled back, and the thread goes on.
    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_writer() {
        let (dir, path) = scratch();
        let writer = Writer::start(&path, Gate::default(), None).expect("writer");
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
        let writer = Arc::new(Writer::start(&path, gate.clone(), None).expect("writer"));
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
