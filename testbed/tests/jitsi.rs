//! Jitsi Meet's layout, as its Debian installer and docker-jitsi-meet write
//! it: the focus component served by client_proxy in place of Jitsi's own
//! Lua mod_client_proxy, a jicofo-like implementing client on the auth
//! host, and the set-up steps those installers run (the roster subscription
//! between the focus account and the component, then a module reload).

use std::fs;
use std::path::Path;
use std::time::Duration;

use client_proxy_testbed::minidom::Element;
use client_proxy_testbed::{element, iq, plugin_dir, Prosody, ProsodyBuilder, TempDir, Xmpp};

const MEET: &str = "meet.localhost";
const AUTH: &str = "auth.meet.localhost";
const FOCUS_COMPONENT: &str = "focus.meet.localhost";
const FOCUS: &str = "focus@auth.meet.localhost";
const PASSWORD: &str = "pw";
const NS_FOCUS: &str = "http://jitsi.org/protocol/focus";
const ROOM: &str = "room1@conference.meet.localhost";
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(700);

/// Jitsi's prosody-plugins folder, with a stand-in for its Lua
/// mod_client_proxy that fails loudly if Prosody ever picks it.
fn jitsi_plugins() -> TempDir {
    let dir = TempDir::new().expect("a folder for Jitsi's plugins");
    fs::write(
        dir.path().join("mod_client_proxy.lua"),
        "error(\"Jitsi's own Lua mod_client_proxy was loaded instead of client_proxy's\");\n",
    )
    .unwrap();
    dir
}

/// The configuration Jitsi Meet's installer writes, with `plugin_paths`
/// listing `first` and then `second`.
fn jitsi_server(first: &Path, second: &Path) -> Prosody {
    ProsodyBuilder::new()
        .plugin_path(first)
        .plugin_path(second)
        .global_option(&format!("admins = {{ \"{FOCUS}\" }}"))
        .virtual_host_with(MEET, "authentication = \"internal_hashed\"")
        .virtual_host_with(
            AUTH,
            "authentication = \"internal_hashed\"\nmodules_enabled = { \"smacks\" }\nsmacks_hibernation_time = 15",
        )
        .component("conference.meet.localhost", "muc", "")
        .component(
            FOCUS_COMPONENT,
            "client_proxy",
            &format!("target_address = \"{FOCUS}\""),
        )
        .user(FOCUS, PASSWORD)
        .user(&format!("alice@{MEET}"), PASSWORD)
        .user(&format!("bob@{MEET}"), PASSWORD)
        .start()
        .expect("start Prosody with Jitsi Meet's layout")
}

