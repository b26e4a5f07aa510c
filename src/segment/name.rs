//! Segment names: validated before any system call.
//!
//! A name is what users (and Python) pass: `"jobs"` is the POSIX object
//! `/jobs`, i.e. the file `/dev/shm/jobs`. One leading `/` is accepted and
//! ignored, as POSIX spells it; any other `/` is refused.

use std::ffi::CString;

use crate::error::{Error, ErrorKind, Result};

/// Longest name accepted, in bytes, not counting a leading `/` (Linux's
/// `NAME_MAX` for a file in `/dev/shm`).
pub const MAX_NAME_LEN: usize = 255;

/// Checks `name` and returns it without a leading `/`.
pub(crate) fn validate(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid segment name {name:?}: {why}"),
        ))
    };
    if bare.is_empty() {
        return bad("it is empty");
    }
    if bare.len() > MAX_NAME_LEN {
        return bad(&format!(
            "it is {} bytes long, the limit is {MAX_NAME_LEN}",
            bare.len()
        ));
    }
    if bare.contains('/') {
        return bad("it contains '/' after the first character");
    }
    if bare.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if bare == "." || bare == ".." {
        return bad("'.' and '..' are not object names");
    }
    Ok(bare)
}

/// The POSIX object name (`/name`) as a C string, after validation.
pub(crate) fn posix_name(name: &str) -> Result<CString> {
    let bare = validate(name)?;
    // Cannot fail: `validate` rejected NUL bytes.
    CString::new(format!("/{bare}")).map_err(|_| {
        Error::new(
            ErrorKind::InvalidName,
            format!("invalid segment name {name:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_python_style_names() {
        assert_eq!(validate("jobs").unwrap(), "jobs");
        assert_eq!(validate("/jobs").unwrap(), "jobs");
        assert_eq!(validate("psm_1a2b3c").unwrap(), "psm_1a2b3c");
        assert_eq!(posix_name("jobs").unwrap().to_str().unwrap(), "/jobs");
        assert!(validate(&"x".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for name in ["", "/", "a/b", "//a", ".", "..", "a\0b"] {
            let e = validate(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidName, "{name:?}");
        }
        let e = validate(&"x".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidName);
        assert!(e.to_string().contains("the limit is 255"), "{e}");
    }
}
