//! Hostile input (H1-H5) against the component alone: a stand-in server
//! on the component's port forwards what servers are known to forward
//! (XML that is not namespace-well-formed, deep, large, back to back), so
//! that what the component does with each is seen byte for byte, and the
//! same link carries everything: a reconnection would show as a second
//! connection. The same inputs through real servers are in the testbed's
//! hostile suite.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client_proxy_testbed::{PROXY, TARGET};

const WAIT: Duration = Duration::from_secs(10);
const U: &str = "alice@localhost/r";

/// The server's side of the component's link.
struct Server {
    listener: TcpListener,
    link: TcpStream,
    /// Everything the component wrote after the handshake.
    written: Arc<Mutex<Vec<u8>>>,
    /// Top-level elements of `written` already looked at.
    seen: usize,
}

impl Server {
    /// Listens, and once `start` has the component connecting, takes its
    /// stream and handshake and brings resource `a` of the target online.
    fn start(start: impl FnOnce(SocketAddr) -> common::Running) -> (Server, common::Running) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = listener.try_clone().unwrap();
        let handshake = thread::spawn(move || {
            let (mut link, _) = accepting.accept().unwrap();
            read_until(&mut link, b"'>");
            link.write_all(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                  xmlns:stream='http://etherx.jabber.org/streams' id='fake' from='proxy.localhost'>",
            )
            .unwrap();
            read_until(&mut link, b"</handshake>");
            link.write_all(b"<handshake/>").unwrap();
            link
        });
        let component = start(addr);
        let link = handshake.join().unwrap();
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut reading = link.try_clone().unwrap();
        let sink = written.clone();
        thread::spawn(move || {
            let mut buf = [0; 65536];
            while let Ok(n) = reading.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut server = Server {
            listener,
            link,
            written,
            seen: 0,
        };
        server.expect(|s| s.contains("type='subscribe'"));
        server.send(&format!(
            "<presence from='{TARGET}' to='{PROXY}' type='subscribed'/>"
        ));
        server.expect(|s| s.contains("type='probe'"));
        server.send(&format!("<presence from='{TARGET}/a' to='{PROXY}'/>"));
        (server, component)
    }

    fn send(&mut self, xml: &str) {
        self.link.write_all(xml.as_bytes()).unwrap();
    }

    /// The top-level elements written so far.
    fn elements(&self) -> Vec<String> {
        split(&String::from_utf8_lossy(&self.written.lock().unwrap()))
    }

    /// Waits for the next element that `matches`, passing over others.
    fn expect(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let elements = self.elements();
            if let Some(i) = elements[self.seen..].iter().position(|e| matches(e)) {
                self.seen += i + 1;
                return elements[self.seen - 1].clone();
            }
            assert!(Instant::now() < deadline, "not written: {elements:#?}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The answer to request `id` from U: an error's condition, or
    /// "forwarded" if it was sent on to the target.
    fn outcome(&mut self, id: &str) -> String {
        let id_attr = format!("id='{id}'");
        let e = self.expect(|e| e.contains(&id_attr));
        if e.contains(&format!("to='{TARGET}/a'")) {
            return "forwarded".into();
        }
        assert!(e.contains(&format!("to='{U}'")), "{e}");
        let condition = e
            .split("<error")
            .nth(1)
            .and_then(|rest| rest.split('<').nth(1))
            .and_then(|c| c.split([' ', '/']).next())
            .unwrap_or("?");
        condition.to_owned()
    }

    /// No second connection came in: the link was never dropped.
    fn no_reconnection(&self) {
        self.listener.set_nonblocking(true).unwrap();
        assert!(
            self.listener.accept().is_err(),
            "the component connected again"
        );
    }
}

fn read_until(link: &mut TcpStream, end: &[u8]) {
    let mut got = Vec::new();
    let mut byte = [0];
    while !got.ends_with(end) {
        assert_eq!(link.read(&mut byte).unwrap(), 1, "the component left");
        got.push(byte[0]);
    }
}

/// Cuts the component's output into its top-level elements. What it writes
/// is namespace-well-formed XML, and the tests' attribute values hold no
/// `>`: counting tags is enough.
fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let mut rest = text;
    let mut offset = 0;
    while let Some(lt) = rest.find('<') {
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt..lt + gt + 1];
        if depth == 0 {
            start = offset + lt;
        }
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with("/>") {
            depth += 1;
        }
        offset += lt + gt + 1;
        rest = &text[offset..];
        if depth == 0 {
            out.push(text[start..offset].to_owned());
        }
    }
    out
}

fn request(id: &str, payload: &str) -> String {
    format!("<iq type='get' id='{id}' from='{U}' to='{PROXY}'>{payload}</iq>")
}

fn nested(levels: usize) -> String {
    format!("{}{}", "<d>".repeat(levels), "</d>".repeat(levels))
}

/// What servers forward, and what the component must do with each.
fn inputs() -> Vec<(&'static str, String, &'static str)> {
    let attr = |n: usize| format!("<q xmlns='urn:x' v='{}'/>", "v".repeat(n));
    vec![
        // Prosody's way of writing xml:foo.
        (
            "prosody-xml-foo",
            "<q xmlns='urn:x' xmlns:ns1='http://www.w3.org/XML/1998/namespace' ns1:foo='1'/>"
                .into(),
            "bad-request",
        ),
        // ejabberd's: xml:foo as it came; Prosody would mangle it on to T.
        (
            "xml-foo",
            "<q xmlns='urn:x' xml:foo='1'/>".into(),
            "bad-request",
        ),
        // ejabberd forwards the declaration of the xml prefix as it came.
        (
            "xmlns-xml",
            "<q xmlns='urn:x' xmlns:xml='http://www.w3.org/XML/1998/namespace'/>".into(),
            "forwarded",
        ),
        // ejabberd drops the declarations on the <iq> itself.
        (
            "unbound-prefix",
            "<q xmlns='urn:x' a:b='1'/>".into(),
            "bad-request",
        ),
        // The iq, q, and the rest: 65 and 64 elements deep.
        (
            "deep-65",
            format!("<q xmlns='urn:x'>{}</q>", nested(63)),
            "policy-violation",
        ),
        (
            "deep-64",
            format!("<q xmlns='urn:x'>{}</q>", nested(62)),
            "forwarded",
        ),
        ("deep-6000", nested(6_000), "policy-violation"),
        ("attribute-60k", attr(60_000), "forwarded"),
        ("stanza-600k", attr(600_000), "policy-violation"),
        (
            "many-attributes",
            format!(
                "<q xmlns='urn:x'{}/>",
                (0..20_000)
                    .map(|i| format!(" a{i}='1'"))
                    .collect::<String>()
            ),
            "forwarded",
        ),
        (
            "many-children",
            format!("<q xmlns='urn:x'>{}</q>", "<c/>".repeat(25_000)),
            "forwarded",
        ),
        (
            "lang-and-prefixes",
            "<a:q xmlns:a='urn:a' a:k='&apos;' xml:lang='en'>&lt;t&gt;</a:q>".into(),
            "forwarded",
        ),
    ]
}

#[test]
fn h1_what_a_server_forwards_costs_at_most_its_stanza() {
    let (mut server, component) =
        Server::start(|addr| common::start_component(addr, "timeout = 30"));
    // A request in flight beside them all, answered at the end.
    server.send(&request("beside", "<ping xmlns='urn:xmpp:ping'/>"));
    assert_eq!(server.outcome("beside"), "forwarded");
    for (id, payload, expected) in inputs() {
        server.send(&request(id, &payload));
        assert_eq!(server.outcome(id), expected, "{id}");
    }
    // Prosody's way of writing xml:foo on the iq itself: still answered.
    server.send(&format!(
        "<iq xmlns:ns1='http://www.w3.org/XML/1998/namespace' ns1:foo='1' type='get' \
         id='iq-xml-foo' from='{U}' to='{PROXY}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(server.outcome("iq-xml-foo"), "bad-request");
    server.send(&format!(
        "<iq type='result' id='beside' from='{TARGET}/a' to='{PROXY}/{U}'/>"
    ));
    let reply = server.expect(|e| e.contains("id='beside'"));
    assert!(
        reply.contains("type='result'") && reply.contains(&format!("to='{U}'")),
        "{reply}"
    );
    server.send(&request("after", "<ping xmlns='urn:xmpp:ping'/>"));
    assert_eq!(server.outcome("after"), "forwarded");
    server.no_reconnection();
    assert!(component.pid().is_some(), "{}", component.log());
}

#[test]
fn h2_nothing_a_server_forwards_stops_the_process() {
    let (mut server, mut component) = Server::start(|addr| common::start_component(addr, ""));
    // Replies, errors and presence carrying the same, and a start tag over
    // the size bound that cannot even be answered.
    for (id, payload, _) in inputs() {
        server.send(&format!(
            "<iq type='result' id='{id}' from='{TARGET}/a' to='{PROXY}/{U}'>{payload}</iq>\
             <message from='{U}' to='{PROXY}' id='{id}'>{payload}</message>\
             <presence from='{U}' to='{PROXY}'>{payload}</presence>"
        ));
    }
    server.send(&format!(
        "<iq type='get' id='huge' big='{}' from='{U}' to='{PROXY}'/>",
        "&apos;".repeat(100_000)
    ));
    server.send(&request("after", "<ping xmlns='urn:xmpp:ping'/>"));
    assert_eq!(server.outcome("after"), "forwarded");
    server.no_reconnection();
    // Still running: terminating it now is a clean stop.
    assert!(component.terminate().success(), "{}", component.log());
}

#[test]
fn h3_timers_keep_their_times_under_a_flood_of_worst_case_stanzas() {
    let (mut server, component) =
        Server::start(|addr| common::start_component(addr, "timeout = 1"));
    server.send(&request("slow", "<ping xmlns='urn:xmpp:ping'/>"));
    assert_eq!(server.outcome("slow"), "forwarded");
    let sent = Instant::now();
    // Three seconds of the largest and deepest stanzas, back to back.
    let flood = [
        request("f1", &nested(6_000)),
        request(
            "f2",
            &format!("<q xmlns='urn:x' v='{}'/>", "v".repeat(490_000)),
        ),
        request(
            "f3",
            &format!(
                "<q xmlns='urn:x'{}/>",
                (0..30_000)
                    .map(|i| format!(" a{i}='1'"))
                    .collect::<String>()
            ),
        ),
    ]
    .concat();
    let mut link = server.link.try_clone().unwrap();
    let flooding = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if link.write_all(flood.as_bytes()).is_err() {
                break;
            }
        }
    });
    let timeout = server.expect(|e| e.contains("id='slow'") && e.contains("remote-server-timeout"));
    let late = sent.elapsed().saturating_sub(Duration::from_secs(1));
    flooding.join().unwrap();
    assert!(timeout.contains(&format!("to='{U}'")), "{timeout}");
    eprintln!("the timeout fired {late:?} late");
    // Debug build, a loaded machine: a generous bound, far below what a
    // loop that parsed a flood without yielding would take.
    assert!(
        late < Duration::from_millis(500),
        "the timeout fired {late:?} late"
    );
    server.no_reconnection();
    drop(component);
}

