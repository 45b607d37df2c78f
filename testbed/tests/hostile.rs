//! "Hostile input" (docs/behaviour.md, H1, H2, H4, H5) through a real server: a requester
//! writes raw bytes to its own c2s stream, as an attacker would, and the
//! server forwards what it parsed to the proxy. Whatever arrives, the
//! proxy answers only that request, and the implementing client's sessions
//! neither receive it nor are closed by it.
//!
//! Two kinds of implementing client are used: a [`RawClient`], whose lenient
//! reader has no size limit, where the test must see exactly what reached
//! the service (legitimate payloads of any size, and that nothing hostile
//! arrived); and real clients (tokio-xmpp, a strict namespace-aware parser
//! as slixmpp has) where what matters is that their sessions survive.

use std::collections::BTreeMap;
use std::time::Duration;

use client_proxy_testbed::{
    error_condition, iq, ping, proxy_server, served_by, spawn_echo, Deployment, ProxyServer,
    RawClient, Xmpp, PASSWORD, PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);
/// How long to wait for something that must not arrive.
const QUIET: Duration = Duration::from_millis(700);

const BAD_REQUEST: (&str, &str) = ("modify", "bad-request");
const POLICY_VIOLATION: (&str, &str) = ("modify", "policy-violation");

/// A request that must not reach the service, and the error it gets.
struct Hostile {
    what: String,
    id: String,
    bytes: String,
    error: (&'static str, &'static str),
}

/// A request whose payload must reach the service untouched.
struct Legitimate {
    what: &'static str,
    id: &'static str,
    payload: String,
}

/// `<iq type='get'>` to the proxy, with more attributes (starting with a
/// space) and a payload, as bytes on the wire.
fn get(id: &str, iq_attrs: &str, payload: &str) -> String {
    format!("<iq type='get' id='{id}' to='{PROXY}'{iq_attrs}>{payload}</iq>")
}

/// `levels` elements, each inside the one before.
fn nested(levels: usize) -> String {
    assert!(levels > 0);
    format!(
        "<d xmlns='urn:x:deep'>{}{}",
        "<d>".repeat(levels - 1),
        "</d>".repeat(levels)
    )
}

/// Whether ejabberd is the server, which takes some hostile input out
/// before P sees it.
fn on_ejabberd() -> bool {
    Deployment::selected() == Deployment::Ejabberd
}

/// The deepest nesting the server passes on: ejabberd closes the stream of
/// a client that sends 6,000 levels (its limit lies above 2,000), Prosody
/// passes them.
fn deepest() -> usize {
    if on_ejabberd() {
        2000
    } else {
        6000
    }
}

/// The hostile requests of H1 and H5, with ids ending in `tag`. The default
/// `client_proxy_max_depth` is 64.
fn hostile_requests(tag: &str) -> Vec<Hostile> {
    let case = |what: &str, name: &str, iq_attrs: &str, payload: &str, error| {
        let id = format!("h-{name}-{tag}");
        Hostile {
            what: what.to_owned(),
            bytes: get(&id, iq_attrs, payload),
            id,
            error,
        }
    };
    let mut cases = vec![
        case(
            "an xml: attribute other than xml:lang on a child",
            "xml-child",
            "",
            "<q xmlns='urn:x' xml:foo='1'/>",
            BAD_REQUEST,
        ),
        case(
            "65 levels of payload below the iq",
            "deep-65",
            "",
            &nested(65),
            POLICY_VIOLATION,
        ),
        case(
            &format!("{} levels of payload below the iq", deepest()),
            "deep-most",
            "",
            &nested(deepest()),
            POLICY_VIOLATION,
        ),
    ];
    // ejabberd rebuilds the iq element with the attributes it knows: the
    // request reaches P without it.
    if !on_ejabberd() {
        cases.push(case(
            "an xml: attribute other than xml:lang on the iq",
            "xml-iq",
            " xml:foo='1'",
            "<q xmlns='urn:x'/>",
            BAD_REQUEST,
        ));
    }
    cases
}

