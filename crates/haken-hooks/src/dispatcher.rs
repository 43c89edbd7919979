//! The delivery engine. Each node runs one dispatcher: it turns routed events into deliveries
//! (up to 50 events each), claims due deliveries with a lease, sends them with a bounded
//! number in flight per hook, records every attempt and reschedules or gives up by the hook's
//! retry policy. All state is in the store, so a node that dies loses nothing: its leases
//! expire and another node (or the same one, restarted) sends again — at least once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use haken_core::Timestamp;
use haken_core::hook::{Attempt, AttemptOutcome, EventHook, HookStatus, VerificationStatus};
use haken_core::log_event::{EventContext, Target};
use haken_store::{Claimed, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{OutboundClient, OutboundRequest, SendError};
use crate::retry::{self, Decision, Failure};
use crate::{envelope, metrics, signing, verify};

/// Settings of a node's dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Names this node in leases and attempt records.
    pub node_id: String,
    /// Base URL for envelope `source`s.
    pub public_url: String,
    /// How long a claimed delivery stays ours without an answer.
    pub lease: Duration,
    pub max_events_per_delivery: i64,
    /// Longest sleep between rounds when nothing wakes the dispatcher (retries, expired
    /// leases and other nodes' work are found by this poll).
    pub poll_interval: Duration,
}

