//! A throwaway ejabberd node (Debian's 23.01) on 127.0.0.1.
//!
//! [`EjabberdBuilder`] writes a minimal configuration (one virtual host
//! `localhost`, c2s on a free port without TLS, an `ejabberd_service`
//! listener for each external component, `mod_roster`, `mod_disco`,
//! `mod_ping`, and `mod_admin_extra` for `add_rosteritem`) into a fresh
//! temporary directory, and starts `ejabberdctl foreground` with a node
//! name of its own, a cookie of its own and an `epmd` of its own on a free
//! port: nothing is shared with a system ejabberd or with another test.
//! Users are registered with `ejabberdctl register`.
//! [`EjabberdBuilder::join`] starts a second node with the first one's
//! cookie and `epmd`, and `ejabberdctl join_cluster`s it to the first.
//!
//! Dropping it stops the node (`ejabberdctl stop`, then SIGKILL), then
//! kills its `epmd`: nothing is left running, even when a test fails. A
//! node that joined another shares its `epmd`, which is killed once the
//! last node using it is gone, in whichever order they are dropped (a
//! node's `ejabberdctl` finding no `epmd` would start a daemon of its own
//! and leave it running). The life cycle
//! shared with the other servers (the guarded children, ports, directory,
//! log) is [`crate::process`]'s.
//!
//! The node runs as the `ejabberd` user (`ejabberdctl` refuses others than
//! it and root, and as root runs the node through `su`, in a session of its
//! own), so the tests that use this run as root or as `ejabberd`. It is
//! started as that user directly, so that no `su` stands between it and
//! the test process: `ejabberdctl` dies with the test process (a guarded
//! child), and the node, started through `setpriv --pdeathsig KILL` (the
//! `erl` that `ejabberdctl.cfg` names), dies with `ejabberdctl`.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::process::{
    self, file_len, free_ports, log_tail, poll_until, read_lossy, server_dir, Guarded, StartError,
    TempDir,
};

const EJABBERDCTL: &str = "ejabberdctl";
const EPMD: &str = "epmd";
const OUTPUT_FILE: &str = "ejabberd.out";
/// Runs Erlang so that it dies (SIGKILL) when its parent, `ejabberdctl`,
/// does: the parent-death signal survives the `exec`s down to `beam.smp`.
const ERL_WRAPPER: &str = "#!/bin/sh\nexec setpriv --pdeathsig KILL /usr/bin/erl \"$@\"\n";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the node is to serve.
#[derive(Debug, Clone, Default)]
pub struct EjabberdBuilder {
    components: Vec<(String, String)>,
    users: Vec<(String, String)>,
    /// The node to join: its name, cookie and epmd port.
    join: Option<(String, String, u16)>,
    /// The `epmd` of the node to join, shared.
    epmd: Option<Arc<Guarded>>,
    /// Top-level options added to `ejabberd.yml`.
    extra: String,
}

impl EjabberdBuilder {
    pub fn new() -> EjabberdBuilder {
        EjabberdBuilder::default()
    }

    /// An `ejabberd_service` listener (XEP-0114) for `domain` with this
    /// password, on [`Ejabberd::component_addr`].
    pub fn external_component(mut self, domain: &str, secret: &str) -> Self {
        self.components.push((domain.into(), secret.into()));
        self
    }

    /// An account `user@localhost`, registered once the node is up.
    pub fn user(mut self, jid: &str, password: &str) -> Self {
        self.users.push((jid.into(), password.into()));
        self
    }

    /// Adds these top-level options (YAML) to the node's `ejabberd.yml`,
    /// such as `domain_balancing`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Makes this node join `other`'s cluster once started
    /// (`ejabberdctl join_cluster`): the same cookie and the same `epmd`
    /// (killed once both nodes are dropped), the same `hosts`, and `other`'s
    /// Mnesia tables, users included. Users are best registered on
    /// `other`.
    pub fn join(mut self, other: &Ejabberd) -> Self {
        self.join = Some((other.node.clone(), other.cookie.clone(), other.epmd_port));
        self.epmd = other.epmd.clone();
        self
    }

    pub fn start(self) -> io::Result<Ejabberd> {
        self.start_on(None)
    }