/// Payloads that are namespace-well-formed and within the bounds.
fn legitimate_requests() -> Vec<Legitimate> {
    let case = |what, id, payload: &str| Legitimate {
        what,
        id,
        payload: payload.to_owned(),
    };
    vec![
        case(
            "xml:lang on a child",
            "l-lang",
            "<q xmlns='urn:x' xml:lang='de'>Hallo</q>",
        ),
        case(
            "a prefix declared on the element that uses it",
            "l-prefix",
            "<a:q xmlns:a='urn:a' a:b='1'/>",
        ),
        case(
            "a prefix declared on an ancestor, and default namespaces below",
            "l-prefixes",
            "<a:q xmlns:a='urn:a'><a:r a:s='2'/><t xmlns='urn:t' a:u='3'><v/></t></a:q>",
        ),
        // The iq is the first of the 64.
        case("nesting 64 deep, the iq included", "l-deep-64", &nested(63)),
        case(
            "an attribute of 40 KB",
            "l-40kb",
            &format!("<q xmlns='urn:x' v='{}'/>", "x".repeat(40 * 1024)),
        ),
        case(
            "escaped characters in text and attributes",
            "l-escaped",
            "<q xmlns='urn:x' v='&apos;&quot;&lt;&gt;&amp;'>&apos;&quot;&lt;&gt;&amp;</q>",
        ),
    ]
}

/// The requester that sends raw bytes.
async fn attacker(server: &ProxyServer) -> RawClient {
    RawClient::login(server.c2s_addr(), "carol@localhost/raw", PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("carol cannot log in: {e}"))
}

/// A resource of the target answered by hand through a [`RawClient`],
/// online and known to the proxy by the time this returns.
async fn raw_service(server: &ProxyServer, resource: &str) -> RawClient {
    let jid = format!("{TARGET}/{resource}");
    let mut service = RawClient::login(server.c2s_addr(), &jid, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"));
    service.send_presence(0).await.expect("send presence");
    service.sync().await;
    service
}

fn is_request(stanza: &Element) -> bool {
    stanza.name() == "iq" && matches!(stanza.attr("type"), Some("get" | "set"))
}

fn answers(id: &str) -> impl Fn(&Element) -> bool + '_ {
    move |s| s.name() == "iq" && s.attr("id") == Some(id) && s.attr("type") != Some("get")
}

/// The first child of an iq.
fn payload_of(iq: &Element) -> &Element {
    iq.children()
        .next()
        .unwrap_or_else(|| panic!("no payload in {}", show(iq)))
}

/// An element for a failure message, cut short.
fn show(element: &Element) -> String {
    short(&String::from(element))
}

/// XML for a failure message, cut short.
fn short(xml: &str) -> String {
    match xml.char_indices().nth(400) {
        Some((cut, _)) => format!("{}... ({} bytes)", &xml[..cut], xml.len()),
        None => xml.to_owned(),
    }
}

/// What `client` received and could not parse, for a failure message.
fn unparsable(client: &RawClient) -> String {
    let raw: Vec<String> = client.unparsable().iter().map(|x| short(x)).collect();
    raw.join("\n")
}

/// The hand-driven service has received nothing it cannot parse: nothing
/// that would have closed a strict client's stream.
fn assert_all_parsable(service: &RawClient, after: &str) {
    assert!(
        service.unparsable().is_empty(),
        "after {after}, {} received XML that a namespace-aware parser rejects:\n{}",
        service.jid(),
        unparsable(service)
    );
}

fn assert_error(reply: &Element, (ty, condition): (&str, &str), what: &str) {
    assert_eq!(
        (reply.attr("type"), error_condition(reply)),
        (Some("error"), Some((ty.to_owned(), condition.to_owned()))),
        "{what}: {}",
        show(reply)
    );
    assert_eq!(reply.attr("from"), Some(PROXY), "{what}: {}", show(reply));
}

/// Sends a hostile request and returns its answer; if there is none, says
/// whether the service got the request instead.
async fn refused(attacker: &mut RawClient, case: &Hostile, service: &mut RawClient) -> Element {
    attacker.send_raw(case.bytes.as_bytes()).await.unwrap();
    match attacker.recv_matching(WAIT, answers(&case.id)).await {
        Some(reply) => reply,
        None => {
            let reached = service.recv_matching(QUIET, is_request).await;
            panic!(
                "{}: no answer; the service received {}{}",
                case.what,
                reached.as_ref().map_or("no request".into(), show),
                match unparsable(service) {
                    raw if raw.is_empty() => String::new(),
                    raw => format!(", and could not parse:\n{raw}"),
                }
            )
        }
    }
}