impl DispatcherConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        DispatcherConfig {
            node_id: format!("node-{}", haken_core::id::random_base62(8)),
            public_url: public_url.into(),
            lease: Duration::from_secs(60),
            max_events_per_delivery: haken_store::MAX_EVENTS_PER_DELIVERY,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A node's delivery engine.
pub struct Dispatcher {
    store: Store,
    client: OutboundClient,
    config: DispatcherConfig,
    in_flight: Mutex<HashMap<String, u32>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// The receiving hooks of the last round and their revision: deliveries a write hands over
    /// are taken only for hooks of the revision that write was routed by.
    held: Mutex<(i64, HashMap<String, Arc<EventHook>>)>,
    /// Hooks whose backlog gauges were last set to a figure.
    reported: Mutex<std::collections::HashSet<String>>,
    /// Set at shutdown: nothing more is taken or started.
    stopping: AtomicBool,
    /// Hooks whose work may be waiting for an in-flight slot (a round used all the room it
    /// offered the hook, or a write found none). A slot of such a hook that comes free wakes a
    /// round, and writes hand over none of its deliveries: the round leases the oldest due
    /// first, so a new event does not overtake waiting ones. Without it, rounds come from
    /// commits, other nodes' wake-ups and due times.
    starved: Mutex<Starved>,
    /// Slots freed so far: a round that marks hooks starved and sees this move while it ran
    /// looks again (the freed slot did not see the mark, so it woke no one).
    freed: std::sync::atomic::AtomicU64,
    /// When the queue gauges were last refreshed (ms).
    stats_at: std::sync::atomic::AtomicI64,
    /// The runtime sends run on: a hand-over may come from a thread outside it (SQLite's
    /// writer thread).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

/// Hooks whose work may be waiting for room: those the last round used all the room of, and
/// those writes found without room since (kept until a round after them decides).
#[derive(Default)]
struct Starved {
    hooks: std::collections::HashSet<String>,
    refused: std::collections::HashSet<String>,
}

struct Slot {
    dispatcher: Arc<Dispatcher>,
    hook_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.dispatcher.in_flight.lock()
            && let Some(n) = m.get_mut(&self.hook_id)
        {
            *n = n.saturating_sub(1);
        }
        // Counted before the mark is read: see `round`.
        self.dispatcher.freed.fetch_add(1, Ordering::SeqCst);
        // A slot came free: look for more work, if some may be waiting for room.
        if self.dispatcher.starved.lock().is_ok_and(|s| s.hooks.contains(&self.hook_id)) {
            self.dispatcher.store.wake();
        }
    }
}

impl Dispatcher {
    pub fn new(store: Store, client: OutboundClient, config: DispatcherConfig) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            client,
            config,
            in_flight: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            held: Mutex::new((i64::MIN, HashMap::new())),
            reported: Mutex::default(),
            stopping: AtomicBool::new(false),
            starved: Mutex::default(),
            freed: std::sync::atomic::AtomicU64::new(0),
            stats_at: std::sync::atomic::AtomicI64::new(0),
            runtime: std::sync::OnceLock::new(),
        })
    }

    /// The queue gauges cost two queries: refresh them at most once a second.
    fn stats_due(&self) -> bool {
        let now = Timestamp::now().millis();
        let last = self.stats_at.load(std::sync::atomic::Ordering::Relaxed);
        now - last >= 1000
            && self
                .stats_at
                .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                .is_ok()
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Runs until `shutdown` turns true, then waits (bounded) for deliveries in flight.
    pub fn spawn(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let me = self.clone();
        let _ = me.runtime.set(tokio::runtime::Handle::current());
        if let Some(pool) = me.store.pg_pool().cloned() {
            let store = me.store.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = listen_for_other_nodes(pool, store) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
        me.store
            .install_intake(Arc::new(LocalIntake { dispatcher: Arc::downgrade(&me), node: me.config.node_id.clone() }));
        tokio::spawn(async move {
            // Leases held under this node's id belong to a process that is gone (this is a
            // restart): take them back now instead of waiting for them to expire.
            match me.store.release_leases(&me.config.node_id).await {
                Ok(n) if n > 0 => {
                    tracing::info!(node = %me.config.node_id, released = n, "Took back deliveries leased before a restart.")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Could not release this node's old leases; they will expire."),
            }
            tracing::info!(node = %me.config.node_id, "Event hook dispatcher started.");
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let wait = match me.round().await {
                    Ok(next_due) => {
                        let now = Timestamp::now().millis();
                        let until_due = next_due.map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)));
                        until_due.map_or(me.config.poll_interval, |d| d.min(me.config.poll_interval))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Dispatcher round failed; retrying.");
                        me.config.poll_interval
                    }
                };
                tokio::select! {
                    _ = me.store.wait_for_work() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
            let mut tasks = {
                let mut t = me.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                me.stopping.store(true, Ordering::Release);
                std::mem::take(&mut *t)
            };
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
                tracing::warn!(
                    "Deliveries still in flight at shutdown; their leases will expire and they will be sent again."
                );
            }
            tracing::info!(node = %me.config.node_id, "Event hook dispatcher stopped.");
        })
    }

    /// One pass: batch new events, claim what is due within each hook's in-flight bound,
    /// start sending. Returns the earliest future due time.
    async fn round(self: &Arc<Self>) -> Result<Option<i64>, haken_store::StoreError> {
        let now = Timestamp::now().millis();
        let lease_until = now + i64::try_from(self.config.lease.as_millis()).unwrap_or(60_000);
        // The room a round offers is taken at once, so writes handing deliveries over at the
        // same moment cannot take it too; what the round does not lease goes back.
        let offered: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let freed = self.freed.load(Ordering::SeqCst);
        let (me, taken) = (self.clone(), offered.clone());
        let result = self
            .store
            .dispatch_round(now, self.config.max_events_per_delivery, &self.config.node_id, lease_until, move |hook| {
                let Ok(mut t) = taken.lock() else { return 0 };
                // Asked again for a hook (SQLite runs a round again when its write group is
                // rolled back): the room taken the first time is still taken.
                if let Some((_, n)) = t.iter().find(|(h, _)| *h == hook.id) {
                    return *n;
                }
                let n = me.take_slots(hook);
                t.push((hook.id.clone(), n));
                n
            })
            .await;
        let offered = offered.lock().map(|mut o| std::mem::take(&mut *o)).unwrap_or_default();
        let round = match result {
            Ok(round) => round,
            Err(e) => {
                for (hook_id, n) in &offered {
                    self.put_slots(hook_id, *n);
                }
                return Err(e);
            }
        };
        // A hook the round had no due work for is not waiting for room either.
        let mut starved = std::collections::HashSet::new();
        for (hook_id, n) in &offered {
            let used = round.claimed.iter().find(|(h, _)| h.id == *hook_id).map_or(0, |(_, c)| c.len() as u32);
            if used >= *n {
                starved.insert(hook_id.clone());
            }
            self.put_slots(hook_id, n.saturating_sub(used));
        }
        // Hooks a write found no room for since the last round stay marked until the next one:
        // their deliveries may not have been visible to this one.
        let look_again = match self.starved.lock() {
            Ok(mut s) => {
                let refused = std::mem::take(&mut s.refused);
                starved.extend(refused);
                s.hooks = starved;
                // A slot freed while the round ran saw the old marks: it may have woken no one.
                !s.hooks.is_empty() && self.freed.load(Ordering::SeqCst) != freed
            }
            Err(_) => false,
        };
        if look_again {
            self.store.wake();
        }
        let next = round.next_due;
        if let Some((rev, hooks)) = round.hooks
            && let Ok(mut held) = self.held.lock()
            && held.0 != rev
        {
            *held = (rev, hooks.iter().map(|h| (h.id.clone(), Arc::new(h.clone()))).collect());
        }
        for (hook, claimed) in round.claimed {
            let hook = Arc::new(hook);
            for c in claimed {
                self.start(hook.clone(), c);
            }
        }
        if self.stats_due()
            && let Ok(stats) = self.store.queue_stats().await
        {
            self.report_queues(stats);
        }
        Ok(next)
    }

    /// Sets the backlog gauges of the hooks being sent to; every other hook reported before
    /// (its backlog went, or it was deactivated or deleted) reads 0.
    fn report_queues(&self, stats: Vec<haken_store::QueueStats>) {
        let live: HashMap<String, Arc<EventHook>> = self.held.lock().map(|h| h.1.clone()).unwrap_or_default();
        let now = Timestamp::now().millis();
        let mut reported = self.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut now_reported = std::collections::HashSet::new();
        for q in stats {
            let sent_to = live.get(&q.hook_id).is_some_and(|h| {
                h.status == HookStatus::Active && h.verification_status == VerificationStatus::Verified
            });
            if sent_to {
                let age = q.oldest_pending.map_or(0.0, |t| ((now - t).max(0) as f64) / 1000.0);
                metrics::queue(&q.hook_id, q.pending_events, age);
                now_reported.insert(q.hook_id);
            }
        }
        for gone in reported.difference(&now_reported) {
            metrics::queue(gone, 0, 0.0);
        }
        *reported = now_reported;
    }

    /// Sends `claimed`, which holds one of `hook`'s in-flight slots, on a task of its own.
    /// Not started (shutting down, or no runtime to run on: `false`), the slot goes back at
    /// once and the delivery waits for its lease to end.
    fn start(self: &Arc<Self>, hook: Arc<EventHook>, claimed: Claimed) -> bool {
        // The guard exists before the task does: a task dropped unpolled still frees the slot.
        let slot = Slot { dispatcher: self.clone(), hook_id: hook.id.clone() };
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the lock the shutdown takes the tasks with: nothing is started into a
        // set no one waits for.
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        while tasks.try_join_next().is_some() {}
        let me = self.clone();
        let send = async move {
            let _slot = slot;
            if let Err(e) = me.deliver(&hook, claimed).await {
                tracing::warn!(hook_id = %hook.id, error = %e, "Could not record a delivery attempt; its lease will expire and it will be sent again.");
            }
        };
        match self.runtime.get().cloned().or_else(|| tokio::runtime::Handle::try_current().ok()) {
            Some(runtime) => {
                tasks.spawn_on(send, &runtime);
                true
            }
            None => false,
        }
    }

    /// Takes every in-flight slot `hook` has free; returns how many.
    fn take_slots(&self, hook: &EventHook) -> u32 {
        let Ok(mut in_flight) = self.in_flight.lock() else { return 0 };
        let n = in_flight.entry(hook.id.clone()).or_insert(0);
        let free = hook.delivery.max_in_flight.max(1).saturating_sub(*n);
        *n += free;
        free
    }

    /// Gives back `n` slots of `hook_id` taken and not used (no wake-up: nothing was freed
    /// that was not free before the taking).
    fn put_slots(&self, hook_id: &str, n: u32) {
        if n > 0
            && let Ok(mut m) = self.in_flight.lock()
            && let Some(k) = m.get_mut(hook_id)
        {
            *k = k.saturating_sub(n);
        }
    }

    /// Sends one delivery and records the attempt.
    async fn deliver(&self, hook: &EventHook, claimed: Claimed) -> Result<(), haken_store::StoreError> {
        let delivery = claimed.delivery;
        let events = match (claimed.stored_events, claimed.inline_events) {
            (Some(stored), _) => stored,
            (None, Some(ev)) => ev
                .iter()
                .map(serde_json::value::to_raw_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| haken_store::StoreError::Corrupt(e.to_string()))?,
            (None, None) => self.store.delivery_events(&delivery.id).await?,
        };
        let source = envelope::source(&self.config.public_url, &hook.id);
        let body = envelope::body(&delivery, &source, &events);
        let started = Timestamp::now();
        let mut headers = verify::hook_headers(hook);
        headers.push(("Accept".into(), "application/json".into()));
        headers.push(("Content-Type".into(), "application/json".into()));
        let live: Vec<&str> = hook.live_secrets(started).map(|s| s.secret.as_str()).collect();
        headers.extend(signing::headers(live.into_iter(), &delivery.id, started.millis() / 1000, &body));
        let req = OutboundRequest {
            method: reqwest::Method::POST,
            url: hook.uri.clone(),
            headers,
            body: Some(body),
            timeout: Duration::from_millis(hook.delivery.timeout_ms),
            max_response: 1024,
        };
        let result = self.client.send(req).await;
        let latency_ms = u64::try_from((Timestamp::now().millis() - started.millis()).max(0)).unwrap_or(0);
        let attempt_no = delivery.attempts + 1;
        let mut attempt = Attempt {
            delivery_id: delivery.id.clone(),
            hook_id: hook.id.clone(),
            attempt: attempt_no,
            started,
            latency_ms,
            status_code: None,
            error: None,
            response_snippet: None,
            node: self.config.node_id.clone(),
        };
        let (failure, retry_after) = match &result {
            Ok(resp) => {
                attempt.status_code = Some(resp.status);
                if !resp.body.is_empty() {
                    attempt.response_snippet = Some(String::from_utf8_lossy(&resp.body).into_owned());
                }
                if (200..300).contains(&resp.status) {
                    (None, None)
                } else {
                    attempt.error = Some(format!("HTTP {}", resp.status));
                    let ra = retry::parse_retry_after(resp.headers.get("retry-after").and_then(|v| v.to_str().ok()));
                    (Some(Failure::Status(resp.status)), ra)
                }
            }
            Err(e) => {
                attempt.error = Some(e.to_string());
                let f = if matches!(e, SendError::Policy(_)) { Failure::Policy } else { Failure::Transport };
                (Some(f), None)
            }
        };
        metrics::attempt(&hook.id, latency_ms as f64 / 1000.0, failure.is_none());
        let now = Timestamp::now();
        let Some(failure) = failure else {
            self.store.record_delivered(attempt).await?;
            metrics::delivered(&hook.id, events.len() as u64);
            tracing::debug!(hook_id = %hook.id, delivery_id = %delivery.id, events = events.len(), latency_ms, "Delivered event batch.");
            return Ok(());
        };
        let reason = attempt.error.clone().unwrap_or_default();
        match retry::decide(hook.delivery.retry_policy, attempt_no, failure, retry_after, now) {
            Decision::RetryAt(at) => {
                metrics::retried(&hook.id);
                tracing::info!(hook_id = %hook.id, delivery_id = %delivery.id, attempt = attempt_no, error = %reason, retry_at = %at, "Delivery failed; retrying later.");
                self.store.finish_attempt(&attempt, &AttemptOutcome::Retry { at }, &[], None).await.map(|_| ())
            }
            decision => {
                metrics::failed(&hook.id);
                let ctx = EventContext::system("event hook delivery");
                let target = Target {
                    id: hook.id.clone(),
                    kind: "EventHook".into(),
                    alternate_id: None,
                    display_name: Some(hook.name.clone()),
                    detail_entry: None,
                    change_details: None,
                };
                let mut events = vec![
                    ctx.event("event_hook.delivery", "Event hook delivery failed", now)
                        .with_target(target.clone())
                        .with_outcome("FAILURE", Some(&truncate(&reason, 255)))
                        .with_debug("deliveryId", delivery.id.clone().into())
                        .with_debug("attempts", attempt_no.into()),
                ];
                let stop = if decision == Decision::StopHook {
                    events.push(
                        ctx.event(
                            "event_hook.deactivated",
                            "Event hook deactivated: the endpoint answered 410 Gone",
                            now,
                        )
                        .with_target(target),
                    );
                    Some(hook.id.as_str())
                } else {
                    None
                };
                tracing::warn!(hook_id = %hook.id, delivery_id = %delivery.id, attempts = attempt_no, error = %reason, "Delivery given up: dead letter.");
                self.store.finish_attempt(&attempt, &AttemptOutcome::Dead { reason }, &events, stop).await.map(|_| ())
            }
        }
    }
}

