//! State store errors.

/// Why a state store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The database could not be opened or created.
    #[error("cannot open the state store `{url}`: {reason}")]
    Open {
        /// The URL, password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("state store migration failed: {0}")]
    Migrate(String),
    /// A query failed (the database went away, a constraint).
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value could not be read back (a row written by something else).
    #[error("state store holds a value it cannot read: {0}")]
    Corrupt(String),
    /// Creating this would go past a `[limits]` cap.
    #[error("{0}")]
    LimitReached(String),
}

impl StateError {
    /// A stable code for logs and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::Open { .. } => "state_open",
            StateError::Migrate(_) => "state_migrate",
            StateError::Query(_) => "state_query",
            StateError::Corrupt(_) => "state_corrupt",
            StateError::LimitReached(_) => "limit_reached",
        }
    }
}

impl From<serde_json::Error> for StateError {
    fn from(e: serde_json::Error) -> Self {
        StateError::Corrupt(e.to_string())
    }
}
