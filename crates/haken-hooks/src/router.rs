//! Event routing: which hooks receive an event. The store calls it inside the write
//! transaction, with the set of active and verified hooks rebuilt whenever their revision
//! changes, so routing is decided atomically with the change that produced the event.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use haken_core::LogEvent;
use haken_core::expr::Expression;
use haken_core::hook::EventHook;
use haken_store::EventRouter;

/// A hook's event types and filters, each expression parsed once.
pub struct Matcher {
    id: String,
    types: HashSet<String>,
    /// `None`: the expression no longer parses, and the type is filtered out entirely.
    filters: HashMap<String, Option<Expression>>,
}

impl Matcher {
    pub fn new(hook: &EventHook) -> Self {
        Matcher {
            id: hook.id.clone(),
            types: hook.event_types.iter().cloned().collect(),
            // Expressions were validated when the hook was saved; one that no longer parses
            // (a newer grammar rolled back) filters everything out rather than everything in.
            filters: hook
                .filters
                .iter()
                .flatten()
                .map(|f| (f.event.clone(), Expression::parse(&f.expression).ok()))
                .collect(),
        }
    }

    /// Whether the hook takes `event` (its types and its filter), whatever its status.
    pub fn matches(&self, event: &LogEvent) -> bool {
        self.matches_with(event, &mut None)
    }

    /// As [`Matcher::matches`]; `json` keeps the event's JSON for the next hook's filter.
    fn matches_with(&self, event: &LogEvent, json: &mut Option<serde_json::Value>) -> bool {
        if !self.types.contains(&event.event_type) {
            return false;
        }
        match self.filters.get(&event.event_type) {
            None => true,
            Some(None) => false,
            Some(Some(expr)) => expr.matches(json.get_or_insert_with(|| event.to_value())),
        }
    }
}

struct State {
    revision: i64,
    hooks: Vec<Matcher>,
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

impl EventRouter for HookRouter {
    fn revision(&self) -> i64 {
        self.state.read().map(|s| s.revision).unwrap_or(-1)
    }

    fn refresh(&self, revision: i64, hooks: Vec<EventHook>) {
        let compiled = hooks.iter().filter(|h| h.receives()).map(Matcher::new).collect();
        if let Ok(mut s) = self.state.write() {
            *s = State { revision, hooks: compiled };
        }
    }

    fn route(&self, event: &LogEvent) -> Vec<String> {
        let Ok(state) = self.state.read() else { return Vec::new() };
        let mut json = None;
        let mut out = Vec::new();
        for h in &state.hooks {
            if h.matches_with(event, &mut json) {
                out.push(h.id.clone());
            }
        }
        out
    }
}
