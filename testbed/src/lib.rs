//! A throwaway Prosody (or ejabberd) on 127.0.0.1 with real XMPP clients.
//!
//! This is what the `client_proxy` end-to-end tests, the demo and the load
//! benchmark run against: [`ProsodyBuilder`] writes a private configuration
//! into a fresh temporary directory and starts the system's `prosody` on a
//! free port, and [`Xmpp`] logs real clients in over plain TCP (no TLS, so no
//! certificates are needed). Everything is per instance, so any number of
//! servers can run side by side in parallel tests.
//!
//! [`ProxyServer`] is a server with [`PROXY`] served as
//! [`Deployment::selected`] says: by the module in Prosody, or by the
//! standalone [`Component`] on the component port of Prosody or of an
//! [`Ejabberd`] node, so that the same tests prove each.
//!
//! ```no_run
//! use std::time::Duration;
//! use client_proxy_testbed::{ping, spawn_echo, ProsodyBuilder, Xmpp};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let server = ProsodyBuilder::new()
//!     .user("alice@localhost", "a")
//!     .user("bob@localhost", "b")
//!     .start()?;
//! let bob = spawn_echo(Xmpp::connect(server.c2s_addr(), "bob@localhost/phone", "b").await?);
//! let mut alice = Xmpp::connect(server.c2s_addr(), "alice@localhost/desk", "a").await?;
//! let reply = alice
//!     .request("bob@localhost/phone", "get", "q1", ping(), Duration::from_secs(5))
//!     .await;
//! assert_eq!(reply.unwrap().attr("type"), Some("result"));
//! # drop(bob);
//! # Ok(())
//! # }
//! ```

mod broken;
mod client;
mod component;
mod ejabberd;
mod fixture;
mod process;
mod prosody;

pub use broken::failing_plugin_dir;
pub use client::{
    element, error_condition, iq, ping, refusal, served_by, spawn_echo, EchoHandle, EchoMode,
    RawClient, Xmpp, NS_CLIENT, NS_PING, NS_TESTBED,
};
pub use component::{component_binary, Component};
pub use ejabberd::{config_text as ejabberd_config, Ejabberd, EjabberdBuilder};
pub use fixture::{
    plugin_dir, proxy_server, spread, Deployment, ProxyServer, ProxyServerBuilder, DEPLOYMENT_ENV,
    PASSWORD, PROXY, REQUESTERS, TARGET,
};
pub use process::{TempDir, KEEP_TESTDIR_ENV};
pub use prosody::{
    http_get, metric, samples, Installation, Prosody, ProsodyBuilder, Sample, PROSODY_ENV,
};

/// Re-exported so that users build stanzas with the same versions the
/// harness uses.
pub use jid;
pub use minidom;