/// The next request a hand-driven resource receives.
async fn next_request(service: &mut RawClient, after: &str) -> Element {
    match service.recv_matching(WAIT, is_request).await {
        Some(request) => request,
        None => {
            let open = service.is_open();
            panic!(
                "after {after}: {} received no request (stream open: {open}); \
                 it could not parse:\n{}",
                service.jid(),
                unparsable(service)
            )
        }
    }
}

/// Answers `request` with a result carrying `payload`.
async fn answer(service: &mut RawClient, request: &Element, payload: Option<Element>) {
    let reply = iq(
        "result",
        request.attr("id").unwrap(),
        request.attr("from").unwrap(),
        payload,
    );
    service.send(&reply).await.expect("send the answer");
}

/// An ordinary get from `requester`, served by the hand-driven `service`:
/// the next request it receives is this one, addressed to the same session.
async fn ordinary_get_is_served(
    requester: &mut Xmpp,
    service: &mut RawClient,
    id: &str,
    after: &str,
) {
    requester
        .send(iq("get", id, PROXY, Some(ping())))
        .await
        .unwrap();
    let request = next_request(service, after).await;
    assert_eq!(
        request.attr("id"),
        Some(id),
        "after {after}: the service received {}",
        show(&request)
    );
    assert_eq!(request.attr("to"), Some(service.jid().as_str()));
    answer(service, &request, None).await;
    let reply = requester
        .recv_matching(WAIT, answers(id))
        .await
        .unwrap_or_else(|| panic!("after {after}: no answer to {id}"));
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    assert!(
        service.is_open(),
        "after {after}: the service's stream closed"
    );
    assert_all_parsable(service, after);
}

/// In the component deployments, the component's link to the server was
/// never lost: it connected once.
fn assert_link_kept(server: &ProxyServer) {
    if let Some(component) = &server.component {
        let log = component.log();
        assert_eq!(
            log.matches("Connected to").count(),
            1,
            "the component connected again:\n{log}"
        );
    }
}

/// Whether this process exists and is not a zombie.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...", and comm may hold spaces or parentheses.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

#[tokio::test]
async fn h1_hostile_requests_are_refused_and_the_service_is_not_disturbed() {
    let server = proxy_server("");
    let mut service = raw_service(&server, "r1").await;
    let mut carol = attacker(&server).await;
    let mut bob = server.client("bob", "laptop").await;
    for (i, case) in hostile_requests("1").iter().enumerate() {
        let reply = refused(&mut carol, case, &mut service).await;
        assert_error(&reply, case.error, &case.what);
        // The next request the service sees is an ordinary one: the
        // hostile one never reached it, and its session is the same.
        ordinary_get_is_served(&mut bob, &mut service, &format!("after-{i}"), &case.what).await;
    }
    assert_link_kept(&server);
}

#[tokio::test]
async fn h1_legitimate_payloads_reach_the_service_untouched() {
    let server = proxy_server("");
    let mut service = raw_service(&server, "r1").await;
    let mut carol = attacker(&server).await;
    for case in legitimate_requests() {
        let bytes = get(case.id, "", &case.payload);
        let sent = RawClient::parse(&bytes).expect("a well-formed request");
        let sent = payload_of(&sent);
        carol.send_raw(bytes.as_bytes()).await.unwrap();
        let request = next_request(&mut service, case.what).await;
        assert_eq!(request.attr("id"), Some(case.id), "{}", case.what);
        let received = payload_of(&request);
        assert!(
            received == sent,
            "{}: the service received\n{}\ninstead of\n{}",
            case.what,
            show(received),
            show(sent)
        );
        // The service echoes it, and that comes back untouched too.
        answer(&mut service, &request, Some(received.clone())).await;
        let reply = carol
            .recv_matching(WAIT, answers(case.id))
            .await
            .unwrap_or_else(|| panic!("{}: no answer", case.what));
        assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
        let echoed = payload_of(&reply);
        assert!(
            echoed == sent,
            "{}: the requester got back\n{}\ninstead of\n{}",
            case.what,
            show(echoed),
            show(sent)
        );
        assert_all_parsable(&service, case.what);
    }
    assert!(service.is_open());
    assert_link_kept(&server);
}

