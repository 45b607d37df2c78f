//! A test process killed with SIGKILL runs no destructor: the servers it
//! started must die with it all the same.
//!
//! Each test runs itself again as a child process that starts a server,
//! says so and waits; the test kills that child with SIGKILL. This process
//! is a child subreaper, so whatever the child started and left behind
//! becomes this process's child: the test passes once none is left.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use std::{fs, thread};

use client_proxy_testbed::{proxy_server, EjabberdBuilder, ProsodyBuilder, DEPLOYMENT_ENV};

/// Set in the child: which server it starts.
const CHILD_ENV: &str = "CLIENT_PROXY_KILLED_CHILD";
/// How long what was left may take to go.
const GONE: Duration = Duration::from_secs(15);

/// One test at a time: each reaps any orphan this process is given.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn prosody_dies_with_the_test_process() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("prosody") {
        let server = ProsodyBuilder::new().start().unwrap();
        announce(&server.pid().to_string(), &[server.dir()]);
    }
    let pid = kill_child_after_start("prosody_dies_with_the_test_process", "prosody");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn the_component_dies_with_the_test_process() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("component") {
        let server = proxy_server("");
        let component = server.component.as_ref().expect("served by the component");
        let pid = component.pid().unwrap().to_string();
        let component_dir = component.config_path().parent().unwrap().to_owned();
        announce(&pid, &[server.prosody().dir(), &component_dir]);
    }
    let pid = kill_child_after_start("the_component_dies_with_the_test_process", "component");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn ejabberd_dies_with_the_test_process() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("ejabberd") {
        let node = EjabberdBuilder::new()
            .external_component("proxy.localhost", "secret")
            .start()
            .unwrap();
        announce(node.node(), &[node.dir()]);
    }
    kill_child_after_start("ejabberd_dies_with_the_test_process", "ejabberd");
}

/// In the child: tells the test an id and the servers' directories, then
/// waits to be killed (and never returns: dropping the server would stop
/// it, which is not what is tested).
fn announce(id: &str, dirs: &[&Path]) -> ! {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    println!("started {id} {}", dirs.join(" "));
    thread::sleep(Duration::from_secs(300));
    panic!("not killed");
}

/// Runs `test` in a child with `CHILD_ENV=server`, SIGKILLs it once the
/// server is up, and waits until nothing it started is left; removes the
/// servers' directories. The id the child announced.
fn kill_child_after_start(test: &str, server: &str) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: prctl(2) with plain integer arguments.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0, "cannot become a child subreaper");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--include-ignored", "--nocapture"])
        .arg("--test-threads=1")
        .env(CHILD_ENV, server)
        .env(DEPLOYMENT_ENV, "component")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let announced = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        // libtest may have begun the line with the test's name.
        .find_map(|line| Some(line.split_once("started ")?.1.to_owned()));
    child.kill().unwrap();
    child.wait().unwrap();
    let announced = announced.unwrap_or_else(|| panic!("the child did not start {server}"));
    let (id, dirs) = announced.split_once(' ').unwrap();
    let deadline = Instant::now() + GONE;
    let left = loop {
        let left = children();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<String> = left.iter().map(|pid| command_line(*pid)).collect();
    // Whatever was left: killed, and what it leaves in turn too.
    let mut rest = left.clone();
    for _ in 0..100 {
        if rest.is_empty() {
            break;
        }
        for pid in &rest {
            // SAFETY: kill(2) of a process this test process was given.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(50));
        rest = children();
    }
    for dir in dirs.split(' ') {
        let _ = fs::remove_dir_all(dir);
    }
    assert!(left.is_empty(), "{server} left processes behind: {lines:?}");
    id.to_owned()
}

/// This process's children, once those that have exited are reaped.
fn children() -> Vec<libc::pid_t> {
    // SAFETY: waitpid(2) with WNOHANG on any child; the test's own child
    // is reaped already and libtest starts none.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces.
                let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
                after.split_whitespace().nth(1) == Some(me.as_str())
            })
        })
        .collect()
}

fn command_line(pid: libc::pid_t) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let args = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default();
    format!("{pid}: {args} ({})", stat.trim())
}
