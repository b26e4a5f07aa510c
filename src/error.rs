//! The crate's single error type.
//!
//! Every fallible ipckit call returns [`Error`]: an opaque value with a
//! [`kind()`](Error::kind), predicates for the common cases and an optional
//! [`source()`](std::error::Error::source). Messages are lowercase, give the
//! context first and the cause second, and never end with a period:
//! `cannot open mutex "jobs": segment holds a Semaphore, not a Mutex`.

use std::fmt;
use std::io;

/// A specialised `Result` whose error is [`ipckit::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Defines [`ErrorKind`] and its tables from one list, so that a new kind
/// cannot be forgotten in [`ErrorKind::ALL`] (which decodes kinds sent by
/// another process) or lack a text.
macro_rules! error_kinds {
    (
        $(#[$meta:meta])*
        pub enum ErrorKind {
            $(
                $(#[doc = $doc:literal])*
                $kind:ident = $text:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        pub enum ErrorKind {
            $(
                $(#[doc = $doc])*
                $kind,
            )*
        }

        impl ErrorKind {
            /// Every kind, in declaration order.
            const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];

            /// The kind's text: what [`Display`](fmt::Display) prints, and
            /// how the kind travels to other processes.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $text,)*
                }
            }
        }
    };
}

error_kinds! {
    /// What went wrong, in categories a program can act on.
    ///
    /// New kinds may be added in minor releases, so match with a wildcard arm.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum ErrorKind {
        /// The named object does not exist.
        NotFound = "not found",
        /// An object with that name already exists (creation is exclusive).
        AlreadyExists = "already exists",
        /// The caller lacks permission for the object.
        PermissionDenied = "permission denied",
        /// The name is empty, too long, or contains a character POSIX forbids.
        InvalidName = "invalid name",
        /// An argument is out of its domain (a zero size, a misaligned offset, …).
        InvalidArgument = "invalid argument",
        /// An index or byte range lies outside the object.
        OutOfRange = "out of range",
        /// The segment holds another kind of object (a `Mutex` opened as a `Queue`).
        WrongKind = "wrong object kind",
        /// The object holds another element type (`Value<u32>` opened as `Value<u64>`).
        WrongType = "wrong element type",
        /// The object was made by an incompatible version of ipckit.
        Incompatible = "incompatible layout version",
        /// The bytes in the segment are not a valid ipckit object (bad magic,
        /// checksum mismatch, truncated segment, impossible lengths).
        Corrupt = "corrupt object",
        /// The object's creator never finished initialising it (it may have died).
        Uninitialized = "object not initialised",
        /// A deadline passed before the operation could complete.
        Timeout = "timed out",
        /// A non-blocking operation could not proceed now.
        WouldBlock = "operation would block",
        /// A process died while holding the lock; the protected data may be
        /// inconsistent. See [`LockError::OwnerDied`](crate::sync::LockError).
        OwnerDied = "lock owner died",
        /// The barrier was broken by a timeout, an `abort()` or a `reset()`.
        BrokenBarrier = "barrier is broken",
        /// The operation would exceed a limit (a bounded semaphore released too
        /// often, a lock taken twice by the same thread).
        LimitExceeded = "limit exceeded",
        /// The object was closed.
        Closed = "closed",
        /// Encoding or decoding a value failed.
        Codec = "encoding error",
        /// The operation is not supported on this platform or object.
        Unsupported = "unsupported",
        /// A child process's function panicked; the message and location are
        /// in the error's text.
        Panicked = "child panicked",
        /// A child process ended without a result (killed, aborted, exited).
        ProcessDied = "child process died",
        /// A peer failed to prove the shared auth key (or this side failed to).
        AuthenticationFailed = "authentication failed",
        /// A task was cancelled.
        Cancelled = "cancelled",
        /// Another operating-system error; see `source()`.
        Io = "i/o error",
    }
}

impl ErrorKind {
    /// The kind whose [`as_str`](Self::as_str) is `s` (`Io` if unknown, as
    /// from a newer version).
    pub(crate) fn from_str_or_io(s: &str) -> ErrorKind {
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .unwrap_or(ErrorKind::Io)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every ipckit operation.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message (lowercase, no trailing period).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by an operating-system error; the kind is derived from it.
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::WouldBlock => ErrorKind::WouldBlock,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            message: context.into(),
            source: Some(Box::new(err)),
        }
    }

    /// Prefixes the message with more context: `"{context}: {message}"`.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = if self.message.is_empty() {
            context.to_string()
        } else {
            format!("{context}: {}", self.message)
        };
        self
    }

    /// Appends more detail to the message.
    pub(crate) fn context_suffix(mut self, suffix: &str) -> Error {
        self.message.push_str(suffix);
        self
    }

    /// A copy with the same kind and full text (the source becomes part of
    /// the message, since sources cannot be cloned).
    pub(crate) fn clone_error(&self) -> Error {
        Error::new(self.kind, self.to_string())
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The object or name does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// A deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// A `try_` operation could not proceed without blocking.
    pub fn is_would_block(&self) -> bool {
        self.kind == ErrorKind::WouldBlock
    }

    /// A lock's previous owner died while holding it.
    pub fn is_owner_died(&self) -> bool {
        self.kind == ErrorKind::OwnerDied
    }

    /// The object was closed.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// The barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.kind == ErrorKind::BrokenBarrier
    }

    /// A child process panicked.
    pub fn is_panicked(&self) -> bool {
        self.kind == ErrorKind::Panicked
    }

    /// A child process ended without a result.
    pub fn is_process_died(&self) -> bool {
        self.kind == ErrorKind::ProcessDied
    }

    /// A task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.kind == ErrorKind::Cancelled
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            if self.message.is_empty() {
                write!(f, "{source}")?;
            } else {
                write!(f, ": {source}")?;
            }
        }
        Ok(())
    }
}

