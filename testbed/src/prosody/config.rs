//! [`ProsodyBuilder`] and the `prosody.cfg.lua` it turns into.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::ctl::user_and_host;
use super::files::absolute;
use super::{Installation, Prosody, ADMIN_SOCKET, CONFIG_FILE, LOG_FILE, PID_FILE};
use crate::process::{free_port, server_dir};

/// Loaded on every host. `admin_shell` serves [`Prosody::shell`];
/// `testbed` is the helper plugin below.
const BASE_MODULES: &[&str] = &[
    "roster",
    "saslauth",
    "disco",
    "ping",
    "admin_shell",
    "testbed",
];

/// Global plugin that marks the end of startup in the log.
const TESTBED_PLUGIN: &str = r#"-- Written by client_proxy_testbed: marks the end of startup in the log,
-- which is how the harness knows the server is ready.
module:set_global();
module:hook_global("server-started", function ()
	module:log("info", "Testbed: server started");
end);
"#;

/// Holds back what the server sends a contact of an account's presence by
/// itself (RFC 6121's pushes on `subscribed`, on a `subscribe` from a
/// contact already approved, and each resource's own broadcast): that
/// account's available presence reaches the contact only in answer to the
/// contact's probe. Optionally the server's own `subscribed` answers are
/// held back too. Loaded on every VirtualHost; acts on the account's.
const PROBE_ONLY_PLUGIN: &str = r#"-- Written by client_proxy_testbed: the account's available presence
-- reaches the contact only while the server answers the contact's probe.
local jid_bare = require "util.jid".bare;
local account = module:get_option_string("testbed_probe_only_account");
local contact = module:get_option_string("testbed_probe_only_contact");
local hold_subscribed = module:get_option_boolean("testbed_probe_only_subscribed", false);
if not account or account:match("@(.*)$") ~= module.host then
	return;
end
local answering = 0;
module:wrap_event("presence/bare", function (handlers, event_name, event_data)
	local attr = event_data.stanza.attr;
	local probe = attr.type == "probe" and jid_bare(attr.from) == contact and jid_bare(attr.to) == account;
	if not probe then
		return handlers(event_name, event_data);
	end
	answering = answering + 1;
	local ok, ret = pcall(handlers, event_name, event_data);
	answering = answering - 1;
	if not ok then
		error(ret, 0);
	end
	return ret;
end);
module:hook("pre-presence/host", function (event)
	local attr = event.stanza.attr;
	if attr.to ~= contact or jid_bare(attr.from or "") ~= account then
		return;
	end
	local held = (attr.type == nil and answering == 0)
		or (hold_subscribed and attr.type == "subscribed" and event.origin.type ~= "c2s");
	if held then
		module:log("debug", "Testbed: held back %s presence from %s to %s", attr.type or "available", attr.from, attr.to);
		return true;
	end
end, 1000);
"#;

/// Configuration of a test server, turned into a [`Prosody`] by
/// [`start`](Self::start).
///
/// The generated config serves plain (unencrypted) c2s on 127.0.0.1 only,
/// with s2s, HTTP (unless [`http`](Self::http)) and component ports off,
/// internal plain-text storage and `mod_admin_shell` for
/// [`Prosody::shell`].
#[derive(Debug, Clone)]
#[must_use = "nothing starts until `start` is called"]
pub struct ProsodyBuilder {
    /// VirtualHosts, each with raw Lua lines under it.
    hosts: Vec<(String, String)>,
    components: Vec<ComponentSpec>,
    plugin_paths: Vec<PathBuf>,
    modules: Vec<String>,
    global_options: Vec<String>,
    users: Vec<(String, String)>,
    /// (user JID, contact, subscription), written before start.
    roster: Vec<(String, String, String)>,
    log_level: String,
    /// Serve HTTP (with `mod_http_openmetrics`) on 127.0.0.1.
    pub(super) http: bool,
    /// Open the component port (XEP-0114) on 127.0.0.1.
    pub(super) component_port: bool,
    /// (account, contact, hold `subscribed` too): see
    /// [`presence_only_by_probe`](Self::presence_only_by_probe).
    probe_only: Option<(String, String, bool)>,
}