    /// [`start`](Self::start), trying these c2s and component ports first.
    fn start_on(self, first: Option<[u16; 2]>) -> io::Result<Ejabberd> {
        let dir = server_dir()?;
        let (uid, gid) = ejabberd_user()?;
        for sub in ["spool", "logs"] {
            let p = dir.path().join(sub);
            fs::create_dir(&p)?;
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
        }
        set_mode(dir.path(), 0o755)?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let node = format!(
            "cptest{}x{}@localhost",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Picked together, so that no two of them are the same.
        let [mut c2s_port, mut component_port, own_epmd] = free_ports()?;
        if let Some([c2s, component]) = first {
            (c2s_port, component_port) = (c2s, component);
        }
        let (cookie, epmd_port) = match &self.join {
            Some((_, cookie, port)) => (cookie.clone(), *port),
            None => (format!("cookie{:016x}", rand_u64()), own_epmd),
        };
        let mut e = Ejabberd {
            dir,
            node,
            cookie,
            c2s_port,
            component_port,
            epmd_port,
            child: None,
            epmd: self.epmd.clone(),
        };
        e.write_config(&self)?;
        if self.join.is_none() {
            // Our own epmd, in the foreground, so that it is ours to stop;
            // the node finds it on ERL_EPMD_PORT and starts none, once it
            // listens (else the node starts a daemon of its own).
            let mut command = Command::new(EPMD);
            command
                .args(["-port", &e.epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut epmd = Guarded::spawn(command)?;
            epmd.wait_for_port(e.epmd_port, START_TIMEOUT)
                .map_err(|err| io::Error::new(err.kind(), format!("epmd: {err}")))?;
            e.epmd = Some(Arc::new(epmd));
        }
        // A port free when picked may be another test's by now.
        let launch = |e: &mut Ejabberd| {
            e.launch().map_err(|err| match port_taken(&err) {
                true => StartError::PortTaken(err),
                false => StartError::Failed(err),
            })
        };
        process::retry_on_taken_port(&mut e, PORT_ATTEMPTS, launch, |e| {
            [e.c2s_port, e.component_port] = free_ports()?;
            e.write_config(&self)
        })?;
        if let Some((other, _, _)) = &self.join {
            e.join_cluster(other)?;
        }
        for (jid, password) in &self.users {
            let (user, host) = jid
                .split_once('@')
                .ok_or_else(|| io::Error::other(format!("not a bare JID: {jid}")))?;
            e.ctl(&["register", user, host, password])?;
        }
        Ok(e)
    }
}

/// A running ejabberd node in its own temporary directory.
#[derive(Debug)]
#[must_use = "dropping it stops the server"]
pub struct Ejabberd {
    dir: TempDir,
    node: String,
    cookie: String,
    c2s_port: u16,
    component_port: u16,
    epmd_port: u16,
    child: Option<Guarded>,
    /// Its own, or that of the node it joined.
    epmd: Option<Arc<Guarded>>,
}

impl Ejabberd {
    /// Where clients connect (plain TCP, no TLS).
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.c2s_port))
    }

