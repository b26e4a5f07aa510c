//! Connecting to a NATS server: the options ([`Connect`]) and the shared
//! connection ([`Cluster`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::nats_error;
use super::runtime::Runtime;
use crate::error::{Error, ErrorKind, Result};

/// How to reach and authenticate to a NATS server: the server's own
/// mechanisms, passed through to [`async-nats`](https://docs.rs/async-nats).
///
/// Secrets (password, token, nkey seed) are kept in zeroized memory and
/// never printed by `Debug`.
#[derive(Clone)]
pub struct Connect {
    urls: Vec<String>,
    user: Option<(String, Zeroizing<String>)>,
    token: Option<Zeroizing<String>>,
    nkey: Option<Zeroizing<String>>,
    credentials_file: Option<PathBuf>,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
    name: Option<String>,
    timeout: Duration,
    request_timeout: Duration,
    replicas: usize,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "-" };
        f.debug_struct("Connect")
            .field("urls", &self.urls)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("password", &redacted(self.user.is_some()))
            .field("token", &redacted(self.token.is_some()))
            .field("nkey", &redacted(self.nkey.is_some()))
            .field("credentials_file", &self.credentials_file)
            .field("require_tls", &self.require_tls)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Connect {
    /// A server URL (`nats://host:4222`, `tls://host:4222`), or several
    /// separated by commas (the members of a cluster: the client fails over
    /// between them).
    pub fn new(urls: &str) -> Connect {
        Connect {
            urls: urls
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            user: None,
            token: None,
            nkey: None,
            credentials_file: None,
            root_certificates: Vec::new(),
            client_certificate: None,
            require_tls: false,
            name: None,
            timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            replicas: 1,
        }
    }

    /// How many servers of a JetStream cluster keep a copy of each stream
    /// and bucket this connection makes (default 1; 3 on a 3-node cluster,
    /// so that losing one node loses nothing). Streams that already exist
    /// keep theirs.
    pub fn replicas(mut self, n: usize) -> Connect {
        self.replicas = n.clamp(1, 5);
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_password(mut self, user: &str, password: &str) -> Connect {
        self.user = Some((user.to_owned(), Zeroizing::new(password.to_owned())));
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: &str) -> Connect {
        self.token = Some(Zeroizing::new(token.to_owned()));
        self
    }

    /// Authenticates with an nkey seed (`SU…`).
    pub fn nkey(mut self, seed: &str) -> Connect {
        self.nkey = Some(Zeroizing::new(seed.to_owned()));
        self
    }

    /// Authenticates with a `.creds` file (a user JWT and its nkey seed, as
    /// `nsc` writes them).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Connect {
        self.credentials_file = Some(path.into());
        self
    }

    /// Trusts the CA certificate(s) in this PEM file for `tls://` servers.
    pub fn root_certificate(mut self, path: impl Into<PathBuf>) -> Connect {
        self.root_certificates.push(path.into());
        self
    }

    /// Presents this client certificate and key (PEM) to servers that ask
    /// for mutual TLS.
    pub fn client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Connect {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Refuses servers that do not speak TLS.
    pub fn require_tls(mut self, yes: bool) -> Connect {
        self.require_tls = yes;
        self
    }

    /// The connection's name, shown by the server's monitoring.
    pub fn name(mut self, name: &str) -> Connect {
        self.name = Some(name.to_owned());
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Connect {
        self.timeout = timeout;
        self
    }

    /// How long a JetStream request (a publish acknowledgement, a stream
    /// lookup) may take (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Connect {
        self.request_timeout = timeout;
        self
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut o = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some((user, password)) = &self.user {
            o = o.user_and_password(user.clone(), password.to_string());
        }
        if let Some(token) = &self.token {
            o = o.token(token.to_string());
        }
        if let Some(seed) = &self.nkey {
            o = o.nkey(seed.to_string());
        }
        for ca in &self.root_certificates {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            o = o.require_tls(true);
        }
        if let Some(name) = &self.name {
            o = o.name(name);
        }
        Ok(o.connection_timeout(self.timeout)
            .request_timeout(Some(self.request_timeout)))
    }
}

pub(crate) struct Shared {
    // Field order: the client and context go before the runtime that
    // drives them.
    pub(crate) client: async_nats::Client,
    pub(crate) js: async_nats::jetstream::Context,
    /// Replicas of the streams and buckets made through this connection.
    pub(crate) replicas: usize,
    pub(crate) rt: Runtime,
}

impl Shared {
    /// `LimitExceeded` if a message of `len` bytes is over the server's
    /// `max_payload` (checked before sending: the server would close the
    /// connection).
    pub(crate) fn check_payload(&self, what: &str, len: usize) -> Result<()> {
        let limit = self.client.server_info().max_payload;
        if len > limit {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!("{what} of {len} bytes is over the server's max_payload of {limit} bytes"),
            ));
        }
        Ok(())
    }
}

/// A connection to a NATS server (or cluster), shared by every pool, worker,
/// queue and dict made from it; clones share it.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("state", &self.shared.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects. Wrong credentials are [`ErrorKind::AuthenticationFailed`];
    /// an unreachable server is an error after [`Connect::timeout`].
    pub fn connect(options: &Connect) -> Result<Cluster> {
        if options.urls.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "no NATS server URL given",
            ));
        }
        let rt = Runtime::start()?;
        let urls = options.urls.join(",");
        let client = rt.block_on(async {
            let o = options.options().await?;
            let addrs: Vec<async_nats::ServerAddr> = options
                .urls
                .iter()
                .map(|u| {
                    u.parse().map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidArgument,
                            format!("bad NATS URL {u:?}: {e}"),
                        )
                    })
                })
                .collect::<Result<_>>()?;
            // The client's own deadline covers each attempt; this one the whole.
            match tokio::time::timeout(options.timeout + Duration::from_secs(1), o.connect(addrs))
                .await
            {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(nats_error(format!("cannot connect to {urls}"), e)),
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "cannot connect to {urls}: no answer within {:?}",
                        options.timeout
                    ),
                )),
            }
        })?;
        // The context spawns its acknowledgement task: inside the runtime.
        let js = rt.block_on(async {
            let mut js = async_nats::jetstream::new(client.clone());
            js.set_timeout(options.request_timeout);
            js
        });
        Ok(Cluster {
            shared: Arc::new(Shared {
                client,
                js,
                replicas: options.replicas,
                rt,
            }),
        })
    }

    /// Waits until everything published so far has reached the server.
    pub fn flush(&self) -> Result<()> {
        let c = self.shared.client.clone();
        self.shared
            .rt
            .block_on(async move { c.flush().await })
            .map_err(|e| nats_error("cannot flush the NATS connection", e))
    }

    /// A dict on the JetStream key-value bucket `name` (made if missing).
    pub fn dict<V: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<super::ClusterDict<V>> {
        super::ClusterDict::open(self, name)
    }

    /// A `JoinableQueue` on the JetStream stream for `name` (made if missing).
    pub fn queue<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<super::ClusterQueue<T>> {
        super::ClusterQueue::open(self, name)
    }
}
