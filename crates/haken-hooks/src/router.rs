//! Event routing: which hooks receive an event. The store calls it inside the write
//! transaction, with the set of active and verified hooks rebuilt whenever their revision
//! changes, so routing is decided atomically with the change that produced the event.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use haken_core::LogEvent;
use haken_core::expr::Expression;
use haken_core::hook::EventHook;
use haken_store::EventRouter;

struct Compiled {
    id: String,
    types: HashSet<String>,
    /// `None`: the expression no longer parses, and the type is filtered out entirely.
    filters: HashMap<String, Option<Expression>>,
}

struct State {
    revision: i64,
    hooks: Vec<Compiled>,
}

/// The router the store consults.
pub struct HookRouter {
    state: RwLock<State>,
}

impl Default for HookRouter {
    fn default() -> Self {
        HookRouter { state: RwLock::new(State { revision: -1, hooks: Vec::new() }) }
    }
}

impl HookRouter {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether `hook` takes `event` (its types and its filter), whatever its status. Used by
/// routing and by backfill.
pub fn hook_matches(hook: &EventHook, event: &LogEvent) -> bool {
    if !hook.event_types.contains(&event.event_type) {
        return false;
    }
    let filter = hook.filters.iter().flatten().find(|f| f.event == event.event_type);
    match filter {
        None => true,
        Some(f) => Expression::parse(&f.expression).is_ok_and(|e| e.matches(&event.to_value())),
    }
}

impl EventRouter for HookRouter {
    fn revision(&self) -> i64 {
        self.state.read().map(|s| s.revision).unwrap_or(-1)
    }

    fn refresh(&self, revision: i64, hooks: Vec<EventHook>) {
        let compiled = hooks
            .into_iter()
            .filter(EventHook::receives)
            .map(|h| Compiled {
                types: h.event_types.iter().cloned().collect(),
                // Expressions were validated when the hook was saved; one that no longer parses
                // (a newer grammar rolled back) filters everything out rather than everything in.
                filters: h
                    .filters
                    .iter()
                    .flatten()
                    .map(|f| (f.event.clone(), Expression::parse(&f.expression).ok()))
                    .collect(),
                id: h.id,
            })
            .collect();
        if let Ok(mut s) = self.state.write() {
            *s = State { revision, hooks: compiled };
        }
    }

    fn route(&self, event: &LogEvent) -> Vec<String> {
        let Ok(state) = self.state.read() else { return Vec::new() };
        let mut json = None;
        let mut out = Vec::new();
        for h in &state.hooks {
            if !h.types.contains(&event.event_type) {
                continue;
            }
            match h.filters.get(&event.event_type) {
                None => {}
                Some(None) => continue,
                Some(Some(expr)) => {
                    let doc = json.get_or_insert_with(|| event.to_value());
                    if !expr.matches(doc) {
                        continue;
                    }
                }
            }
            out.push(h.id.clone());
        }
        out
    }
}