    /// Where external components connect (XEP-0114); the same across
    /// [`restart`](Self::restart)s.
    pub fn component_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.component_port))
    }

    /// The Erlang node name, unique to this instance.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("ejabberd.yml")
    }

    fn output_path(&self) -> PathBuf {
        self.dir().join(OUTPUT_FILE)
    }

    /// What the node printed (its log at `info`).
    pub fn log(&self) -> String {
        read_lossy(&self.output_path(), 0)
    }

    /// `ejabberdctl` with this node's configuration: the command's output,
    /// or an error with it if the command failed.
    pub fn ctl(&self, args: &[&str]) -> io::Result<String> {
        let out = self
            .ctl_command()
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(io::Error::other(format!(
                "ejabberdctl {} failed ({}): {text}",
                args.join(" "),
                out.status
            )))
        }
    }

    /// `ejabberdctl add_rosteritem`: puts `contact` (a bare JID or a
    /// domain) in `owner`'s roster with this subscription (`none`, `from`,
    /// `to`, `both`).
    pub fn add_rosteritem(&self, owner: &str, contact: &str, subscription: &str) -> io::Result<()> {
        let (user, host) = owner
            .split_once('@')
            .ok_or_else(|| io::Error::other(format!("not a bare JID: {owner}")))?;
        let (cuser, chost) = contact.split_once('@').unwrap_or(("", contact));
        self.ctl(&[
            "add_rosteritem",
            user,
            host,
            cuser,
            chost,
            contact,
            "",
            subscription,
        ])
        .map(drop)
    }

    /// Stops the node (as a crash or `ejabberdctl stop` would), keeping
    /// its directory and its `epmd`, which a node that joined it still
    /// uses; [`restart`](Self::restart) starts it again.
    pub fn stop(&mut self) {
        self.stop_node();
    }

    /// Stops the node and starts it again with the same spool, config and
    /// ports.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop_node();
        self.launch()
    }

    fn ctl_command(&self) -> Command {
        let d = self.dir();
        let mut c = Command::new(EJABBERDCTL);
        c.arg("--config-dir")
            .arg(d)
            .arg("--config")
            .arg(self.config_path())
            .arg("--ctl-config")
            .arg(d.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(d.join("spool"))
            .arg("--logs")
            .arg(d.join("logs"))
            .arg("--node")
            .arg(&self.node)
            .env("HOME", d)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("EJABBERD_BYPASS_WARNINGS", "true");
        c
    }

    fn write_config(&self, b: &EjabberdBuilder) -> io::Result<()> {
        let config = config_text(self.c2s_port, self.component_port, &b.components) + &b.extra;
        let d = self.dir();
        fs::write(self.config_path(), config)?;
        let cookie = &self.cookie;
        fs::write(
            d.join("ejabberdctl.cfg"),
            format!(
                "ERL_OPTIONS=\"-setcookie {cookie}\"\nERL_EPMD_ADDRESS=127.0.0.1\n\
                 ERL_EPMD_PORT={}\nexport ERL_EPMD_PORT\nEJABBERD_BYPASS_WARNINGS=true\n\
                 ERL=\"{}\"\n",
                self.epmd_port,
                d.join("erl").display()
            ),
        )?;
        fs::write(d.join("erl"), ERL_WRAPPER)?;
        set_mode(&d.join("erl"), 0o755)?;
        // As Debian's: names from /etc/hosts, localhost at 127.0.0.1.
        fs::write(
            d.join("inetrc"),
            "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n\
             {file, resolv, \"/etc/resolv.conf\"}.\n",
        )?;
        for f in ["ejabberd.yml", "ejabberdctl.cfg", "inetrc"] {
            set_mode(&d.join(f), 0o644)?;
        }
        Ok(())
    }

    /// `ejabberdctl join_cluster OTHER`: the node drops its own Mnesia
    /// data, copies `other`'s and starts its listeners again.
    fn join_cluster(&mut self, other: &str) -> io::Result<()> {
        let offset = file_len(&self.output_path());
        self.ctl(&["join_cluster", other])?;
        self.wait_listening(offset)
    }

    /// The nodes of the cluster this node is in (`ejabberdctl
    /// list_cluster`).
    pub fn cluster(&self) -> io::Result<Vec<String>> {
        Ok(self
            .ctl(&["list_cluster"])?
            .lines()
            .map(|l| l.trim().trim_matches('\'').to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn launch(&mut self) -> io::Result<()> {
        let out_path = self.output_path();
        let offset = file_len(&out_path);
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)?;
        let (uid, gid) = ejabberd_user()?;
        let mut command = self.ctl_command();
        command
            .uid(uid)
            .gid(gid)
            .arg("foreground")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        self.child = Some(Guarded::spawn(command)?);
        self.wait_listening(offset)
    }

    /// Waits for both listeners in what the node printed after `offset`.
    fn wait_listening(&mut self, offset: u64) -> io::Result<()> {
        let ready = [self.c2s_port, self.component_port]
            .map(|port| format!("Start accepting TCP connections at 127.0.0.1:{port}"));
        let out_path = self.output_path();
        let child = self.child.as_mut().expect("started");
        let waited = child.wait_until(START_TIMEOUT, || {
            let new = read_lossy(&out_path, offset);
            ready.iter().all(|r| new.contains(r.as_str())).then_some(())
        });
        waited.map_err(|err| {
            self.stop_node();
            let output = log_tail("ejabberd output", &out_path, offset, 100);
            io::Error::new(
                err.kind(),
                format!("ejabberd did not start ({err}):\n{output}"),
            )
        })
    }

    /// `ejabberdctl stop`, then SIGKILL for what is left of the node.
    fn stop_node(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.is_running() {
            let _ = self.ctl(&["stop"]);
        }
        child.stop(STOP_TIMEOUT, || false);
        // Should the node have left its group: find its beam by the node
        // name, which is this instance's alone.
        for pid in beam_pids(&self.node) {
            // SAFETY: kill(2) of the node this instance started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The node's name leaves epmd once its process is gone.
        poll_until(STOP_TIMEOUT, || {
            beam_pids(&self.node).is_empty().then_some(())
        });
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        process::print_log_if_panicking("ejabberd output", &self.output_path(), 40);
        self.stop_node();
        // Only once the node is gone.
        self.epmd = None;
    }
}

/// The `ejabberd.yml` the node runs with: c2s on `c2s_port`, and, for
/// the components (domain, password), an `ejabberd_service` listener on
/// `component_port`. The README's example is this text.
pub fn config_text(c2s_port: u16, component_port: u16, components: &[(String, String)]) -> String {
    let mut services = String::new();
    if !components.is_empty() {
        services.push_str(&format!(
            "  -\n    port: {component_port}\n    ip: \"127.0.0.1\"\n    module: ejabberd_service\n    hosts:\n"
        ));
        for (domain, secret) in components {
            services.push_str(&format!(
                "      \"{domain}\":\n        password: \"{secret}\"\n"
            ));
        }
    }
    format!(
        "hosts:\n  - localhost\nloglevel: info\n\
         listen:\n  -\n    port: {c2s_port}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n\
         \x20   starttls_required: false\n    shaper: none\n{services}\
         auth_method: internal\nauth_password_format: plain\n\
         modules:\n  mod_roster: {{}}\n  mod_disco: {{}}\n  mod_ping: {{}}\n  mod_admin_extra: {{}}\n"
    )
}

/// The processes whose command line runs this node (`-sname NODE`).
fn beam_pids(node: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim() == "beam.smp"
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"-sname" && w[1] == node.as_bytes())
            })
        })
        .collect()
}

