//! A server with `client_proxy` serving [`PROXY`]: the setting of the
//! end-to-end tests and the demo.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{
    component_binary, ping, served_by, Component, Ejabberd, EjabberdBuilder, Prosody,
    ProsodyBuilder, Xmpp,
};

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

/// How [`PROXY`] is served: by the module inside Prosody (the default), or
/// by the standalone component on the component port of Prosody
/// (`CLIENT_PROXY_DEPLOYMENT=component`) or of ejabberd (`ejabberd`), so
/// that one suite of end-to-end tests proves all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    Module,
    Component,
    Ejabberd,
}

/// The environment variable that selects the [`Deployment`].
pub const DEPLOYMENT_ENV: &str = "CLIENT_PROXY_DEPLOYMENT";

impl Deployment {
    /// The one `$CLIENT_PROXY_DEPLOYMENT` names.
    pub fn selected() -> Deployment {
        match std::env::var(DEPLOYMENT_ENV).as_deref() {
            Err(_) | Ok("" | "module") => Deployment::Module,
            Ok("component") => Deployment::Component,
            Ok("ejabberd") => Deployment::Ejabberd,
            Ok(other) => {
                panic!("{DEPLOYMENT_ENV}={other:?}: expected module, component or ejabberd")
            }
        }
    }
}

/// The secret of the component's connection.
const SECRET: &str = "component-secret";

enum Server {
    Prosody(Prosody),
    Ejabberd(Ejabberd),
}

/// A running server serving [`PROXY`] (as [`Deployment::selected`] says),
/// with [`TARGET`] and the [`REQUESTERS`] registered.
pub struct ProxyServer {
    server: Server,
    /// The standalone component, unless the module serves.
    pub component: Option<Component>,
}

/// Starts a [`ProxyServer`] with these extra lines under the `Component`.
pub fn proxy_server(options: &str) -> ProxyServer {
    ProxyServer::builder(options)
        .start()
        .expect("start a server with client_proxy")
}

impl ProxyServer {
    /// A builder serving [`PROXY`] with these options: Lua lines under the
    /// module's `Component` block (they may override `target_address`), or
    /// the same options in the component's TOML file.
    pub fn builder(options: &str) -> ProxyServerBuilder {
        Self::builder_from(plugin_dir(), options)
    }

    /// [`builder`](Self::builder) with the module found in `plugins`
    /// (a directory holding `mod_client_proxy/`) instead of the build.
    pub fn builder_from(plugins: &Path, options: &str) -> ProxyServerBuilder {
        let deployment = Deployment::selected();
        let mut component = format!("target_address = \"{TARGET}\"");
        if !options.is_empty() {
            component = format!("{component}\n{options}");
        }
        // The module manages the roster by itself; for the component the
        // approved subscription is in place, as an operator leaves it.
        let roster = !options.contains("client_proxy_manage_roster = false");
        let mut inner = ProsodyBuilder::new().user(TARGET, PASSWORD);
        inner = match deployment {
            Deployment::Module => {
                inner
                    .plugin_path(plugins)
                    .component(PROXY, "client_proxy", &component)
            }
            Deployment::Component if roster => inner
                .external_component(PROXY, SECRET)
                .roster_item(TARGET, PROXY, "from"),
            Deployment::Component | Deployment::Ejabberd => inner.external_component(PROXY, SECRET),
        };
        for user in REQUESTERS {
            inner = inner.user(&format!("{user}@localhost"), PASSWORD);
        }
        ProxyServerBuilder {
            inner,
            edited: false,
            deployment,
            options: component,
            roster,
        }
    }

    /// The Prosody it runs on; a test that needs one fails under ejabberd.
    pub fn prosody(&self) -> &Prosody {
        match &self.server {
            Server::Prosody(p) => p,
            Server::Ejabberd(_) => panic!("this test needs Prosody, not ejabberd"),
        }
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        match &self.server {
            Server::Prosody(p) => p.c2s_addr(),
            Server::Ejabberd(e) => e.c2s_addr(),
        }
    }

    /// A resource of the implementing client, online (available presence,
    /// priority 0) and known to the proxy by the time this returns.
    pub async fn service(&self, resource: &str) -> Xmpp {
        let mut client = self.connect(&format!("{TARGET}/{resource}")).await;
        client.send_presence(None, 0).await.expect("send presence");
        // The server has written the presence to the component's stream,
        // ahead of anything sent after this.
        client.sync().await;
        client
    }