async fn connect(server: &Prosody, jid: &str) -> Xmpp {
    Xmpp::connect(server.c2s_addr(), jid, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"))
}

/// Jicofo: the focus account online, with priority 0.
async fn jicofo(server: &Prosody, resource: &str) -> Xmpp {
    let mut focus = connect(server, &format!("{FOCUS}/{resource}")).await;
    focus.send_presence(None, 0).await.unwrap();
    // A ping to its own server, answered once the presence is through.
    let ping = element("ping", "urn:xmpp:ping", &[]).build();
    let pong = focus.request(AUTH, "get", "sync", ping, WAIT).await;
    assert!(pong.is_some(), "no answer to jicofo's ping");
    focus
}

/// A participant's conference request to the focus component, as Jitsi
/// Meet sends it.
fn conference_request(id: &str) -> Element {
    let conference = element(
        "conference",
        NS_FOCUS,
        &[("room", ROOM), ("machine-uid", "abc123")],
    )
    .append(element(
        "property",
        NS_FOCUS,
        &[("name", "startAudioMuted"), ("value", "9")],
    ))
    .build();
    iq("set", id, FOCUS_COMPONENT, Some(conference))
}

/// What jicofo does with a conference request: reads the participant from
/// the resource of `from`, and answers that the conference is ready.
/// Returns the participant it read.
async fn answer_conference(focus: &mut Xmpp, request: &Element) -> String {
    let from = request.attr("from").expect("a from");
    let (component, requester) = from.split_once('/').expect("a resource");
    assert_eq!(component, FOCUS_COMPONENT);
    let room = request
        .get_child("conference", NS_FOCUS)
        .and_then(|c| c.attr("room"))
        .expect("a conference with a room");
    let ready = element(
        "conference",
        NS_FOCUS,
        &[("ready", "true"), ("room", room), ("focusjid", FOCUS)],
    )
    .build();
    let reply = iq("result", request.attr("id").unwrap(), from, Some(ready));
    focus.send(reply).await.unwrap();
    requester.to_owned()
}

async fn next_request(focus: &mut Xmpp) -> Element {
    focus
        .recv_matching(WAIT, |s| {
            s.name() == "iq" && s.get_child("conference", NS_FOCUS).is_some()
        })
        .await
        .expect("a conference request at jicofo")
}

/// The answer to the request `id`, checked to be jicofo's.
async fn ready(client: &mut Xmpp, id: &str) {
    let reply = client
        .recv_matching(WAIT, |s| s.name() == "iq" && s.attr("id") == Some(id))
        .await
        .unwrap_or_else(|| panic!("{} got no answer to {id}", client.jid()));
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
    assert_eq!(reply.attr("from"), Some(FOCUS_COMPONENT));
    let conference = reply
        .get_child("conference", NS_FOCUS)
        .expect("jicofo's conference answer");
    assert_eq!(conference.attr("ready"), Some("true"));
    assert_eq!(conference.attr("room"), Some(ROOM));
}

async fn assert_quiet(client: &mut Xmpp) {
    let more = client.recv_matching(QUIET, |s| s.name() == "iq").await;
    assert!(
        more.is_none(),
        "{} got a second answer: {more:?}",
        client.jid()
    );
}

/// docker-jitsi-meet's `prosodyctl shell roster subscribe_both
/// focus@auth.meet.localhost focus.meet.localhost` (community
/// mod_roster_command, which neither Prosody ships): what it leaves behind,
/// the component in the focus account's roster with subscription `both`,
/// written through Prosody's rostermanager.
fn subscribe_both(server: &Prosody) {
    let (user, host) = FOCUS.split_once('@').unwrap();
    let lua = format!(
        "> local rm = require \"core.rostermanager\"; \
         local roster = rm.load_roster(\"{user}\", \"{host}\"); \
         roster[\"{FOCUS_COMPONENT}\"] = {{ subscription = \"both\", groups = {{}} }}; \
         assert(rm.save_roster(\"{user}\", \"{host}\", roster, \"{FOCUS_COMPONENT}\")); \
         rm.roster_push(\"{user}\", \"{host}\", \"{FOCUS_COMPONENT}\")"
    );
    server
        .shell(&lua)
        .expect("write the focus account's roster");
}

/// The component as the focus account's roster holds it.
fn roster_item(server: &Prosody) -> String {
    let (user, host) = FOCUS.split_once('@').unwrap();
    server
        .shell(&format!(
            "> require \"core.rostermanager\".load_roster(\"{user}\", \"{host}\")[\"{FOCUS_COMPONENT}\"].subscription"
        ))
        .expect("read the focus account's roster")
}

#[tokio::test]
async fn jicofo_serves_conferences_through_client_proxy_across_jitsis_set_up_steps() {
    let jitsi = jitsi_plugins();
    let server = jitsi_server(plugin_dir(), jitsi.path());
    let name = server.installation().name();
    let path = server
        .shell(&format!(
            "> prosody.hosts[\"{FOCUS_COMPONENT}\"].modules.client_proxy.module.path"
        ))
        .expect("the loaded module's path");
    assert!(
        path.contains(&*plugin_dir().to_string_lossy()),
        "{name}: not client_proxy's module: {path}"
    );
    // client_proxy put the component in the focus account's roster itself.
    assert!(roster_item(&server).contains("from"), "{name}");

    let mut focus = jicofo(&server, "focus1").await;
    let mut alice = connect(&server, &format!("alice@{MEET}/phone")).await;
    let mut bob = connect(&server, &format!("bob@{MEET}/laptop")).await;

    alice.send(conference_request("c1")).await.unwrap();
    let request = next_request(&mut focus).await;
    assert_eq!(
        answer_conference(&mut focus, &request).await,
        format!("alice@{MEET}/phone"),
        "{name}: jicofo reads the participant from the resource of from"
    );
    ready(&mut alice, "c1").await;

    // Requests in flight while the installer's steps run.
    alice.send(conference_request("c2")).await.unwrap();
    bob.send(conference_request("c3")).await.unwrap();
    let held = [
        next_request(&mut focus).await,
        next_request(&mut focus).await,
    ];

    subscribe_both(&server);
    assert!(roster_item(&server).contains("both"), "{name}");
    let reloaded = server
        .shell_args(&["module", "reload", "client_proxy"])
        .expect("prosodyctl shell module reload client_proxy");
    assert!(
        reloaded.contains("reloaded on 1 host"),
        "{name}: {reloaded}"
    );

    for request in &held {
        answer_conference(&mut focus, request).await;
    }
    ready(&mut alice, "c2").await;
    ready(&mut bob, "c3").await;
    assert_quiet(&mut alice).await;
    assert_quiet(&mut bob).await;

    // The resource is still known after the reload, without new presence.
    bob.send(conference_request("c4")).await.unwrap();
    let request = next_request(&mut focus).await;
    answer_conference(&mut focus, &request).await;
    ready(&mut bob, "c4").await;
    assert!(roster_item(&server).contains("both"), "{name}");

    let problems = server.warnings_and_errors();
    assert!(problems.is_empty(), "{name}: {problems:#?}");
}

#[test]
fn with_jitsis_plugins_listed_first_its_own_copy_is_loaded() {
    // Why the order in plugin_paths matters: Prosody takes the first
    // mod_client_proxy it finds.
    let jitsi = jitsi_plugins();
    let server = jitsi_server(jitsi.path(), plugin_dir());
    assert!(
        server
            .log()
            .contains("Jitsi's own Lua mod_client_proxy was loaded instead of client_proxy's"),
        "{}",
        server.installation().name()
    );
}