#[derive(Debug, Clone)]
struct ComponentSpec {
    host: String,
    module: String,
    options: String,
}

impl Default for ProsodyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProsodyBuilder {
    /// A server with the single VirtualHost `localhost`.
    pub fn new() -> Self {
        Self {
            hosts: vec![("localhost".to_owned(), String::new())],
            components: Vec::new(),
            plugin_paths: Vec::new(),
            modules: Vec::new(),
            global_options: Vec::new(),
            users: Vec::new(),
            roster: Vec::new(),
            log_level: "debug".to_owned(),
            http: false,
            component_port: false,
            probe_only: None,
        }
    }

    /// The server sends `contact` the available presence of `account`'s
    /// resources only in answer to a probe from `contact`: what it pushes by
    /// itself (on `subscribed`, on a `subscribe` from a contact already
    /// approved, each resource's own broadcast) is held back. With
    /// `hold_subscribed`, so are the `subscribed` answers the server makes
    /// on the account's behalf (not those its clients send). A test thus
    /// sees what a component learns only by probing.
    pub fn presence_only_by_probe(
        mut self,
        account: &str,
        contact: &str,
        hold_subscribed: bool,
    ) -> Self {
        self.probe_only = Some((account.to_owned(), contact.to_owned(), hold_subscribed));
        self.modules.push("testbed_probe_only".to_owned());
        self
    }

    /// Serves HTTP on 127.0.0.1 on a free port (see [`Prosody::http_addr`])
    /// with `mod_http_openmetrics` at `/metrics` and Prosody's internal
    /// statistics, collected at each scrape (`statistics_interval =
    /// "manual"`), so that [`Prosody::scrape`] sees values of that moment.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// Adds another VirtualHost (e.g. `auth.localhost`).
    pub fn virtual_host(self, host: &str) -> Self {
        self.virtual_host_with(host, "")
    }

    /// Adds another VirtualHost with raw Lua lines under it, e.g.
    /// `modules_enabled = { "foo" }`; for an existing host, adds the lines.
    pub fn virtual_host_with(mut self, host: &str, options: &str) -> Self {
        match self.hosts.iter_mut().find(|(h, _)| h == host) {
            Some((_, lines)) => {
                lines.push('\n');
                lines.push_str(options);
            }
            None => self.hosts.push((host.to_owned(), options.to_owned())),
        }
        self
    }

    /// Adds `Component "host" "module"`; `options` are raw Lua lines placed
    /// under it, e.g. `target_address = "svc@localhost"`.
    ///
    /// A module that fails to load does not stop the server: Prosody logs
    /// the error (see [`Prosody::log`]) and carries on.
    pub fn component(mut self, host: &str, module: &str, options: &str) -> Self {
        self.components.push(ComponentSpec {
            host: host.to_owned(),
            module: module.to_owned(),
            options: options.to_owned(),
        });
        self
    }

    /// Adds `Component "host"` with no module, for an external (XEP-0114)
    /// component that authenticates with `secret`, and opens the component
    /// port on 127.0.0.1 on a free port (see [`Prosody::component_addr`]).
    pub fn external_component(mut self, host: &str, secret: &str) -> Self {
        self.components.push(ComponentSpec {
            host: host.to_owned(),
            module: String::new(),
            options: format!("component_secret = {}", lua_str(secret)),
        });
        self.component_port = true;
        self
    }

