//! Starting, driving and tearing down a private Prosody process.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set this environment variable (to anything) to keep the server's
/// directory (config, data, log) after the [`Prosody`] is dropped.
pub const KEEP_TESTDIR_ENV: &str = "CLIENT_PROXY_KEEP_TESTDIR";

/// Which Prosody the testbed runs: unset, empty, `system` or `0.12` for the
/// system's (`prosody` and `prosodyctl` on `PATH`); `13` for the copy that
/// `scripts/setup` fetches into `target/prosody-13`; or any directory with
/// that layout (`bin/prosody`, `bin/prosodyctl`).
pub const PROSODY_ENV: &str = "CLIENT_PROXY_PROSODY";

const PROSODY: &str = "prosody";
const PROSODYCTL: &str = "prosodyctl";
const CONFIG_FILE: &str = "prosody.cfg.lua";
const LOG_FILE: &str = "prosody.log";
const OUTPUT_FILE: &str = "prosody.out";
const PID_FILE: &str = "prosody.pid";
const ADMIN_SOCKET: &str = "admin.sock";

/// How long a start may take before it is given up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping server gets before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Starts retried on a fresh port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
const POLL: Duration = Duration::from_millis(10);

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

/// Logged by the helper plugin once Prosody fires `server-started`, i.e.
/// after every host, component and listening port has been set up.
const STARTED_MARKER: &str = "Testbed: server started";
/// Logged by Prosody once a stop has run all its handlers; what remains is
/// an idle event loop that can take another second to notice it may exit.
const SHUTDOWN_MARKER: &str = "Shutdown complete";

/// Global plugin that marks the end of startup in the log.
const TESTBED_PLUGIN: &str = r#"-- Written by client_proxy_testbed: marks the end of startup in the log,
-- which is how the harness knows the server is ready.
module:set_global();
module:hook_global("server-started", function ()
	module:log("info", "Testbed: server started");
end);
"#;

/// A Prosody installation: its launchers and the source tree they run.
#[derive(Debug)]
pub struct Installation {
    /// What [`PROSODY_ENV`] said, or `system`.
    pub selector: String,
    /// Where `prosody` and `prosodyctl` are; `None` for the ones on `PATH`.
    bin_dir: Option<PathBuf>,
    /// The launchers' `CFG_SOURCEDIR`: `util/`, `core/`, `modules/`, ...
    pub source_dir: PathBuf,
    /// From `prosody.version` in the source tree, e.g. `0.12.3`, `13.0.1`.
    pub version: String,
}

