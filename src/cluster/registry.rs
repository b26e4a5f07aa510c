//! Functions that may travel between programs, by name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::pool::TaskValue;

/// Runs a registered function on encoded bytes: `(payload, chunk)` → the
/// encoded result, or an error for undecodable bytes. A panic propagates
/// (the worker catches it).
type Call = dyn Fn(&[u8], bool) -> Result<Vec<u8>> + Send + Sync;

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) arg_type: &'static str,
    pub(crate) ret_type: &'static str,
    pub(crate) call: Arc<Call>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: fn({}) -> {}",
            self.name, self.arg_type, self.ret_type
        )
    }
}

/// The functions a [`ClusterPool`](super::ClusterPool) may submit and a
/// [`Worker`](super::Worker) may run, each under a name both sides agree on.
///
/// ```
/// use ipckit::cluster::Registry;
///
/// fn square(x: u64) -> u64 { x * x }
/// fn greet(name: String) -> String { format!("hello, {name}") }
///
/// let registry = Registry::new()
///     .register("square", square)
///     .register("greet", greet);
/// assert_eq!(registry.names(), ["greet", "square"]);
/// // The same, named after the functions:
/// let same = ipckit::registry![square, greet];
/// assert_eq!(same.names(), registry.names());
/// ```
///
/// Registering a name twice is reported when the registry is used (by
/// `ClusterPool::connect` or `Worker::start`), not by a panic.
#[derive(Clone, Default)]
pub struct Registry {
    by_name: HashMap<String, Entry>,
    /// Function address → names: `submit(f, …)` finds `f`'s name here.
    by_addr: HashMap<usize, Vec<String>>,
    problems: Vec<String>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `f` under `name`.
    pub fn register<A: TaskValue, R: TaskValue>(mut self, name: &str, f: fn(A) -> R) -> Registry {
        if name.is_empty() || name.len() > super::wire::MAX_NAME {
            self.problems.push(format!(
                "the function name {name:?} must be 1 to {} bytes",
                super::wire::MAX_NAME
            ));
            return self;
        }
        if self.by_name.contains_key(name) {
            self.problems
                .push(format!("the function name {name:?} is registered twice"));
            return self;
        }
        let call = move |payload: &[u8], chunk: bool| -> Result<Vec<u8>> {
            if chunk {
                let args: Vec<A> = crate::codec::decode(payload)?;
                let out: Vec<R> = args.into_iter().map(f).collect();
                crate::codec::encode(&out)
            } else {
                let arg: A = crate::codec::decode(payload)?;
                crate::codec::encode(&f(arg))
            }
        };
        self.by_addr
            .entry(f as usize)
            .or_default()
            .push(name.to_owned());
        self.by_name.insert(
            name.to_owned(),
            Entry {
                name: name.to_owned(),
                arg_type: std::any::type_name::<A>(),
                ret_type: std::any::type_name::<R>(),
                call: Arc::new(call),
            },
        );
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Whether the registry is usable: no name given twice or malformed.
    pub(crate) fn check(&self) -> Result<()> {
        match self.problems.first() {
            None => Ok(()),
            Some(p) => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the cluster registry is not usable: {p}"),
            )),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name)
    }

    /// The entry of the function at `addr` whose types are `A` and `R`.
    ///
    /// Rust does not promise one address per function: an optimised build
    /// may give a small function a local copy in each codegen unit that
    /// uses it (then `submit` gets an address that was never registered),
    /// and may merge identical functions into one (then one address has
    /// several names). Both are errors naming the remedies, never a guess:
    /// a guess could run another function.
    pub(crate) fn by_function<A: 'static, R: 'static>(&self, addr: usize) -> Result<&Entry> {
        let (a, r) = (std::any::type_name::<A>(), std::any::type_name::<R>());
        let mut at_addr: Vec<&Entry> = self
            .by_addr
            .get(&addr)
            .into_iter()
            .flatten()
            .filter_map(|n| self.by_name.get(n))
            .filter(|e| e.arg_type == a && e.ret_type == r)
            .collect();
        at_addr.sort_unstable_by(|x, y| x.name.cmp(&y.name));
        match at_addr.as_slice() {
            [one] => Ok(one),
            [] => {
                let mut same: Vec<&str> = self
                    .by_name
                    .values()
                    .filter(|e| e.arg_type == a && e.ret_type == r)
                    .map(|e| e.name.as_str())
                    .collect();
                same.sort_unstable();
                let hint = if same.is_empty() {
                    String::new()
                } else {
                    format!(
                        " If it is one of the registered {} ({}), an optimised build copied \
                         it: declare it #[inline(never)] (one address per function), or \
                         submit it by name with ClusterPool::submit_named",
                        if same.len() == 1 {
                            "function of these types"
                        } else {
                            "functions of these types"
                        },
                        same.join(", ")
                    )
                };
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "this fn({a}) -> {r} is not in the cluster registry: add it with \
                         Registry::register(\"name\", f) on the submitter and the workers.{hint}"
                    ),
                ))
            }
            many => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "this fn({a}) -> {r} is registered under several names ({}): the \
                     compiler merged identical functions into one; submit it by name with \
                     ClusterPool::submit_named",
                    many.iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The entry named `name`, checked to be a `fn(A) -> R`.
    pub(crate) fn by_name_typed<A: 'static, R: 'static>(&self, name: &str) -> Result<&Entry> {
        let (a, r) = (std::any::type_name::<A>(), std::any::type_name::<R>());
        match self.by_name.get(name) {
            Some(e) if e.arg_type == a && e.ret_type == r => Ok(e),
            Some(e) => Err(Error::new(
                ErrorKind::WrongType,
                format!(
                    "{name:?} is registered as fn({}) -> {}, not fn({a}) -> {r}",
                    e.arg_type, e.ret_type
                ),
            )),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("no function named {name:?} is in the cluster registry"),
            )),
        }
    }
}