#[tokio::test]
async fn h1_a_request_in_flight_beside_hostile_ones_is_answered_after_them() {
    let server = proxy_server("");
    let mut service = raw_service(&server, "r1").await;
    let mut carol = attacker(&server).await;
    let mut bob = server.client("bob", "laptop").await;
    bob.send(iq("get", "beside", PROXY, Some(ping())))
        .await
        .unwrap();
    let held = next_request(&mut service, "the request beside").await;
    assert_eq!(held.attr("id"), Some("beside"));
    for case in hostile_requests("1") {
        let reply = refused(&mut carol, &case, &mut service).await;
        assert_error(&reply, case.error, &case.what);
    }
    assert!(
        bob.recv(QUIET).await.is_none(),
        "the request in flight was answered before the service answered it"
    );
    assert!(
        service.recv_matching(QUIET, is_request).await.is_none(),
        "a hostile request reached the service"
    );
    assert_all_parsable(&service, "the hostile requests");
    answer(&mut service, &held, None).await;
    let reply = bob
        .recv_matching(WAIT, answers("beside"))
        .await
        .expect("the answer to the request in flight");
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    assert_eq!(reply.attr("from"), Some(PROXY));
    assert_link_kept(&server);
}

/// Every kind of stanza a requester can send to the proxy, with hostile
/// content: what H2 throws at it back to back. Gets and sets carry only
/// what must never reach the service; the others, which reach no service
/// anyway, also carry 200 KB (within Prosody's 256 KiB) and a declaration
/// of the `xml` prefix.
fn hostile_stanzas() -> Vec<String> {
    let deep = nested(deepest());
    let over = nested(65);
    let big = format!("<q xmlns='urn:x' v='{}'/>", "x".repeat(200 * 1024));
    let mut forbidden: Vec<(&str, &str)> = vec![
        ("", "<q xmlns='urn:x' xml:foo='1'/>"),
        ("", &over),
        ("", &deep),
    ];
    // ejabberd takes an attribute it does not know off the iq element, and
    // what is left is an ordinary request.
    if !on_ejabberd() {
        forbidden.push((" xml:foo='1'", "<q xmlns='urn:x'/>"));
    }
    let harmless: [(&str, &str); 2] = [
        ("", &big),
        (
            "",
            "<q xmlns='urn:x' xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
        ),
    ];
    let mut stanzas = Vec::new();
    for (i, (attrs, payload)) in forbidden.iter().enumerate() {
        for ty in ["get", "set"] {
            stanzas.push(format!(
                "<iq type='{ty}' id='h2-{ty}-{i}' to='{PROXY}/x'{attrs}>{payload}</iq>"
            ));
        }
    }
    for (i, (attrs, payload)) in forbidden.iter().chain(&harmless).enumerate() {
        stanzas.extend([
            format!("<message id='h2-m-{i}' to='{PROXY}'{attrs}>{payload}</message>"),
            format!("<presence id='h2-p-{i}' to='{PROXY}'{attrs}>{payload}</presence>"),
            format!("<iq type='result' id='h2-r-{i}' to='{PROXY}/x'{attrs}>{payload}</iq>"),
            format!("<iq type='error' id='h2-e-{i}' to='{PROXY}'{attrs}>{payload}</iq>"),
        ]);
    }
    stanzas
}

#[tokio::test]
async fn h2_hostile_input_leaves_no_lua_error_and_the_component_running() {
    let server = proxy_server("");
    let service = spawn_echo(server.service("r1").await);
    let mut carol = attacker(&server).await;
    let mut bob = server.client("bob", "laptop").await;
    for stanza in hostile_stanzas() {
        carol.send_raw(stanza.as_bytes()).await.unwrap();
    }
    // The server has passed them all on once it answers this.
    carol.sync().await;
    let reply = bob.request(PROXY, "get", "after", ping(), WAIT).await;
    let reply = reply.expect("an answer to an ordinary request");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "the service's session did not survive: {}",
        show(&reply)
    );
    assert_eq!(service.seen().len(), 1, "{:?}", service.seen());

    match &server.component {
        None => {
            let log = server.prosody().log();
            let errors: Vec<&str> = log
                .lines()
                .filter(|line| {
                    line.to_lowercase().contains("traceback")
                        || (line.contains("\terror\t") && line.contains("client_proxy"))
                })
                .collect();
            assert!(errors.is_empty(), "{errors:#?}");
        }
        Some(component) => {
            let pid = component.pid().expect("started");
            let log = component.log();
            assert!(running(pid), "the component exited:\n{log}");
            assert!(!log.contains("panicked"), "{log}");
        }
    }
    assert_link_kept(&server);
}