impl Installation {
    /// The Prosody that [`PROSODY_ENV`] selects, looked up once. Panics with
    /// what to do when it is not there.
    pub fn selected() -> &'static Installation {
        static SELECTED: OnceLock<Installation> = OnceLock::new();
        SELECTED.get_or_init(|| {
            let selector = std::env::var(PROSODY_ENV).unwrap_or_default();
            Installation::find(&selector)
                .unwrap_or_else(|e| panic!("{PROSODY_ENV}={selector:?}: {e}"))
        })
    }

    /// The installation named by a [`PROSODY_ENV`] value.
    pub fn find(selector: &str) -> io::Result<Installation> {
        let (selector, bin_dir) = match selector {
            "" | "system" | "0.12" => (
                if selector.is_empty() {
                    "system"
                } else {
                    selector
                },
                None,
            ),
            "13" => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/prosody-13");
                (selector, Some(absolute(&dir).join("bin")))
            }
            dir => (dir, Some(absolute(Path::new(dir)).join("bin"))),
        };
        let launcher = match &bin_dir {
            Some(dir) => dir.join(PROSODYCTL),
            None => find_in_path(PROSODYCTL).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no prosodyctl on PATH; run scripts/setup",
                )
            })?,
        };
        let script = fs::read_to_string(&launcher).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}; run scripts/setup", launcher.display()),
            )
        })?;
        let source_dir = script
            .lines()
            .find_map(|l| l.strip_prefix("CFG_SOURCEDIR='"))
            .and_then(|l| l.split('\'').next())
            .map(PathBuf::from)
            .ok_or_else(|| {
                io::Error::other(format!("no CFG_SOURCEDIR in {}", launcher.display()))
            })?;
        let version = fs::read_to_string(source_dir.join("prosody.version"))
            .map(|v| v.trim().to_owned())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{}/prosody.version: {e}", source_dir.display()),
                )
            })?;
        if selector == "0.12" && !version.starts_with("0.12") {
            return Err(io::Error::other(format!(
                "the system's Prosody is {version}, not 0.12"
            )));
        }
        Ok(Installation {
            selector: selector.to_owned(),
            bin_dir,
            source_dir,
            version,
        })
    }

    /// The major version: 0 for 0.12, 13 for 13.0.
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// `Prosody 13.0.1`, for messages.
    pub fn name(&self) -> String {
        format!("Prosody {}", self.version)
    }

    /// A command running one of the launchers.
    fn command(&self, launcher: &str) -> Command {
        match &self.bin_dir {
            Some(dir) => Command::new(dir.join(launcher)),
            None => Command::new(launcher),
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

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
    log_level: String,
    /// Serve HTTP (with `mod_http_openmetrics`) on 127.0.0.1.
    http: bool,
    /// Open the component port (XEP-0114) on 127.0.0.1.
    component_port: bool,
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
            log_level: "debug".to_owned(),
            http: false,
            component_port: false,
        }
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
    /// The server is tied to the calling thread: it is killed when that
    /// thread exits (as well as when the [`Prosody`] is dropped), so call
    /// this from the test's own thread, not from a short-lived helper thread
    /// or a thread pool.
    pub fn start(self) -> io::Result<Prosody> {
        self.start_on(None)
    }

    /// [`start`](Self::start), trying `port` first if given.
    fn start_on(self, port: Option<u16>) -> io::Result<Prosody> {
        let dir = make_test_dir()?;
        let users = self.users.clone();
        // From here on, dropping `server` cleans the directory up.
        let mut server = Prosody {
            child: None,
            install: Installation::selected(),
            dir,
            config: self,
            port: 0,
            http_port: 0,
            component_port: 0,
        };
        for sub in ["data", "certs", "plugins"] {
            fs::create_dir(server.dir.join(sub))?;
        }
        fs::write(server.dir.join("plugins/mod_testbed.lua"), TESTBED_PLUGIN)?;
        server.port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        server.pick_http_port()?;
        server.write_config()?;
        server.register_all(&users)?;
        server.launch()?;
        Ok(server)
    }
}

/// A running Prosody in its own temporary directory.
///
/// Dropping it stops the server (SIGTERM, then SIGKILL after a few seconds)
/// and deletes the directory, unless [`KEEP_TESTDIR_ENV`] is set. If the
/// thread is panicking (a failed test), the end of the log is printed.
#[derive(Debug)]
#[must_use = "dropping it stops the server"]
pub struct Prosody {
    child: Option<Child>,
    install: &'static Installation,
    dir: PathBuf,
    config: ProsodyBuilder,
    port: u16,
    /// 0 unless [`ProsodyBuilder::http`].
    http_port: u16,
    /// 0 unless [`ProsodyBuilder::external_component`].
    component_port: u16,
}