    /// A requester `user@localhost/resource`.
    pub async fn client(&self, user: &str, resource: &str) -> Xmpp {
        self.connect(&format!("{user}@localhost/{resource}")).await
    }

    async fn connect(&self, jid: &str) -> Xmpp {
        Xmpp::connect(self.c2s_addr(), jid, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"))
    }

    /// What the proxy logged: Prosody's log with the module, the
    /// component's own otherwise.
    pub fn log(&self) -> String {
        match &self.component {
            None => self.prosody().log(),
            Some(c) => c.log(),
        }
    }

    /// Whether `needle` is in [`log`](Self::log) within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        match &self.component {
            None => self.prosody().wait_for_log(needle, timeout),
            Some(c) => c.wait_for_log(needle, 1, timeout),
        }
    }
}

/// Builds a [`ProxyServer`]; see [`ProxyServer::builder`].
pub struct ProxyServerBuilder {
    inner: ProsodyBuilder,
    /// Whether [`with`](Self::with) changed Prosody's set-up, which ejabberd
    /// cannot follow.
    edited: bool,
    deployment: Deployment,
    /// The module's options, Lua lines.
    options: String,
    /// The component's domain in the target's roster before start.
    roster: bool,
}

impl ProxyServerBuilder {
    /// Anything else about Prosody; under ejabberd, [`start`](Self::start)
    /// then fails, so that such a test cannot pass without what it set up.
    pub fn with(mut self, edit: impl FnOnce(ProsodyBuilder) -> ProsodyBuilder) -> Self {
        self.inner = edit(self.inner);
        self.edited = true;
        self
    }

    pub fn start(self) -> io::Result<ProxyServer> {
        let (server, port) = match self.deployment {
            Deployment::Module => (Server::Prosody(self.inner.start()?), None),
            Deployment::Component => {
                let prosody = self.inner.start()?;
                let port = prosody.component_addr();
                (Server::Prosody(prosody), port)
            }
            Deployment::Ejabberd if self.edited => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this test sets Prosody up in a way ejabberd cannot follow",
                ));
            }
            Deployment::Ejabberd => {
                let mut builder = EjabberdBuilder::new()
                    .external_component(PROXY, SECRET)
                    .user(TARGET, PASSWORD);
                for user in REQUESTERS {
                    builder = builder.user(&format!("{user}@localhost"), PASSWORD);
                }
                let ejabberd = builder.start()?;
                if self.roster {
                    ejabberd.add_rosteritem(TARGET, PROXY, "from")?;
                }
                let port = ejabberd.component_addr();
                (Server::Ejabberd(ejabberd), Some(port))
            }
        };
        let component = match port {
            None => None,
            Some(server) => {
                let config = format!(
                    "domain = \"{PROXY}\"\nserver = \"{server}\"\nsecret = \"{SECRET}\"\n\
                     log_level = \"debug\"\n{}",
                    component_options(&self.options)
                );
                Some(Component::start(component_binary(), &config)?)
            }
        };
        Ok(ProxyServer { server, component })
    }
}

/// The module's options (Lua lines) as the component's TOML: the names
/// without `client_proxy_`, lists in brackets; `manage_roster`, which the
/// component does not have, left out.
fn component_options(lua: &str) -> String {
    let mut toml = String::new();
    for line in lua.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.strip_prefix("client_proxy_").unwrap_or(line);
        if line.starts_with("manage_roster") {
            continue;
        }
        let line = match line.split_once(" = {") {
            Some((name, list)) => {
                let items = list.trim_end_matches('}').trim();
                format!("{name} = [{items}]")
            }
            None => line.to_owned(),
        };
        toml.push_str(&line);
        toml.push('\n');
    }
    toml
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

#[cfg(test)]
mod tests {
    use super::component_options;

    #[test]
    fn the_modules_options_become_the_components() {
        let lua = "target_address = \"svc@localhost\"\nclient_proxy_timeout = 1\n\
                   client_proxy_resources = { \"focus\", \"jicofo-*\" }\n\
                   client_proxy_manage_roster = false\nclient_proxy_sticky = \"{urn:x}a@b\"";
        assert_eq!(
            component_options(lua),
            "target_address = \"svc@localhost\"\ntimeout = 1\n\
             resources = [\"focus\", \"jicofo-*\"]\nsticky = \"{urn:x}a@b\"\n"
        );
    }
}