    /// Adds a directory Prosody searches for `mod_*.lua` plugins.
    pub fn plugin_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_paths.push(dir.into());
        self
    }

    /// Adds a module to the global `modules_enabled` (loaded on every
    /// VirtualHost), e.g. `carbons` or `smacks`. Always enabled: `roster`,
    /// `saslauth`, `disco`, `ping` and `admin_shell`, plus Prosody's
    /// automatic ones (`presence`, `message`, `iq`, `offline`, `c2s`, ...).
    pub fn enable_module(mut self, module: &str) -> Self {
        self.modules.push(module.to_owned());
        self
    }

    /// Adds a raw line to the global section of the config (before any
    /// host), e.g. `c2s_timeout = 5` or `smacks_hibernation_time = 2`.
    pub fn global_option(mut self, lua_line: &str) -> Self {
        self.global_options.push(lua_line.to_owned());
        self
    }

    /// Registers `user@host` with `password` before the server starts. The
    /// host must be one of the VirtualHosts.
    pub fn user(mut self, jid: &str, password: &str) -> Self {
        self.users.push((jid.to_owned(), password.to_owned()));
        self
    }

    /// Puts `contact` in the roster of `user@host` with `subscription`
    /// (`from`, `to` or `both`) before the server starts, as an approved
    /// subscription leaves it. One item per user.
    pub fn roster_item(mut self, jid: &str, contact: &str, subscription: &str) -> Self {
        self.roster
            .push((jid.to_owned(), contact.to_owned(), subscription.to_owned()));
        self
    }

    /// Minimum log level written to the log file: `debug` (the default),
    /// `info`, `warn` or `error`.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Writes the config into a fresh temporary directory, registers the
    /// users and starts Prosody, returning once it has finished starting up
    /// and listens for clients.
    ///
    /// The server is killed when the [`Prosody`] is dropped and when the
    /// process that started it dies, even by SIGKILL.
    pub fn start(self) -> io::Result<Prosody> {
        self.start_on(None)
    }

    /// [`start`](Self::start), trying `port` first if given.
    pub(super) fn start_on(self, port: Option<u16>) -> io::Result<Prosody> {
        let dir = server_dir()?;
        let users = self.users.clone();
        // From here on, dropping `server` cleans the directory up.
        let mut server = Prosody {
            child: None,
            install: Installation::selected(),
            dir,
            config: Box::new(self),
            port: 0,
            http_port: 0,
            component_port: 0,
        };
        for sub in ["data", "certs", "plugins"] {
            fs::create_dir(server.dir().join(sub))?;
        }
        fs::write(server.dir().join("plugins/mod_testbed.lua"), TESTBED_PLUGIN)?;
        fs::write(
            server.dir().join("plugins/mod_testbed_probe_only.lua"),
            PROBE_ONLY_PLUGIN,
        )?;
        server.port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        server.pick_extra_ports()?;
        server.write_config()?;
        server.register_all(&users)?;
        server.write_rosters()?;
        server.launch()?;
        Ok(server)
    }
}