fn ejabberd_user() -> io::Result<(u32, u32)> {
    let name = c"ejabberd";
    // SAFETY: getpwnam with a NUL-terminated name; the fields are copied
    // out before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(io::Error::other(
            "no user 'ejabberd': install Debian's ejabberd (scripts/setup)",
        ));
    }
    // SAFETY: non-null, as getpwnam returned it.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// How many times a node is started on fresh ports when one is taken.
const PORT_ATTEMPTS: usize = 3;

/// Whether a failed start says that a port was in use.
fn port_taken(err: &io::Error) -> bool {
    let text = err.to_string();
    text.contains("eaddrinuse") || text.contains("already in use")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_taken_port_moves_the_node_to_others() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let [other] = free_ports().unwrap();
        let node = EjabberdBuilder::new()
            .external_component("proxy.localhost", "secret")
            .start_on(Some([taken, other]))
            .unwrap();
        assert_ne!(node.c2s_addr().port(), taken);
        let config = fs::read_to_string(node.config_path()).unwrap();
        assert!(config.contains(&format!("port: {}", node.c2s_addr().port())));
        assert!(std::net::TcpStream::connect(node.c2s_addr()).is_ok());
    }

    #[test]
    fn the_epmd_of_a_cluster_goes_with_its_last_node() {
        let start = |builder: EjabberdBuilder| {
            let builder = builder.external_component("proxy.localhost", "secret");
            builder.start().unwrap()
        };
        let a = start(EjabberdBuilder::new());
        let b = start(EjabberdBuilder::new().join(&a));
        let epmd = SocketAddr::from((Ipv4Addr::LOCALHOST, a.epmd_port));
        // The node that started the epmd first.
        drop(a);
        drop(b);
        let listening = std::net::TcpStream::connect(epmd).is_ok();
        assert!(!listening, "an epmd is left on the cluster's port");
    }
}
