//! The crate's single error type.
//!
//! Every fallible ipckit call returns [`Error`]: an opaque value with a
//! [`kind()`](Error::kind) and predicates for the common cases. Messages are
//! lowercase, give the context first and the cause second, and never end
//! with a period: `cannot open mutex "jobs": segment holds a Semaphore, not a
//! Mutex`.
//!
//! # Display or source, never both
//!
//! An error reporter (`anyhow`, `eyre`, `fn main() -> Result`) prints an
//! error's [`Display`](fmt::Display) and then walks
//! [`source()`](std::error::Error::source), printing each cause. A cause that
//! is in both is printed twice, so ipckit follows one rule: **the cause is
//! part of the text, and `source()` is `None`.** `Display` is always the
//! whole story — `cannot open segment "jobs": No such file or directory (os
//! error 2)` — whether it is printed with `{}`, by a reporter, or in another
//! process: errors travel between processes (a child's result, a pool task,
//! a manager's reply) as their kind and this text, and arrive exactly as
//! they left, which a split between text and source could not do. Every
//! constructor keeps to it: [`Error::new`], the OS-error constructor, the
//! `From<std::io::Error>` conversion (which keeps the OS error code, see
//! [`raw_os_error`](Error::raw_os_error)), adding context, and decoding an
//! error sent by another process. Programs that need to act on a cause match
//! on [`kind()`](Error::kind), not on the text.

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
        /// A holder died (a process killed, even by SIGKILL) or panicked
        /// while holding the lock; the protected data may be inconsistent.
        /// See [`LockError::OwnerDied`](crate::sync::LockError::OwnerDied).
        OwnerDied = "lock owner died",
        /// The barrier was broken by a timeout, an `abort()` or a `reset()`.
        BrokenBarrier = "barrier is broken",
        /// The operation would exceed a limit (a message over a size limit,
        /// `task_done` called more often than items were put, a bounded
        /// semaphore released too often, a lock taken twice by the same
        /// thread).
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
        /// Another operating-system error; the error's text names it.
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

    /// The kind of an operating-system error.
    fn of_io(kind: io::ErrorKind) -> ErrorKind {
        match kind {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::WouldBlock => ErrorKind::WouldBlock,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every ipckit operation.
///
/// Its text is the whole message, cause included, and
/// [`source()`](std::error::Error::source) is `None` (see the
/// [module docs](self)).
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The OS error code of the cause, if it was one (local only: it does
    /// not travel to other processes, the text does).
    os_error: Option<i32>,
}

impl Error {
    /// An error of `kind` with a message (lowercase, no trailing period).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            os_error: None,
        }
    }

    /// An error caused by an operating-system error: the text is
    /// `"{context}: {err}"`, the kind is derived from `err`.
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Error {
        let context = context.into();
        let message = if context.is_empty() {
            err.to_string()
        } else {
            format!("{context}: {err}")
        };
        Error {
            kind: ErrorKind::of_io(err.kind()),
            message,
            os_error: err.raw_os_error(),
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

    /// A copy with the same kind, text and OS error code.
    pub(crate) fn clone_error(&self) -> Error {
        Error {
            kind: self.kind,
            message: self.message.clone(),
            os_error: self.os_error,
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operating-system error code (`errno`) that caused this error, if
    /// one did and it happened in this process (an error received from
    /// another process keeps only its kind and text).
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os_error
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
        f.write_str(&self.message)
    }
}

/// Errors travel between processes (a child's `Result<T, ipckit::Error>`,
/// a manager's reply) as their kind and full text.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.kind.as_str(), &self.message).serialize(s)
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
        if let Some(code) = self.os_error {
            d.field("os_error", &code);
        }
        d.finish()
    }
}

/// `source()` is `None`: the cause is already in the text (see the
/// [module docs](self)).
impl std::error::Error for Error {}

/// An operating-system error as an ipckit error, so that `?` works on
/// `std::io` calls in functions returning [`ipckit::Result`](Result).
///
/// The kind follows the I/O error's: `NotFound`, `AlreadyExists`,
/// `PermissionDenied`, `TimedOut` → [`Timeout`](ErrorKind::Timeout),
/// `WouldBlock`, `InvalidInput` → [`InvalidArgument`](ErrorKind::InvalidArgument),
/// `Unsupported`, and [`Io`](ErrorKind::Io) for the rest. The text is the
/// I/O error's, and [`raw_os_error`](Error::raw_os_error) keeps its code. An
/// I/O error made from an ipckit error (`io::Error::from(e)`) converts back
/// to that very error, kind included.
///
/// ```
/// use ipckit::ErrorKind;
///
/// fn read_config(path: &str) -> ipckit::Result<Vec<u8>> {
///     let bytes = std::fs::read(path)?;
///     Ok(bytes)
/// }
///
/// let e = read_config("/nonexistent/ipckit.conf").unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::NotFound);
/// assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
/// assert!(e.to_string().contains("(os error 2)"), "{e}");
/// // The cause is in the text, so it is not also the source.
/// assert!(std::error::Error::source(&e).is_none());
/// ```
///
/// So `main` can return [`ipckit::Result`](Result) and mix ipckit and
/// `std::io` calls:
///
/// ```no_run
/// fn main() -> ipckit::Result<()> {
///     ipckit::init();
///     let config = std::fs::read("jobs.conf")?;
///     let segment = ipckit::Segment::create("jobs", config.len().max(1))?;
///     # drop(segment);
///     Ok(())
/// }
/// ```
impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        match err.downcast::<Error>() {
            Ok(e) => e,
            Err(err) => Error::io(String::new(), err),
        }
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
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let cause = io::Error::from_raw_os_error(libc::ENOENT).to_string();
        assert_eq!(
            e.to_string(),
            format!("cannot open segment \"jobs\": {cause}")
        );
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
        assert_eq!(e.to_string(), "lock timed out");
    }

    #[test]
    fn converts_from_io_error() {
        let cases = [
            (io::ErrorKind::NotFound, ErrorKind::NotFound),
            (io::ErrorKind::AlreadyExists, ErrorKind::AlreadyExists),
            (io::ErrorKind::PermissionDenied, ErrorKind::PermissionDenied),
            (io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (io::ErrorKind::WouldBlock, ErrorKind::WouldBlock),
            (io::ErrorKind::InvalidInput, ErrorKind::InvalidArgument),
            (io::ErrorKind::Unsupported, ErrorKind::Unsupported),
            (io::ErrorKind::BrokenPipe, ErrorKind::Io),
            (io::ErrorKind::Other, ErrorKind::Io),
        ];
        for (io_kind, kind) in cases {
            let e = Error::from(io::Error::new(io_kind, "the cause"));
            assert_eq!(e.kind(), kind, "{io_kind:?}");
            assert_eq!(e.to_string(), "the cause");
            assert_eq!(e.raw_os_error(), None);
        }
        let e = Error::from(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));

        // `?` in a function returning ipckit::Result.
        fn read(path: &str) -> Result<Vec<u8>> {
            Ok(std::fs::read(path)?)
        }
        assert!(read("/nonexistent/ipckit-test").unwrap_err().is_not_found());
    }

    #[test]
    fn io_round_trip_keeps_the_ipckit_error() {
        let e = Error::new(ErrorKind::OwnerDied, "the owner died").context("cannot lock");
        let io_err = io::Error::from(e);
        assert_eq!(io_err.kind(), io::ErrorKind::Other);
        let back = Error::from(io_err);
        assert_eq!(back.kind(), ErrorKind::OwnerDied);
        assert_eq!(back.to_string(), "cannot lock: the owner died");
    }

    /// Prints `e` the way error reporters (anyhow, eyre, `main`'s `Result`)
    /// do: its text, then every `source()` in turn.
    fn report(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut levels = Vec::new();
        let mut next = Some(e);
        while let Some(level) = next {
            levels.push(level.to_string());
            next = level.source();
        }
        levels
    }

    #[test]
    fn reporters_never_print_a_cause_twice() {
        let cause = || io::Error::from_raw_os_error(libc::ENOENT);
        let cause_text = cause().to_string();
        let sent: Error = {
            let e = Error::io("cannot open segment \"jobs\"", cause());
            crate::codec::decode(&crate::codec::encode(&e).unwrap()).unwrap()
        };
        let errors: Vec<(&str, Box<dyn std::error::Error + Send + Sync>)> = vec![
            (
                "io",
                Box::new(Error::io("cannot open segment \"jobs\"", cause())),
            ),
            ("io without context", Box::new(Error::io("", cause()))),
            ("from io", Box::new(Error::from(cause()))),
            (
                "context",
                Box::new(
                    Error::io("cannot open segment \"jobs\"", cause()).context("cannot start"),
                ),
            ),
            (
                "context suffix",
                Box::new(Error::io("cannot open", cause()).context_suffix(" (retry later)")),
            ),
            (
                "clone",
                Box::new(Error::io("cannot open", cause()).clone_error()),
            ),
            ("sent to another process", Box::new(sent)),
            (
                "as an io::Error",
                Box::new(io::Error::from(Error::io("cannot open", cause()))),
            ),
        ];
        for (what, e) in &errors {
            let levels = report(e.as_ref());
            let printed = levels.join(": ");
            assert_eq!(
                printed.matches(&cause_text).count(),
                1,
                "{what}: the cause is printed {} times in {printed:?}",
                printed.matches(&cause_text).count()
            );
            for pair in levels.windows(2) {
                assert!(
                    !pair[0].contains(&pair[1]),
                    "{what}: {:?} repeats its source {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
        let plain = Error::new(ErrorKind::Closed, "the queue is closed").context("cannot put");
        assert_eq!(report(&plain), ["cannot put: the queue is closed"]);
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
