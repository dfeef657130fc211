//! A client command's failure: one line on stderr, `error: <code>: <message>`, and an exit
//! code a script can branch on.

use std::process::ExitCode;

/// The exit codes of the client commands (docs/cli.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// 1: anything else (the server refused the input, no server answered, a local file...).
    Other = 1,
    /// 2: the command line does not parse, or its arguments contradict each other.
    Usage = 2,
    /// 3: no session (or token), an expired or revoked one, a wrong password.
    Unauthenticated = 3,
    /// 4: not found, or not allowed (the API answers 404 for what one may not learn about).
    NotFound = 4,
    /// 5: a conflict: the record changed since it was read, or already exists.
    Conflict = 5,
}

/// What went wrong, with the API's error code when a server answered one.
#[derive(Debug)]
pub(super) struct CliError {
    exit: Exit,
    code: String,
    message: String,
}

impl CliError {
    pub(super) fn new(exit: Exit, code: impl Into<String>, message: impl Into<String>) -> Self {
        CliError {
            exit,
            code: code.into(),
            message: message.into(),
        }
    }

    pub(super) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, "usage", message)
    }

    pub(super) fn other(code: impl Into<String>, message: impl Into<String>) -> CliError {
        CliError::new(Exit::Other, code, message)
    }

    /// An error the API answered: the exit code follows the HTTP status.
    pub(super) fn from_api(status: u16, code: &str, message: &str) -> CliError {
        let exit = match status {
            401 => Exit::Unauthenticated,
            403 | 404 => Exit::NotFound,
            409 => Exit::Conflict,
            _ => Exit::Other,
        };
        CliError::new(exit, code, message)
    }

    pub(super) fn code(&self) -> &str {
        &self.code
    }

    /// For a write sent with an idempotency key or a request id whose outcome is unknown (no
    /// answer, `unavailable`, a server error): names the key, so that the command can be run
    /// again with it and the servers apply the write at most once. Other errors are final
    /// and stay as they are.
    pub(super) fn retry_with(mut self, option: &str, key: &str) -> CliError {
        let uncertain = matches!(
            self.code.as_str(),
            "unavailable" | "unreachable" | "contended" | "internal"
        ) || self.code.starts_with("http_5");
        if uncertain {
            self.message = format!("{} (retry with {option} {key})", self.message);
        }
        self
    }

    /// Prints the error as one line (newlines in a message would break that: they become
    /// spaces) and gives the exit code.
    pub(super) fn report(&self) -> ExitCode {
        let message: String = self
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        eprintln!("error: {}: {}", self.code, message.trim());
        ExitCode::from(self.exit as u8)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_outcome_names_the_key_to_retry_with() {
        let lost = CliError::other("unavailable", "no leader").retry_with("--request-id", "K");
        assert_eq!(
            lost.to_string(),
            "unavailable: no leader (retry with --request-id K)"
        );
        let refused = CliError::from_api(400, "invalid", "bad start").retry_with("--x", "K");
        assert_eq!(refused.to_string(), "invalid: bad start");
    }
}