/// A [`Registry`] of functions, each under its own name:
/// `registry![square, add]` is `Registry::new().register("square", square).register("add", add)`.
#[macro_export]
macro_rules! registry {
    ($($f:ident),* $(,)?) => {
        $crate::cluster::Registry::new()$(.register(stringify!($f), $f))*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }
    fn neg(x: i32) -> i32 {
        -x
    }

    #[test]
    fn lookup_and_calls() {
        let r = Registry::new()
            .register("square", square)
            .register("neg", neg);
        r.check().unwrap();
        let e = r
            .by_function::<u64, u64>(square as fn(u64) -> u64 as usize)
            .unwrap();
        assert_eq!(e.name, "square");
        let out = (e.call)(&crate::codec::encode(&9u64).unwrap(), false).unwrap();
        assert_eq!(crate::codec::decode::<u64>(&out).unwrap(), 81);
        let out = (e.call)(&crate::codec::encode(&vec![1u64, 2, 3]).unwrap(), true).unwrap();
        assert_eq!(crate::codec::decode::<Vec<u64>>(&out).unwrap(), [1, 4, 9]);
        assert_eq!(
            (e.call)(&[0xff; 12], false).unwrap_err().kind(),
            ErrorKind::Codec
        );
        let unknown = r.by_function::<u8, u8>(12345).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        // Another address of registered types: never a guess, a hint.
        let e = r.by_function::<i32, i32>(12345).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string().contains("#[inline(never)]") && e.to_string().contains("neg"),
            "{e}"
        );
        // One address under two names (as after merging).
        let merged = Registry::new().register("a", square).register("b", square);
        let e = merged
            .by_function::<u64, u64>(square as fn(u64) -> u64 as usize)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("submit_named"), "{e}");
        assert_eq!(merged.by_name_typed::<u64, u64>("b").unwrap().name, "b");
        assert_eq!(
            merged.by_name_typed::<u8, u64>("b").unwrap_err().kind(),
            ErrorKind::WrongType
        );
        assert_eq!(
            merged.by_name_typed::<u64, u64>("c").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let twice = Registry::new().register("f", square).register("f", square);
        assert_eq!(
            twice.check().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
