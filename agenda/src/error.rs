//! What can go wrong, one variant per decision the caller makes.

/// An agenda operation that did not happen.
///
/// The variants sort failures by what the caller does next: fix the input
/// ([`Invalid`](AgendaError::Invalid)), log in ([`Unauthenticated`](AgendaError::Unauthenticated)),
/// give up ([`Forbidden`](AgendaError::Forbidden), [`NotFound`](AgendaError::NotFound),
/// [`AlreadyExists`](AgendaError::AlreadyExists)), or retry later
/// ([`Contended`](AgendaError::Contended), [`Unavailable`](AgendaError::Unavailable)).
/// [`Corrupt`](AgendaError::Corrupt) means a stored record does not decode: an operator's problem,
/// never the caller's.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AgendaError {
    /// The request breaks a rule of the input (a name's alphabet, an end before its start).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field that is wrong.
        field: &'static str,
        /// Why, for people.
        reason: String,
    },
    /// No valid session: the token is missing, unknown, revoked or expired; or the password is wrong.
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// The caller is known but may not do this (edit another user's event, manage a group as a member).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The record does not exist (or the caller may not learn that it does).
    #[error("not found: {0}")]
    NotFound(String),
    /// The record to create exists already (a user name or group id is taken).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The record changed since the version the caller said it read (`if_sequence`): nothing
    /// was written; read it again and decide.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Other writers changed what the operation read, every time it retried: nothing was written.
    #[error("too much contention on {0}: retry")]
    Contended(String),
    /// The store did not answer (no leader, timeout). The write may or may not have happened,
    /// unless the message says it was refused before being proposed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not decode. Nothing was written.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl AgendaError {
    /// A stable code for programs (the HTTP adapter maps it to a status).
    pub fn code(&self) -> &'static str {
        match self {
            AgendaError::Invalid { .. } => "invalid",
            AgendaError::Unauthenticated(_) => "unauthenticated",
            AgendaError::Forbidden(_) => "forbidden",
            AgendaError::NotFound(_) => "not_found",
            AgendaError::AlreadyExists(_) => "already_exists",
            AgendaError::Conflict(_) => "conflict",
            AgendaError::Contended(_) => "contended",
            AgendaError::Unavailable(_) => "unavailable",
            AgendaError::Corrupt { .. } => "corrupt",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> AgendaError {
        AgendaError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Why the store did not carry out a read or a transaction.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// No answer in time, or no leader: the outcome of a write is unknown.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Refused before anything was proposed (too large, not permitted): retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
}

impl From<StoreError> for AgendaError {
    fn from(error: StoreError) -> AgendaError {
        match error {
            StoreError::Unavailable(_) => AgendaError::Unavailable(error.to_string()),
            // Refused before anything was proposed (too large for an entry or a value): the
            // request's fault, and nothing was written.
            StoreError::Refused(reason) => AgendaError::invalid("request", reason),
        }
    }
}