/// Errors travel between processes (a child's `Result<T, ipckit::Error>`,
/// a manager's reply) as their kind and full text; the source becomes part
/// of the text.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.kind.as_str(), self.to_string()).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Error, D::Error> {
        let (kind, message) = <(String, String)>::deserialize(d)?;
        Ok(Error::new(ErrorKind::from_str_or_io(&kind), message))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::InvalidName | ErrorKind::InvalidArgument | ErrorKind::OutOfRange => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::Corrupt | ErrorKind::WrongKind | ErrorKind::WrongType => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::WouldBlock => io::ErrorKind::WouldBlock,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_context_then_cause() {
        let e = Error::io(
            "cannot open segment \"jobs\"",
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.is_not_found());
        let text = e.to_string();
        assert!(text.starts_with("cannot open segment \"jobs\": "), "{text}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn context_prefixes() {
        let e = Error::new(ErrorKind::WrongKind, "segment holds a Mutex, not a Queue")
            .context("cannot open queue \"jobs\"");
        assert_eq!(
            e.to_string(),
            "cannot open queue \"jobs\": segment holds a Mutex, not a Queue"
        );
    }

    #[test]
    fn converts_to_io_error() {
        let e: io::Error = Error::new(ErrorKind::Timeout, "lock timed out").into();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn every_kind_round_trips_through_its_string() {
        assert!(!ErrorKind::ALL.is_empty());
        let mut seen = std::collections::HashSet::new();
        for &kind in ErrorKind::ALL {
            let s = kind.as_str();
            assert!(seen.insert(s), "two kinds share the text {s:?}");
            assert_eq!(ErrorKind::from_str_or_io(s), kind, "{s:?}");
            assert_eq!(kind.to_string(), s);
            assert!(
                !s.is_empty() && s == s.to_lowercase() && !s.ends_with('.'),
                "{s:?}"
            );
        }
        assert_eq!(
            ErrorKind::from_str_or_io("from a newer version"),
            ErrorKind::Io
        );
    }

    #[test]
    fn errors_travel_with_kind_and_text() {
        for &kind in ErrorKind::ALL {
            let e = Error::io("cannot frob", io::Error::other("because")).context("outer");
            let e = Error { kind, ..e };
            let bytes = crate::codec::encode(&e).unwrap();
            let back: Error = crate::codec::decode(&bytes).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.to_string(), "outer: cannot frob: because");
        }
        let bytes = crate::codec::encode(&("from a newer version", "x")).unwrap();
        assert_eq!(
            crate::codec::decode::<Error>(&bytes).unwrap().kind(),
            ErrorKind::Io
        );
    }
}
