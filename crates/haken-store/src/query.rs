//! Query descriptions the API layer hands to the store: only predicates that indexes serve.
//! Everything else (full filters, keyword search) is evaluated by the caller on the rows.

/// Narrowing of a users listing that the store can answer from its indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserQuery {
    /// Only users after this position (0 = from the start).
    pub after_seq: i64,
    pub limit: i64,
    /// Any of these statuses.
    pub statuses: Option<Vec<String>>,
    pub id: Option<String>,
    /// Lower-cased login.
    pub login_lower: Option<String>,
    /// `lastUpdated` bounds, inclusive, in ms.
    pub updated_from: Option<i64>,
    pub updated_to: Option<i64>,
}

/// Position in the System Log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCursor {
    /// Polling: by commit order — (transaction id, seq) on PostgreSQL, seq on SQLite (whose
    /// single writer commits in seq order; the transaction id is 0 there).
    Poll(i64, i64),
    /// Bounded: by `published`, then persistence order.
    Published(i64, i64),
}

/// One batch request of the System Log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    /// Polling queries read in persistence order and never skip a late commit; bounded
    /// queries read in `published` order between `since` and `until`.
    pub polling: bool,
    pub since: i64,
    pub until: i64,
    pub after: Option<LogCursor>,
    pub descending: bool,
    pub limit: i64,
}
