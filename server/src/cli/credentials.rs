//! The stored session: a JSON file (`user`, `token`, `servers`, `expires_ms`) that only its
//! owner may read or write. It is written whole to a temporary file made with mode 0600 in the
//! same directory (itself made 0700) and renamed into place, so no reader ever sees a partial
//! file nor a moment of wider permissions. A file that its group or others may read is refused
//! rather than used (as is one in a directory that they may write to): the token in it may
//! already have leaked, and silently tightening it would hide that. The file is opened once
//! and its permissions checked on the open handle.

use super::error::{CliError, Exit};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A logged-in session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Credentials {
    /// The user name.
    pub(super) user: String,
    /// The session token (`<user>.<64 hex digits>`).
    pub(super) token: String,
    /// The servers used at login, the one that answered first.
    pub(super) servers: Vec<String>,
    /// When the session expires (ms since the epoch).
    pub(super) expires_ms: i64,
}

/// Where the credentials live: `--credentials` or `$AGENDA_CREDENTIALS` (given), else
/// `$XDG_CONFIG_HOME/agenda/credentials`, else `~/.config/agenda/credentials`.
pub(super) fn path(given: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(config) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(config).join("agenda").join("credentials"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home)
            .join(".config")
            .join("agenda")
            .join("credentials")),
        None => Err(CliError::usage(
            "no credentials file: set HOME, XDG_CONFIG_HOME or AGENDA_CREDENTIALS, or pass --credentials",
        )),
    }
}

/// Reads the stored session; `None` if there is no file.
///
/// # Errors
/// The file (or its directory) may be read or changed by its group or others, or it does
/// not parse.
pub(super) fn load(path: &Path) -> Result<Option<Credentials>, CliError> {
    read(path, Check::Private)
}

/// Reads the stored session even from a file that others may read: only for `logout`, which
/// ends the session on the servers and removes the file — what anyone who found the file
/// shared should do.
pub(super) fn load_to_discard(path: &Path) -> Result<Option<Credentials>, CliError> {
    read(path, Check::Any)
}

/// Whether a shared file is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Private,
    Any,
}

fn read(path: &Path, check: Check) -> Result<Option<Credentials>, CliError> {
    // Opened once, and the permissions checked on the open file: what is read is what was
    // checked, even if the path is replaced meanwhile.
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(path, "reading", &error)),
    };
    if check == Check::Private {
        let metadata = file
            .metadata()
            .map_err(|error| file_error(path, "reading", &error))?;
        private(path, metadata.permissions().mode())?;
        let directory = directory(path);
        let metadata = std::fs::metadata(&directory)
            .map_err(|error| file_error(&directory, "reading", &error))?;
        // A sticky directory (`/tmp`) lets nobody else rename or remove the owner's file.
        let mode = metadata.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(insecure(
                &directory,
                mode,
                "its group or others may replace the file in it",
                "chmod 700",
            ));
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|error| file_error(path, "reading", &error))?;
    serde_json::from_str(&text).map(Some).map_err(|error| {
        CliError::other(
            "bad_credentials",
            format!("{} does not parse ({error}): log in again", path.display()),
        )
    })
}

/// Refuses a file that its group or others may read or write.
fn private(path: &Path, mode: u32) -> Result<(), CliError> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(insecure(
        path,
        mode,
        "may be read or changed by others",
        "chmod 600",
    ))
}

fn insecure(path: &Path, mode: u32, why: &str, fix: &str) -> CliError {
    let mode = mode & 0o777;
    CliError::other(
        "insecure_credentials",
        format!(
            "{} {why} (mode {mode:03o}): it is not used; run `{fix} {}` if nobody else could \
             have read it, else `logout` (it ends the session and removes the file) and log in \
             again",
            path.display(),
            path.display()
        ),
    )
}

/// The directory that holds the credentials file.
fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The stored session, which a command needs.
pub(super) fn require(path: &Path) -> Result<Credentials, CliError> {
    load(path)?.ok_or_else(|| {
        CliError::new(
            Exit::Unauthenticated,
            "unauthenticated",
            format!("not logged in (no {}): run `login` first", path.display()),
        )
    })
}

/// Writes the session (see the module's doc for how).
pub(super) fn store(path: &Path, credentials: &Credentials) -> Result<(), CliError> {
    let directory = directory(path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&directory)
        .map_err(|error| file_error(&directory, "creating", &error))?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    let temporary = directory.join(format!(".{name}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(credentials)
        .map_err(|error| CliError::other("internal", error.to_string()))?;
    // A temporary file left by a crash of an earlier process with this id would make
    // `create_new` fail for ever: it is nobody's now.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(file_error(&temporary, "removing", &error)),
    }
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(file_error(path, "writing", &error));
    }
    Ok(())
}

/// Removes the stored session (nothing to do if there is none).
pub(super) fn remove(path: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(file_error(path, "removing", &error)),
    }
}

fn file_error(path: &Path, doing: &str, error: &std::io::Error) -> CliError {
    CliError::other("file", format!("{doing} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let directory =
            std::env::temp_dir().join(format!("agenda-credentials-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        directory
    }

    #[test]
    fn a_stored_session_is_private_and_reads_back_and_a_shared_file_is_refused() {
        let directory = scratch("roundtrip");
        let path = directory.join("agenda").join("credentials");
        assert_eq!(load(&path).unwrap(), None);
        let credentials = Credentials {
            user: "alice".into(),
            token: "alice.00".into(),
            servers: vec!["http://127.0.0.1:8081".into()],
            expires_ms: 1,
        };
        store(&path, &credentials).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load(&path).unwrap(), Some(credentials.clone()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(load(&path).unwrap_err().code(), "insecure_credentials");
        // `logout` may still read it, to end the session.
        assert_eq!(load_to_discard(&path).unwrap(), Some(credentials.clone()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A directory others may write to: they could swap the file.
        let parent = path.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(load(&path).unwrap_err().code(), "insecure_credentials");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A temporary file left by a crash does not stop the next login.
        let stale = parent.join(format!(".credentials.{}.tmp", std::process::id()));
        std::fs::write(&stale, "partial").unwrap();
        store(&path, &credentials).unwrap();
        assert!(!stale.exists());
        assert_eq!(load(&path).unwrap(), Some(credentials));
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