impl Prosody {
    /// Where clients connect (plain TCP, no TLS).
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Where external components connect (XEP-0114), if
    /// [`ProsodyBuilder::external_component`] asked for it; the same across
    /// [`restart`](Self::restart)s.
    pub fn component_addr(&self) -> Option<SocketAddr> {
        (self.component_port != 0)
            .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, self.component_port)))
    }

    /// Where HTTP is served (plain, no TLS), if [`ProsodyBuilder::http`]
    /// asked for it.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        (self.http_port != 0).then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port)))
    }

    /// `GET path` over HTTP/1.0 on [`http_addr`](Self::http_addr), with a
    /// plain TCP connection: the status code and the body. Fails if the
    /// server serves no HTTP or the answer is not HTTP.
    pub fn http_get(&self, path: &str) -> io::Result<(u16, String)> {
        let addr = self.http_addr().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "this server serves no HTTP (ProsodyBuilder::http)",
            )
        })?;
        http_get(addr, "localhost", path)
    }

    /// The body of `GET /metrics` (`mod_http_openmetrics`): every metric,
    /// collected at this moment. Fails unless the answer is `200`. Read
    /// samples out of it with [`metric`].
    pub fn scrape(&self) -> io::Result<String> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (status, body) => Err(io::Error::other(format!(
                "GET /metrics answered {status}: {body}"
            ))),
        }
    }

    /// Process id of the server (0 after a failed [`restart`](Self::restart)).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The Prosody this server runs (see [`PROSODY_ENV`]).
    pub fn installation(&self) -> &'static Installation {
        self.install
    }

    /// The server's directory: config, `data/`, log and admin socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated `prosody.cfg.lua`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// The log file (all starts, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path(), 0)
    }

    /// The log's lines at level `warn` or `error`, so far.
    pub fn warnings_and_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\twarn\t") || line.contains("\terror\t"))
            .map(str::to_owned)
            .collect()
    }

    /// Polls the log until it contains `needle`; false on timeout. Matches
    /// anywhere in the log, including lines written before the call.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let needle = needle.as_bytes();
        let deadline = Instant::now() + timeout;
        let path = self.log_path();
        // Only new bytes are read on each poll; `unsearched` keeps enough of
        // the old ones for a needle straddling two reads.
        let mut offset = 0;
        let mut unsearched = Vec::new();
        loop {
            offset += read_from(&path, offset, &mut unsearched);
            if unsearched.windows(needle.len().max(1)).any(|w| w == needle) {
                return true;
            }
            let keep = needle.len().saturating_sub(1);
            unsearched.drain(..unsearched.len().saturating_sub(keep));
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// Registers (or re-registers with a new password) `user@host`. Works
    /// while the server runs: the account is written to the data directory,
    /// which Prosody reads on each login.
    pub fn register(&self, jid: &str, password: &str) -> io::Result<()> {
        let (user, host) = jid.split_once('@').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a user JID: {jid:?}"),
            )
        })?;
        let output = self
            .prosodyctl()
            .args(["register", user, host, password])
            .output()?;
        check_output(
            &format!("prosodyctl register ({})", self.install.name()),
            &output,
        )
        .map(drop)
    }

    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Runs one command in the server's admin console (`prosodyctl shell`),
    /// e.g. `server:version()` or `module:reload("client_proxy",
    /// "svc.localhost")`, and returns the console's answer, without what
    /// prosodyctl itself may print around it (banners about missing optional
    /// libraries, log lines). A command that fails (Lua error, unknown
    /// module, ...) is an `Err` carrying the output.
    pub fn shell(&self, command: &str) -> io::Result<String> {
        self.shell_args(&[command])
    }

    /// [`shell`](Self::shell) with the command as separate words, as an
    /// operator types it: `["module", "reload", "client_proxy"]`.
    pub fn shell_args(&self, words: &[&str]) -> io::Result<String> {
        let output = self.prosodyctl().arg("shell").args(words).output()?;
        let what = format!("prosodyctl shell {words:?} ({})", self.install.name());
        check_output(&what, &output).map(|out| console_answer(&out))
    }

    /// Stops the server and starts it again with the same directory, config
    /// and data. The port is kept unless something else took it in between;
    /// then a new one is chosen, so read [`c2s_addr`](Self::c2s_addr) again.
    ///
    /// Like [`ProsodyBuilder::start`], ties the new process to the calling
    /// thread.
    pub fn restart(&mut self) -> io::Result<()> {
        self.terminate();
        // A killed server leaves its pidfile behind, which would make the
        // next one refuse to start if the pid had been reused.
        let _ = fs::remove_file(self.dir.join(PID_FILE));
        self.launch()
    }

    /// Stops the server and cleans up; the same as dropping it.
    pub fn stop(self) {}

    fn prosodyctl(&self) -> Command {
        let mut command = self.install.command(PROSODYCTL);
        command
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null());
        command
    }

    fn register_all(&self, users: &[(String, String)]) -> io::Result<()> {
        // prosodyctl takes a moment to start; do them side by side.
        thread::scope(|scope| {
            let jobs: Vec<_> = users
                .iter()
                .map(|(jid, password)| scope.spawn(move || self.register(jid, password)))
                .collect();
            jobs.into_iter()
                .try_for_each(|job| job.join().expect("registration thread panicked"))
        })
    }

    fn write_config(&self) -> io::Result<()> {
        fs::write(self.config_path(), self.render_config())
    }

    fn render_config(&self) -> String {
        let cfg = &self.config;
        let path = |name: &str| lua_str(&self.dir.join(name).to_string_lossy());
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

    /// Starts the process and waits until it is ready, moving to a fresh
    /// port if the configured one turns out to be taken.
    fn launch(&mut self) -> io::Result<()> {
        for attempt in 1..=PORT_ATTEMPTS {
            let log_offset = file_len(&self.log_path());
            self.spawn()?;
            match self.wait_started(log_offset) {
                Ok(()) => return Ok(()),
                Err(Startup::PortTaken) if attempt < PORT_ATTEMPTS => {
                    self.terminate();
                    self.port = free_port()?;
                    self.pick_http_port()?;
                    self.write_config()?;
                }
                Err(Startup::PortTaken) => {
                    self.terminate();
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("no free c2s port after {PORT_ATTEMPTS} attempts"),
                    ));
                }
                Err(Startup::Failed(message)) => {
                    self.terminate();
                    let details = self.diagnostics(log_offset);
                    return Err(io::Error::other(format!(
                        "{} did not start: {message}\n{details}",
                        self.install.name()
                    )));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(OUTPUT_FILE))?;
        let mut command = self.install.command(PROSODY);
        command
            .arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            // Its own process group, so the whole group can be killed.
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Die with the spawning thread, e.g. when a test binary is
                // killed before the destructor can run.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        self.child = Some(command.spawn().map_err(|e| {
            let name = self.install.name();
            io::Error::new(e.kind(), format!("cannot run {PROSODY} ({name}): {e}"))
        })?);
        Ok(())
    }

    /// A fresh port for HTTP, if it is served.
    fn pick_http_port(&mut self) -> io::Result<()> {
        if self.config.http {
            self.http_port = free_port()?;
        }
        if self.config.component_port {
            self.component_port = free_port()?;
        }
        Ok(())
    }

    fn wait_started(&mut self, log_offset: u64) -> Result<(), Startup> {
        let listening = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.port);
        let mut ports = vec![self.port];
        if self.config.http {
            ports.push(self.http_port);
        }
        if self.config.component_port {
            ports.push(self.component_port);
        }
        let port_failed: Vec<String> = ports
            .iter()
            .map(|port| format!("Failed to open server port {port}"))
            .collect();
        let http_listening = format!("Activated service 'http' on [127.0.0.1]:{}", self.http_port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = read_lossy(&self.log_path(), log_offset);
            if port_failed.iter().any(|failed| log.contains(failed)) {
                return Err(Startup::PortTaken);
            }
            if log.contains(STARTED_MARKER) {
                return if !log.contains(&listening) {
                    Err(Startup::Failed(
                        "started but is not listening for clients".into(),
                    ))
                } else if self.config.http && !log.contains(&http_listening) {
                    Err(Startup::Failed("started but is not serving HTTP".into()))
                } else {
                    Ok(())
                };
            }
            let child = self.child.as_mut().expect("spawned");
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => return Err(Startup::Failed(format!("exited with {status}"))),
                Err(e) => return Err(Startup::Failed(e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(Startup::Failed(format!(
                    "not ready after {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the process if there is one: SIGTERM, then SIGKILL to its
    /// process group once it has finished shutting down or after
    /// [`STOP_TIMEOUT`]. Always reaps it.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let log_offset = file_len(&self.log_path());
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is
        // still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let exited = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break true;
            }
            if Instant::now() >= deadline
                || read_lossy(&self.log_path(), log_offset).contains(SHUTDOWN_MARKER)
            {
                break false;
            }
            thread::sleep(POLL);
        };
        if !exited {
            // SAFETY: as above; the group id is the unreaped child's pid.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Exit output and the end of the log, for error messages.
    fn diagnostics(&self, log_offset: u64) -> String {
        let output = read_lossy(&self.dir.join(OUTPUT_FILE), 0);
        let log = read_lossy(&self.log_path(), log_offset);
        let mut text = String::new();
        if !output.trim().is_empty() {
            let _ = writeln!(text, "--- output ---\n{}", output.trim_end());
        }
        if !log.trim().is_empty() {
            let _ = writeln!(text, "--- log (end) ---\n{}", tail(&log, 40));
        }
        text
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.terminate();
        if thread::panicking() {
            eprintln!(
                "--- {} log {} (end) ---\n{}",
                self.install.name(),
                self.log_path().display(),
                tail(&self.log(), 60)
            );
        }
        if std::env::var_os(KEEP_TESTDIR_ENV).is_some() {
            eprintln!("kept prosody test directory {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

enum Startup {
    PortTaken,
    Failed(String),
}

/// A fresh, empty directory under the system temp dir, removed with all it
/// holds when dropped (unless [`KEEP_TESTDIR_ENV`] is set).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> io::Result<TempDir> {
        make_test_dir().map(TempDir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_TESTDIR_ENV).is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A new, empty, uniquely named directory under the system temp dir.
///
/// Falls back to `/tmp` if the temp dir's path is so long that the admin
/// socket inside would exceed the unix socket path limit (108 bytes).
fn make_test_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const LONGEST_NAME: &str = "client-proxy-4294967295-99999-ffffffff/admin.sock";
    let mut base = std::env::temp_dir();
    if base.join(LONGEST_NAME).as_os_str().len() >= 108 {
        base = PathBuf::from("/tmp");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "client-proxy-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "cannot create a unique test directory",
    ))
}

/// A port that was free a moment ago. Someone else may take it before
/// Prosody binds it, which [`Prosody::launch`] detects and retries.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// How long an HTTP request may take, connection to last byte.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` to `addr` as HTTP/1.0 with `Host: host`, over a plain
/// [`TcpStream`](std::net::TcpStream): the status code and the body. The
/// server closes the connection after the answer, which ends the body.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .lines()
        .next()
        .filter(|line| line.starts_with("HTTP/"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// One sample of an OpenMetrics (Prometheus text) exposition: a name such
/// as `prosody_mod_client_proxy__requests_total`, its labels in the order
/// printed, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of this label, if it has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample in an exposition (the body of [`Prosody::scrape`]),
/// skipping comments (`# TYPE`, `# HELP`, `# EOF`) and lines it cannot
/// read.
pub fn samples(body: &str) -> Vec<Sample> {
    body.lines().filter_map(parse_sample).collect()
}

/// The value of the sample named `name` whose labels are exactly `labels`
/// (in any order); `None` if there is no such sample. E.g.
/// `metric(body, "prosody_mod_client_proxy__requests_total",
/// &[("host", "proxy.localhost"), ("outcome", "replied")])`.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    wanted.sort_unstable();
    samples(body)
        .into_iter()
        .find(|sample| {
            if sample.name != name || sample.labels.len() != wanted.len() {
                return false;
            }
            let mut have: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            have.sort_unstable();
            have == wanted
        })
        .map(|sample| sample.value)
}

/// `name{k="v",...} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' if key.trim().is_empty() => break i,
                ',' | ' ' if key.is_empty() => {}
                '=' => {
                    let quote = chars.by_ref().map(|(_, c)| c).find(|c| *c != ' ')?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key).trim().to_owned(), value));
                }
                c => key.push(c),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
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

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The file's contents from `offset` on, or "" if it does not exist yet.
fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    read_from(path, offset, &mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Appends the file's bytes from `offset` on to `buf`; returns how many.
fn read_from(path: &Path, offset: u64, buf: &mut Vec<u8>) -> u64 {
    let Ok(mut file) = fs::File::open(path) else {
        return 0;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    file.read_to_end(buf).map_or(0, |n| n as u64)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What the admin console answered, from prosodyctl's output: without the
/// banners Prosody prints when an optional library is missing (a block
/// between lines of asterisks, e.g. "Prosody was unable to find
/// lua-unbound") and without log lines it writes to the terminal
/// (`source   level<TAB>message`).
fn console_answer(output: &str) -> String {
    let mut answer = Vec::new();
    let mut in_banner = false;
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed.len() >= 10 && trimmed.bytes().all(|b| b == b'*') {
            in_banner = !in_banner;
            continue;
        }
        if in_banner || is_log_line(line) {
            continue;
        }
        answer.push(line);
    }
    let text = answer.join("\n");
    let text = text.trim_matches('\n');
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    }
}

/// A line of Prosody's console log sink: the source padded with spaces,
/// the level, a tab and the message.
fn is_log_line(line: &str) -> bool {
    let Some((head, _message)) = line.split_once('\t') else {
        return false;
    };
    let mut words = head.split_whitespace();
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(_), Some("debug" | "info" | "warn" | "error"), None)
    )
}

/// Stdout on success; otherwise an error carrying everything printed.
fn check_output(what: &str, output: &Output) -> io::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        output.status,
        stdout.trim_end(),
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", stderr.trim_end())
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_moves_the_server_to_another() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let mut server = ProsodyBuilder::new().start_on(Some(taken)).unwrap();
        assert_ne!(server.c2s_addr().port(), taken);
        assert!(server
            .log()
            .contains(&format!("Failed to open server port {taken}")));
        assert!(server.is_running());
        let config = fs::read_to_string(server.config_path()).unwrap();
        assert!(config.contains(&format!("c2s_ports = {{ {} }}", server.c2s_addr().port())));
    }

    #[test]
    fn restart_moves_on_if_its_port_was_taken() {
        let mut server = ProsodyBuilder::new().start().unwrap();
        let port = server.c2s_addr().port();
        server.terminate();
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        server.restart().unwrap();
        assert_ne!(server.c2s_addr().port(), port);
        assert!(server.is_running());
        drop(squatter);
    }

    #[test]
    fn wait_for_log_finds_old_and_new_lines() {
        let server = ProsodyBuilder::new().start().unwrap();
        assert!(server.wait_for_log(STARTED_MARKER, Duration::ZERO));
        assert!(!server.wait_for_log("no such line", Duration::from_millis(50)));
        server.shell("server:version()").unwrap();
        assert!(server.wait_for_log("Admin client disconnected", Duration::from_secs(5)));
    }

    #[test]
    fn console_answers_are_read_through_banners_and_log_lines() {
        let banner = "\n**************************\nProsody was unable to find lua-unbound\n\
            This package can be obtained in the following ways:\n\n  Debian/Ubuntu sudo apt install lua-unbound\n\n\
            Old DNS resolver library will be used\n**************************\n\n";
        let log = "certmanager         error\tError indexing certificate directory\n";
        assert_eq!(
            console_answer(&format!("{banner}{log}Result: 1\n")),
            "Result: 1\n"
        );
        assert_eq!(
            console_answer("Reloaded on localhost\nOK: Module reloaded on 1 host\n"),
            "Reloaded on localhost\nOK: Module reloaded on 1 host\n"
        );
        assert_eq!(console_answer(log), "");
        assert!(!is_log_line("| col\tinfo"));
    }

    #[test]
    fn samples_are_read_by_name_and_exact_label_set() {
        let body = r#"# HELP prosody_mod_client_proxy__requests Requests by outcome
# TYPE prosody_mod_client_proxy__requests counter
prosody_mod_client_proxy__requests_total{host="proxy.localhost",outcome="replied"} 12
prosody_mod_client_proxy__requests_total{host="proxy.localhost",outcome="timeout"} 1 1700000000
prosody_mod_client_proxy__in_flight{host="proxy.localhost"} 0
prosody_mod_client_proxy__rtt_bucket{host="proxy.localhost",le="0.001"} 3
prosody_mod_client_proxy__rtt_bucket{host="proxy.localhost",le="+Inf"} 7
prosody_mod_client_proxy__rtt_sum{host="proxy.localhost"} 1.5e-2
odd_label{host="a\"b\\c\nd", x = "y" } 2.5
prosody_uptime 42
# EOF
"#;
        let requests = "prosody_mod_client_proxy__requests_total";
        let host = ("host", "proxy.localhost");
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "replied")]),
            Some(12.0)
        );
        // Label order does not matter; the set must match exactly.
        assert_eq!(
            metric(body, requests, &[("outcome", "timeout"), host]),
            Some(1.0)
        );
        assert_eq!(metric(body, requests, &[host]), None);
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "conflict")]),
            None
        );
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "replied"), ("x", "y")]),
            None
        );
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__in_flight", &[host]),
            Some(0.0)
        );
        assert_eq!(
            metric(
                body,
                "prosody_mod_client_proxy__rtt_bucket",
                &[host, ("le", "+Inf")]
            ),
            Some(7.0)
        );
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__rtt_sum", &[host]),
            Some(0.015)
        );
        assert_eq!(
            metric(body, "odd_label", &[("host", "a\"b\\c\nd"), ("x", "y")]),
            Some(2.5)
        );
        assert_eq!(metric(body, "prosody_uptime", &[]), Some(42.0));
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__requests", &[]),
            None
        );
        let all = samples(body);
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].label("outcome"), Some("replied"));
        assert_eq!(
            all[0].labels[0],
            ("host".to_owned(), "proxy.localhost".to_owned())
        );
    }

    #[test]
    fn http_serves_openmetrics_when_asked() {
        let server = ProsodyBuilder::new().http().start().unwrap();
        let addr = server.http_addr().expect("HTTP is served");
        assert_ne!(addr.port(), server.c2s_addr().port());
        let body = server.scrape().unwrap();
        assert!(body.contains("# TYPE"), "{body}");
        assert!(
            samples(&body)
                .iter()
                .any(|s| s.name.starts_with("prosody_")),
            "{body}"
        );
        assert_eq!(server.http_get("/no-such-page").unwrap().0, 404);
        let plain = ProsodyBuilder::new().start().unwrap();
        assert!(plain.http_addr().is_none());
        assert!(plain.scrape().is_err());
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }
}