impl Prosody {
    /// The generated `prosody.cfg.lua`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join(CONFIG_FILE)
    }
    /// The roster items of the builder, in Prosody's internal storage
    /// (`data/HOST/roster/USER.dat`, names %-encoded as its datamanager does).
    fn write_rosters(&self) -> io::Result<()> {
        for (jid, contact, subscription) in &self.config.roster {
            let (user, host) = user_and_host(jid)?;
            let dir = self
                .dir()
                .join("data")
                .join(path_encode(host))
                .join("roster");
            fs::create_dir_all(&dir)?;
            let item = format!(
                "return {{\n\t[{}] = {{ subscription = {}; groups = {{}}; }};\n\t[false] = {{ \
                 version = 1; }};\n}};\n",
                lua_str(contact),
                lua_str(subscription)
            );
            fs::write(dir.join(format!("{}.dat", path_encode(user))), item)?;
        }
        Ok(())
    }

    pub(super) fn write_config(&self) -> io::Result<()> {
        fs::write(self.config_path(), self.render_config())
    }

    fn render_config(&self) -> String {
        let cfg = &self.config;
        let path = |name: &str| lua_str(&self.dir().join(name).to_string_lossy());
        let mut plugin_paths = vec![path("plugins")];
        plugin_paths.extend(
            cfg.plugin_paths
                .iter()
                .map(|p| lua_str(&absolute(p).to_string_lossy())),
        );

        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("-- Generated by client_proxy_testbed; rewritten on each start.".into());
        if is_root() {
            // Otherwise Prosody (and prosodyctl) refuse to run as root.
            line("run_as_root = true".into());
        }
        line("daemonize = false".into());
        line(format!("pidfile = {}", path(PID_FILE)));
        line(format!("data_path = {}", path("data")));
        // An empty directory: there are no certificates, but this keeps
        // Prosody from complaining about a missing one.
        line(format!("certificates = {}", path("certs")));
        line(format!("admin_socket = {}", path(ADMIN_SOCKET)));
        line(format!("plugin_paths = {{ {} }}", plugin_paths.join(", ")));
        line(format!(
            "log = {{ {{ levels = {{ min = {} }}, to = \"file\", filename = {} }} }}",
            lua_str(&cfg.log_level),
            path(LOG_FILE)
        ));
        line("interfaces = { \"127.0.0.1\" }".into());
        line("local_interfaces = { \"127.0.0.1\" }".into());
        line("c2s_interfaces = { \"127.0.0.1\" }".into());
        line(format!("c2s_ports = {{ {} }}", self.port));
        let mut closed = vec!["c2s_direct_tls", "legacy_ssl", "s2s", "https"];
        if cfg.component_port {
            line(format!("component_ports = {{ {} }}", self.component_port));
            line("component_interfaces = { \"127.0.0.1\" }".into());
        } else {
            closed.push("component");
        }
        if cfg.http {
            line(format!("http_ports = {{ {} }}", self.http_port));
            line("http_interfaces = { \"127.0.0.1\" }".into());
            // Collected when /metrics is scraped, not on a timer.
            line("statistics = \"internal\"".into());
            line("statistics_interval = \"manual\"".into());
        } else {
            closed.push("http");
        }
        for service in closed {
            line(format!("{service}_ports = {{}}"));
        }
        let http_modules: &[&str] = if cfg.http {
            &["http", "http_openmetrics"]
        } else {
            &[]
        };
        let modules: Vec<String> = BASE_MODULES
            .iter()
            .copied()
            .chain(http_modules.iter().copied())
            .chain(cfg.modules.iter().map(String::as_str))
            .map(lua_str)
            .collect();
        line(format!("modules_enabled = {{ {} }}", modules.join(", ")));
        line("modules_disabled = { \"s2s\", \"s2s_auth_certs\" }".into());
        line("authentication = \"internal_plain\"".into());
        line("storage = \"internal\"".into());
        // Plain TCP clients: no TLS, SASL PLAIN allowed.
        line("c2s_require_encryption = false".into());
        line("allow_unencrypted_plain_auth = true".into());
        if let Some((account, contact, hold_subscribed)) = &cfg.probe_only {
            line(format!("testbed_probe_only_account = {}", lua_str(account)));
            line(format!("testbed_probe_only_contact = {}", lua_str(contact)));
            line(format!("testbed_probe_only_subscribed = {hold_subscribed}"));
        }
        for option in &cfg.global_options {
            line(option.clone());
        }
        for (host, options) in &cfg.hosts {
            line(String::new());
            line(format!("VirtualHost {}", lua_str(host)));
            for option in options.lines().filter(|l| !l.trim().is_empty()) {
                line(format!("\t{option}"));
            }
        }
        for component in &cfg.components {
            line(String::new());
            if component.module.is_empty() {
                line(format!("Component {}", lua_str(&component.host)));
            } else {
                line(format!(
                    "Component {} {}",
                    lua_str(&component.host),
                    lua_str(&component.module)
                ));
            }
            for option in component.options.lines() {
                line(format!("\t{}", option.trim()));
            }
        }
        out
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prosody's `datamanager.path_encode`: every byte but ASCII letters and
/// digits as `%xx`.
fn path_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02x}"),
        })
        .collect()
}

/// A Lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_prosodys_datamanager_does() {
        assert_eq!(path_encode("localhost"), "localhost");
        assert_eq!(path_encode("meet.my_host"), "meet%2emy%5fhost");
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }
}