#[tokio::test]
async fn h4_payloads_kept_for_retries_are_bounded() {
    let server =
        proxy_server("client_proxy_attempts = 2\nclient_proxy_max_bytes_in_flight = 20000");
    let mut service = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    let payload = || {
        Element::builder("q", "urn:x")
            .append("x".repeat(6000))
            .build()
    };
    // Three of about 6 KB are kept: about 18 KB.
    for i in 0..3 {
        alice
            .send(iq("get", &format!("held-{i}"), PROXY, Some(payload())))
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    for i in 0..3 {
        let request = service
            .recv_matching(WAIT, is_request)
            .await
            .unwrap_or_else(|| panic!("request {i} of 3 did not reach the service"));
        held.push(request);
    }
    // A fourth would pass 20000, whoever sends it.
    let over = bob.request(PROXY, "get", "over", payload(), WAIT).await;
    assert_error(
        &over.expect("an answer to the request over the bound"),
        ("wait", "resource-constraint"),
        "over the bound",
    );
    assert!(
        service.recv_matching(QUIET, is_request).await.is_none(),
        "the request over the bound reached the service"
    );
    // Once they are answered, the bytes are free again.
    for request in &held {
        let reply = iq(
            "result",
            request.attr("id").unwrap(),
            request.attr("from").unwrap(),
            None,
        );
        service.send(reply).await.unwrap();
    }
    for _ in 0..3 {
        let reply = alice
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .expect("an answer to a held request");
        assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    }
    bob.send(iq("get", "again", PROXY, Some(payload())))
        .await
        .unwrap();
    let request = service
        .recv_matching(WAIT, is_request)
        .await
        .expect("the request after the bound was freed");
    assert_eq!(request.attr("id"), Some("again"));
    assert_link_kept(&server);
}

#[tokio::test]
async fn h5_no_request_closes_a_session_of_the_implementing_client() {
    // In turn, so that every resource would get each hostile request.
    let server = proxy_server("client_proxy_balance = \"round_robin\"");
    let names = ["r1", "r2", "r3"];
    let mut services = Vec::new();
    for name in names {
        services.push(spawn_echo(server.service(name).await));
    }
    let jids: Vec<String> = services.iter().map(|s| s.jid().to_string()).collect();
    let mut carol = attacker(&server).await;
    let mut bob = server.client("bob", "laptop").await;
    for round in 0..names.len() {
        for case in hostile_requests(&round.to_string()) {
            carol.send_raw(case.bytes.as_bytes()).await.unwrap();
            // Whatever the answer (H1 checks it), one at a time.
            let _ = carol.recv_matching(WAIT, answers(&case.id)).await;
        }
    }
    // Every session is still there, with its JID, and serves its share.
    let mut seen = BTreeMap::new();
    for i in 0..3 * names.len() {
        let reply = bob
            .request(PROXY, "get", &format!("after-{i}"), ping(), WAIT)
            .await
            .expect("an answer to an ordinary request");
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "served so far {seen:?}, then {}",
            show(&reply)
        );
        *seen.entry(served_by(&reply)).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, usize> = names.iter().map(|n| (n.to_string(), 3)).collect();
    assert_eq!(seen, expected, "a resource's session was closed");
    for (service, jid) in services.iter().zip(&jids) {
        let hostile: Vec<_> = service
            .seen()
            .into_iter()
            .filter(|(_, id)| id.starts_with("h-"))
            .collect();
        assert!(hostile.is_empty(), "{jid} received {hostile:?}");
        assert_eq!(service.served(), 3, "{jid}");
    }
    assert_link_kept(&server);
}
