//! A Prosody with `client_proxy` loaded: the setting of the end-to-end tests
//! and the demo.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{ping, served_by, Prosody, ProsodyBuilder, Xmpp};

/// The component host the module is loaded on (P).
pub const PROXY: &str = "proxy.localhost";
/// The implementing client's account (T).
pub const TARGET: &str = "svc@localhost";
/// Every account's password.
pub const PASSWORD: &str = "pw";
/// Requester accounts registered on every server.
pub const REQUESTERS: [&str; 3] = ["alice", "bob", "carol"];

/// Where `PLUGIN_DIR/mod_client_proxy/` is: `$CLIENT_PROXY_PLUGIN_DIR`, or
/// the build of `make plugin` (run once here if needed, so that a plain
/// `cargo test` works too).
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CLIENT_PROXY_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new("make")
            .args(["-s", "-C"])
            .arg(&root)
            .arg("plugin")
            .status()
            .expect("run make plugin");
        assert!(status.success(), "make plugin failed");
        root.join("build/lua-5.4")
    })
}

/// A running Prosody with the module on [`PROXY`], [`TARGET`] and the
/// [`REQUESTERS`] registered.
pub struct ProxyServer {
    pub prosody: Prosody,
}

/// Starts a [`ProxyServer`] with these extra lines under the `Component`.
pub fn proxy_server(options: &str) -> ProxyServer {
    ProxyServer::builder(options)
        .start()
        .expect("start Prosody with client_proxy")
}

impl ProxyServer {
    /// A builder with the module on [`PROXY`] and these extra lines under
    /// its `Component` block (they may override `target_address`).
    pub fn builder(options: &str) -> ProxyServerBuilder {
        Self::builder_from(plugin_dir(), options)
    }

    /// [`builder`](Self::builder) with the module found in `plugins`
    /// (a directory holding `mod_client_proxy/`) instead of the build.
    pub fn builder_from(plugins: &Path, options: &str) -> ProxyServerBuilder {
        let mut component = format!("target_address = \"{TARGET}\"");
        if !options.is_empty() {
            component = format!("{component}\n{options}");
        }
        let mut inner = ProsodyBuilder::new()
            .plugin_path(plugins)
            .component(PROXY, "client_proxy", &component)
            .user(TARGET, PASSWORD);
        for user in REQUESTERS {
            inner = inner.user(&format!("{user}@localhost"), PASSWORD);
        }
        ProxyServerBuilder { inner }
    }

    /// A resource of the implementing client, online (available presence,
    /// priority 0) and known to the proxy by the time this returns.
    pub async fn service(&self, resource: &str) -> Xmpp {
        let mut client = self.connect(&format!("{TARGET}/{resource}")).await;
        client.send_presence(None, 0).await.expect("send presence");
        client.sync().await;
        client
    }

    /// A requester `user@localhost/resource`.
    pub async fn client(&self, user: &str, resource: &str) -> Xmpp {
        self.connect(&format!("{user}@localhost/{resource}")).await
    }

    async fn connect(&self, jid: &str) -> Xmpp {
        Xmpp::connect(self.prosody.c2s_addr(), jid, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"))
    }
}

/// Builds a [`ProxyServer`]; see [`ProxyServer::builder`].
pub struct ProxyServerBuilder {
    inner: ProsodyBuilder,
}

impl ProxyServerBuilder {
    /// Anything else about the server.
    pub fn with(mut self, edit: impl FnOnce(ProsodyBuilder) -> ProsodyBuilder) -> Self {
        self.inner = edit(self.inner);
        self
    }

    pub fn start(self) -> io::Result<ProxyServer> {
        Ok(ProxyServer {
            prosody: self.inner.start()?,
        })
    }
}

impl Xmpp {
    /// Returns once the server has processed everything this client sent
    /// before: a ping to its own server, answered in order.
    pub async fn sync(&mut self) {
        let id = "sync";
        let domain = self.jid().domain().to_string();
        let reply = self
            .request(&domain, "get", id, crate::ping(), Duration::from_secs(10))
            .await;
        assert!(reply.is_some(), "{} got no answer to a ping", self.jid());
    }
}

/// `n` gets from `client` to [`PROXY`], one after another, each answered
/// with a result by an echo service; how many each resource served.
pub async fn spread(client: &mut Xmpp, prefix: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let reply = client
            .request(PROXY, "get", &id, ping(), Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no answer to {id}"));
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "{}",
            String::from(&reply)
        );
        *seen.entry(served_by(&reply)).or_default() += 1;
    }
    seen
}