#[test]
fn h4_payloads_kept_for_retries_are_bounded() {
    let (mut server, _component) = Server::start(|addr| {
        common::start_component(addr, "attempts = 2\nmax_bytes_in_flight = 20000")
    });
    let payload = format!("<q xmlns='urn:x'>{}</q>", "x".repeat(6_000));
    for id in ["k1", "k2", "k3"] {
        server.send(&request(id, &payload));
        assert_eq!(server.outcome(id), "forwarded", "{id}");
    }
    server.send(&request("k4", &payload));
    assert_eq!(server.outcome("k4"), "resource-constraint");
    server.send(&format!(
        "<iq type='result' id='k1' from='{TARGET}/a' to='{PROXY}/{U}'/>"
    ));
    server.expect(|e| e.contains("id='k1'"));
    server.send(&request("k5", &payload));
    assert_eq!(server.outcome("k5"), "forwarded");
}

#[test]
fn h5_what_would_break_the_service_never_reaches_it() {
    let (mut server, _component) = Server::start(|addr| common::start_component(addr, ""));
    for (id, payload, expected) in inputs() {
        server.send(&request(id, &payload));
        let outcome = server.outcome(id);
        assert_eq!(outcome, expected, "{id}");
    }
    // Of what was refused, nothing was written towards the target.
    let refused: Vec<_> = inputs()
        .into_iter()
        .filter(|(_, _, e)| *e != "forwarded")
        .map(|(id, _, _)| format!("id='{id}'"))
        .collect();
    for e in server.elements() {
        if e.contains(&format!("to='{TARGET}/a'")) {
            assert!(!refused.iter().any(|id| e.contains(id.as_str())), "{e}");
        }
    }
}