/// The dispatcher as the store's writers see it ([`haken_store::Intake`]): a delivery written
/// for a hook with room is leased to this node by the write itself and started here at once.
struct LocalIntake {
    /// Weak: the store holds the intake, and the dispatcher holds the store.
    dispatcher: Weak<Dispatcher>,
    node: String,
}

impl haken_store::Intake for LocalIntake {
    fn node(&self) -> &str {
        &self.node
    }

    fn reserve(&self, hook_id: &str, rev: i64, now: i64) -> Option<i64> {
        let d = self.dispatcher.upgrade()?;
        if d.stopping.load(Ordering::Acquire) {
            return None;
        }
        let hook = {
            let held = d.held.lock().ok()?;
            if held.0 != rev {
                return None;
            }
            held.1.get(hook_id)?.clone()
        };
        {
            // Older deliveries may be waiting for room: the round sends those first.
            let mut starved = d.starved.lock().ok()?;
            if starved.hooks.contains(hook_id) {
                return None;
            }
            let mut in_flight = d.in_flight.lock().ok()?;
            let n = in_flight.entry(hook_id.to_owned()).or_insert(0);
            if *n >= hook.delivery.max_in_flight.max(1) {
                starved.hooks.insert(hook_id.to_owned());
                starved.refused.insert(hook_id.to_owned());
                return None;
            }
            *n += 1;
        }
        // As a round's lease: never ending before the attempt can.
        let lease = now + i64::try_from(d.config.lease.as_millis()).unwrap_or(60_000);
        let timeout = i64::try_from(hook.delivery.timeout_ms).unwrap_or(30_000);
        Some(lease.max(now + timeout + 5_000))
    }

