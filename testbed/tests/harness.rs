//! The harness itself: servers start, serve real clients, stay apart and
//! go away.

use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use client_proxy_testbed::minidom::Element;
use client_proxy_testbed::{
    error_condition, iq, ping, spawn_echo, EchoMode, ProsodyBuilder, Xmpp, NS_TESTBED,
};

const T: Duration = Duration::from_secs(5);

fn served(reply: &Element) -> &Element {
    reply
        .get_child("served", NS_TESTBED)
        .unwrap_or_else(|| panic!("no <served/> in {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iq_reaches_a_full_jid_and_comes_back() {
    let server = ProsodyBuilder::new()
        .user("alice@localhost", "alice-pw")
        .user("bob@localhost", "bob-pw")
        .start()
        .unwrap();
    let addr = server.c2s_addr();
    let bob = Xmpp::connect(addr, "bob@localhost/phone", "bob-pw")
        .await
        .unwrap();
    assert_eq!(bob.jid().to_string(), "bob@localhost/phone");
    let bob = spawn_echo(bob);
    let mut alice = Xmpp::connect(addr, "alice@localhost/desk", "alice-pw")
        .await
        .unwrap();

    let reply = alice
        .request("bob@localhost/phone", "get", "ping-1", ping(), T)
        .await
        .expect("reply");
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(reply.attr("id"), Some("ping-1"));
    assert_eq!(reply.attr("from"), Some("bob@localhost/phone"));
    assert_eq!(reply.attr("to"), Some("alice@localhost/desk"));
    let served = served(&reply);
    assert_eq!(served.attr("resource"), Some("phone"));
    assert_eq!(served.attr("from"), Some("alice@localhost/desk"));

    assert_eq!(bob.served(), 1);
    assert_eq!(
        bob.seen(),
        vec![("alice@localhost/desk".to_owned(), "ping-1".to_owned())]
    );
    alice.disconnect().await;
    bob.stop().await.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_with_several_echoing_resources() {
    let server = ProsodyBuilder::new()
        .user("svc@localhost", "s")
        .user("r1@localhost", "1")
        .user("r2@localhost", "2")
        .start()
        .unwrap();
    let addr = server.c2s_addr();
    let mut resources = Vec::new();
    for resource in ["a", "b", "c"] {
        let jid = format!("svc@localhost/{resource}");
        resources.push(spawn_echo(Xmpp::connect(addr, &jid, "s").await.unwrap()));
    }
    let mut requesters = Vec::new();
    for (user, pw) in [("r1", "1"), ("r2", "2")] {
        let jid = format!("{user}@localhost/x");
        requesters.push(Xmpp::connect(addr, &jid, pw).await.unwrap());
    }

    // Every requester asks every resource, concurrently.
    let tasks: Vec<_> = requesters
        .into_iter()
        .enumerate()
        .map(|(n, mut requester)| {
            tokio::spawn(async move {
                for resource in ["a", "b", "c"] {
                    let id = format!("q{n}-{resource}");
                    let to = format!("svc@localhost/{resource}");
                    let reply = requester.request(&to, "set", &id, ping(), T).await.unwrap();
                    assert_eq!(served(&reply).attr("resource"), Some(resource));
                    assert_eq!(
                        served(&reply).attr("from"),
                        Some(requester.jid().to_string().as_str())
                    );
                }
                requester
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().disconnect().await;
    }
    for resource in &resources {
        assert_eq!(resource.served(), 2, "{}", resource.jid());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_can_go_silent_or_slow() {
    let server = ProsodyBuilder::new()
        .user("a@localhost", "a")
        .user("b@localhost", "b")
        .start()
        .unwrap();
    let addr = server.c2s_addr();
    let echo = spawn_echo(Xmpp::connect(addr, "b@localhost/r", "b").await.unwrap());
    let mut client = Xmpp::connect(addr, "a@localhost/r", "a").await.unwrap();

    echo.set_mode(EchoMode::Silent);
    let reply = client
        .request(
            "b@localhost/r",
            "get",
            "silent",
            ping(),
            Duration::from_millis(500),
        )
        .await;
    assert!(reply.is_none(), "{reply:?}");
    assert!(echo.wait_seen(1, T).await);
    assert_eq!(echo.served(), 0);

    echo.set_mode(EchoMode::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let reply = client
        .request("b@localhost/r", "get", "slow", ping(), T)
        .await
        .expect("delayed reply");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.attr("id"), Some("slow"));
    assert_eq!(echo.served(), 1);

    // Stopping hands the client back, still connected.
    let mut b = echo.stop().await;
    assert!(b.is_connected());
    client
        .send(iq("get", "direct", "b@localhost/r", Some(ping())))
        .await
        .unwrap();
    let request = b.recv(T).await.expect("request");
    assert_eq!(request.attr("id"), Some("direct"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_error_iqs() {
    let server = ProsodyBuilder::new()
        .user("a@localhost", "a")
        .start()
        .unwrap();
    let mut client = Xmpp::connect(server.c2s_addr(), "a@localhost/r", "a")
        .await
        .unwrap();
    // Nobody is online as this resource.
    let reply = client
        .request("a@localhost/nobody", "get", "e1", ping(), T)
        .await
        .expect("error reply");
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&reply),
        Some(("cancel".to_owned(), "service-unavailable".to_owned()))
    );
    // The server answers pings itself.
    let reply = client
        .request("localhost", "get", "p1", ping(), T)
        .await
        .unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(error_condition(&reply), None);
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    let server = ProsodyBuilder::new().start().unwrap();
    let pid = server.pid();
    let dir = server.dir().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(server.config_path().exists());
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    if std::env::var_os(client_proxy_testbed::KEEP_TESTDIR_ENV).is_none() {
        assert!(!dir.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_independently() {
    let one = ProsodyBuilder::new()
        .user("a@localhost", "1")
        .start()
        .unwrap();
    let mut two = ProsodyBuilder::new()
        .user("a@localhost", "2")
        .start()
        .unwrap();
    assert_ne!(one.c2s_addr(), two.c2s_addr());
    assert_ne!(one.dir(), two.dir());

    let mut c1 = Xmpp::connect(one.c2s_addr(), "a@localhost/r", "1")
        .await
        .unwrap();
    let mut c2 = Xmpp::connect(two.c2s_addr(), "a@localhost/r", "2")
        .await
        .unwrap();
    // Same account name, different servers and passwords.
    let wrong = Xmpp::connect(one.c2s_addr(), "a@localhost/x", "2").await;
    assert_eq!(wrong.unwrap_err().kind(), ErrorKind::PermissionDenied);

    let one_addr = one.c2s_addr();
    drop(one);
    assert!(two.is_running());
    assert!(c1.recv(T).await.is_none(), "server one is gone");
    assert!(!c1.is_connected());
    let refused = Xmpp::connect(one_addr, "a@localhost/r", "1").await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let reply = c2.request("localhost", "get", "p", ping(), T).await;
    assert_eq!(reply.unwrap().attr("type"), Some("result"));
    c2.disconnect().await;
}

#[test]
fn shell_runs_admin_commands() {
    let server = ProsodyBuilder::new()
        .virtual_host("auth.localhost")
        .enable_module("carbons")
        .start()
        .unwrap();
    let version = server.shell("server:version()").unwrap();
    let expected = format!("OK: {}", server.installation().version);
    assert!(version.contains(&expected), "{version}");
    let modules = server.shell("module:list(\"auth.localhost\")").unwrap();
    assert!(modules.contains("saslauth"), "{modules}");
    assert!(modules.contains("carbons"), "{modules}");
    assert!(server.shell("no_such_function()").is_err());
}

#[test]
fn a_broken_component_does_not_prevent_start() {
    let mut server = ProsodyBuilder::new()
        .component(
            "svc.localhost",
            "no_such_module",
            "target_address = \"svc@localhost\"",
        )
        .start()
        .unwrap();
    assert!(server.is_running());
    assert!(server
        .log()
        .contains("Unable to load module 'no_such_module'"));
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(config.contains(
        "Component \"svc.localhost\" \"no_such_module\"\n\ttarget_address = \"svc@localhost\""
    ));
}

#[test]
fn a_config_prosody_cannot_read_fails_with_its_complaint() {
    let error = ProsodyBuilder::new()
        .global_option("this is not lua")
        .start()
        .unwrap_err();
    assert!(error.to_string().contains("syntax error"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_can_be_added_while_running_and_survive_a_restart() {
    let mut server = ProsodyBuilder::new().log_level("info").start().unwrap();
    let wrong = Xmpp::connect(server.c2s_addr(), "late@localhost/r", "pw").await;
    assert_eq!(wrong.unwrap_err().kind(), ErrorKind::PermissionDenied);

    server.register("late@localhost", "pw").unwrap();
    let client = Xmpp::connect(server.c2s_addr(), "late@localhost/r", "pw")
        .await
        .unwrap();
    client.disconnect().await;

    let old_pid = server.pid();
    server.restart().unwrap();
    assert_ne!(server.pid(), old_pid);
    assert!(server.is_running());
    let client = Xmpp::connect(server.c2s_addr(), "late@localhost/r", "pw")
        .await
        .unwrap();
    client.disconnect().await;
    assert!(!server.log().contains("[debug]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_vanishes_without_closing_its_stream() {
    let server = ProsodyBuilder::new()
        .user("a@localhost", "a")
        .user("b@localhost", "b")
        .start()
        .unwrap();
    let addr = server.c2s_addr();
    let mut watcher = Xmpp::connect(addr, "a@localhost/watcher", "a")
        .await
        .unwrap();
    watcher.send_presence(None, 0).await.unwrap();
    // Another resource of the same account: its presence reaches the watcher.
    let mut victim = Xmpp::connect(addr, "a@localhost/victim", "a")
        .await
        .unwrap();
    victim.send_presence(Some("away"), 5).await.unwrap();
    let available = watcher
        .recv_matching(T, |s| {
            s.name() == "presence" && s.attr("from") == Some("a@localhost/victim")
        })
        .await
        .expect("victim's presence");
    assert_eq!(available.attr("type"), None);

    victim.kill();
    let gone = watcher
        .recv_matching(T, |s| {
            s.name() == "presence" && s.attr("from") == Some("a@localhost/victim")
        })
        .await
        .expect("unavailable presence generated by the server");
    assert_eq!(gone.attr("type"), Some("unavailable"));
    // No clean stream close for the victim, unlike the watcher below.
    assert!(!server
        .log()
        .contains("c2s stream for a@localhost/victim closed"));
    let sessions = server.shell("c2s:show()").unwrap();
    assert!(!sessions.contains("victim"), "{sessions}");
    assert!(sessions.contains("watcher"), "{sessions}");
    watcher.disconnect().await;
    assert!(server.wait_for_log("c2s stream for a@localhost/watcher closed", T));
}
