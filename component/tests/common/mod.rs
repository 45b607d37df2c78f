//! What the component's end-to-end tests share: the binary, run until
//! dropped, and reading its replies.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_proxy_testbed::{error_condition, ping, TempDir, Xmpp, PROXY, TARGET};
use minidom::Element;

pub const WAIT: Duration = Duration::from_secs(5);
pub const SECRET: &str = "component-secret";

/// The binary, running until dropped (killed then, never left running).
pub struct Running {
    child: Option<Child>,
    dir: TempDir,
}

impl Running {
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("component.log")
    }

    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the component did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- component log ---\n{}", self.log());
        }
    }
}

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_client-proxy-component"))
}

/// Starts the binary against `server` with this TOML (plus `extra` lines).
pub fn start_component(server: std::net::SocketAddr, extra: &str) -> Running {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("component.toml");
    fs::write(
        &config,
        format!(
            "domain = \"{PROXY}\"\nserver = \"{}\"\nsecret = \"{SECRET}\"\n\
             target_address = \"{TARGET}\"\nlog_level = \"debug\"\n{extra}\n",
            server
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.path().join("component.log")).unwrap();
    let child = binary()
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the component");
    let running = Running {
        child: Some(child),
        dir,
    };
    assert!(
        running.wait_for_log("Connected to", 1, WAIT),
        "the component did not connect:\n{}",
        running.log()
    );
    running
}

pub async fn get(client: &mut Xmpp, id: &str) -> Option<Element> {
    client.request(PROXY, "get", id, ping(), WAIT).await
}

pub fn served(reply: &Element) -> (String, String) {
    let s = reply
        .get_child("served", "urn:client-proxy:testbed")
        .unwrap_or_else(|| panic!("not served by the echo service: {}", String::from(reply)));
    (
        s.attr("resource").unwrap().into(),
        s.attr("from").unwrap().into(),
    )
}

pub fn assert_error(reply: Option<Element>, ty: &str, condition: &str) {
    let reply = reply.expect("an error reply");
    assert_eq!(
        error_condition(&reply),
        Some((ty.to_string(), condition.to_string())),
        "{}",
        String::from(&reply)
    );
}