    fn release(&self, hook_id: &str) {
        if let Some(d) = self.dispatcher.upgrade() {
            d.put_slots(hook_id, 1);
            // A round may have found no room while the write held it.
            d.store.wake();
        }
    }

    fn hand_over(&self, claimed: Vec<Claimed>) {
        let Some(d) = self.dispatcher.upgrade() else { return };
        for c in claimed {
            let hook = d.held.lock().ok().and_then(|h| h.1.get(&c.delivery.hook_id).cloned());
            match hook {
                Some(hook) if !d.stopping.load(Ordering::Acquire) => {
                    let id = hook.id.clone();
                    if d.start(hook, c) {
                        metrics::handed_over(&id);
                    }
                }
                // Its lease ends and a round sends it (this node's, or another's).
                _ => d.put_slots(&c.delivery.hook_id, 1),
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Wakes this node's dispatcher when another node queues work (PostgreSQL `NOTIFY`).
async fn listen_for_other_nodes(pool: sqlx_pool::PgPool, store: Store) {
    loop {
        match sqlx_pool::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if listener.listen("haken_outbox").await.is_ok() {
                    while let Ok(n) = listener.recv().await {
                        // This node's own commits woke its dispatcher already.
                        if n.payload() != store.wake_tag() {
                            store.wake();
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN connection failed; relying on polling."),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The PostgreSQL types the listener needs, re-exported by the store.
mod sqlx_pool {
    pub use haken_store::pg::{PgListener, PgPool};
}
