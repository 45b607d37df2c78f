//! Tests of the glue through a real Lua: values, errors and the router.

use super::*;

fn lua() -> Lua {
    with_library(Lua::new())
}

fn with_library(lua: Lua) -> Lua {
    lua.globals()
        .set("client_proxy", exports(&lua).unwrap())
        .unwrap();
    lua
}

#[test]
fn routes_through_lua_values() {
    let lua = lua();
    let (verdict, from, to): (String, String, String) = lua
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example", seed = 3 })
            local route = p:router()
            assert(route("presence", nil, "s@example/a", "p.example", nil, "away", 2, 0) == "done")
            assert(p:resources()[1].show == "away" and p:resources()[1].priority == 2)
            return route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, {})
            "#,
        )
        .eval()
        .unwrap();
    assert_eq!(verdict, "forward");
    assert_eq!(from, "p.example/u@example/r");
    assert_eq!(to, "s@example/a");
}

#[test]
fn a_bad_option_is_refused_with_a_message_naming_it() {
    let (handle, err): (Option<bool>, String) = lua()
        .load(r#"local p, err = client_proxy.new({ host = "p.example", target_address = "s@example", max_in_flight = 0 })
            return p ~= nil or nil, err"#)
        .eval()
        .unwrap();
    assert_eq!(handle, None);
    assert_eq!(
        err,
        "option 'client_proxy_max_in_flight' must be a whole number from 1 to 10000000 (got 0)"
    );
    // A value of the wrong type too, and without a traceback.
    let err: String = lua()
        .load(r#"return select(2, client_proxy.new({ host = "p.example", target_address = "s@example", timeout = {} }))"#)
        .eval()
        .unwrap();
    assert!(!err.contains("traceback") && err.contains("table"), "{err}");
}

#[test]
fn a_verdict_says_when_the_event_queued_actions_too() {
    let (queued, level, after): (bool, String, Option<bool>) = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example" })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, {})
            route("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
            assert(route("iq", "error", "s@example/a", "p.example/u@example/r", "1",
                nil, nil, 0, nil, "service-unavailable") == "done")
            while p:poll() do end
            -- b serves it: a is ejected, and its log line waits in the queue.
            local v, _, _, _, queued = route("iq", "result", "s@example/b",
                "p.example/u@example/r", "1", nil, nil, 0)
            assert(v == "forward")
            local logged = p:poll()
            assert(logged.kind == "log" and logged.message:match("^Ejected") and p:poll() == nil)
            local level = logged.level
            local _, _, _, _, after = route("iq", "get", "u@example/r", "p.example", "2", nil, nil, 0)
            return queued, level, after
            "#,
        )
        .eval()
        .unwrap();
    assert!(queued);
    assert_eq!(level, "warn");
    assert_eq!(after, None);
}

#[test]
fn the_old_name_of_attempts_is_named_when_it_is_the_one_used() {
    let err: String = lua()
        .load(
            r#"return select(2, client_proxy.new({ host = "p.example", target_address = "s@example", attempts = 0,
            written = { attempts = "client_proxy_get_attempts" } }))"#,
        )
        .eval()
        .unwrap();
    assert!(err.contains("option 'client_proxy_get_attempts'"), "{err}");
}

#[test]
fn status_drain_and_state_counts_cross_as_lua_values() {
    let (first, line, eligible, draining, err): (String, String, u32, u32, String) = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example" })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            route("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
            p:drain("a", true)
            local lines = p:status(0)
            local states = {}
            for _, s in ipairs(p:collect()) do
                if s[1] == "resources" then states[s[2]] = s[4] end
            end
            local ok, err = p:drain("nobody", true)
            assert(ok == nil and p:drain("a", false) == true)
            return lines[1], lines[2], states.eligible, states.draining, tostring(err)
            "#,
        )
        .eval()
        .unwrap();
    assert!(first.starts_with("p.example -> s@example:"), "{first}");
    assert!(
        line.contains("a  show -  priority 0  draining (operator)"),
        "{line}"
    );
    assert_eq!((eligible, draining), (1, 1));
    assert_eq!(err, "bad argument: s@example/nobody is not online");
}

#[test]
fn list_options_take_strings_only() {
    let err: String = lua()
        .load(r#"return select(2, client_proxy.new({ host = "p.example", target_address = "s@example", resources = { "a", 2 } }))"#)
        .eval()
        .unwrap();
    assert!(err.contains("client_proxy_resources"), "{err}");
    let ok: bool = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example",
                resources = { "a*" }, drain_show = { "away" }, balance = "least_in_flight",
                sticky = "requester", attempts = 3, eject_after_timeouts = 0 })
            return p ~= nil
            "#,
        )
        .eval()
        .unwrap();
    assert!(ok);
}

/// Calls the router with `args` in a pcall, then routes a `get`:
/// whether the call succeeded, its error, and the verdict on the `get`.
fn call_then_get(args: &str) -> (bool, String, String) {
    lua()
        .load(format!(
            r#"
            local route = client_proxy.new({{ host = "p.example", target_address = "s@example" }}):router()
            local ok, err = pcall(route, {args})
            local after = route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0)
            return ok, tostring(err), after
            "#
        ))
        .eval()
        .unwrap()
}

#[test]
fn a_bad_argument_to_the_router_is_a_lua_error_naming_it() {
    let (ok, message, after) =
        call_then_get(r#""iq", "get", "u@example/r", "p.example", "1", nil, nil, "soon""#);
    assert!(!ok);
    assert_eq!(message, "bad argument: #8 (now) must be a number or nil");
    assert_eq!(after, "error");
}

#[test]
fn a_panic_in_a_call_becomes_a_lua_error_and_the_handle_lives_on() {
    let (ok, message, after) =
        call_then_get(r#""panic", nil, "u@example/r", "p.example", "1", nil, nil, 0"#);
    assert!(!ok);
    assert!(message.contains("injected fault"), "{message}");
    assert_eq!(after, "error");
}

#[test]
fn kept_stanzas_leave_the_registry_once_settled() {
    // SAFETY: the debug library, to read the registry, and nothing else.
    let lua = with_library(unsafe { Lua::unsafe_new() });
    let counts: Vec<u32> = lua
        .load(
            r#"
            local function kept()
                local n = 0
                for _, v in pairs(debug.getregistry()) do
                    if type(v) == "table" and v.kept then n = n + 1 end
                end
                return n
            end
            local p = client_proxy.new({ host = "p.example", target_address = "s@example", timeout = 5 })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            for i = 1, 100 do
                local _, from = route("iq", "get", "u@example/r", "p.example", tostring(i), nil, nil, 0, { kept = true })
                route("iq", "result", "s@example/a", from, tostring(i), nil, nil, 0)
            end
            local counts = { kept() }
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            counts[#counts + 1] = kept()
            route("iq", "get", "u@example/r", "p.example", "t", nil, nil, 0, { kept = true })
            route("iq", "set", "u@example/r", "p.example", "c", nil, nil, 0, { kept = true })
            counts[#counts + 1] = kept()
            p:expire(10)
            counts[#counts + 1] = kept()
            route("iq", "get", "u@example/r", "p.example", "u", nil, nil, 10, { kept = true })
            p:close()
            counts[#counts + 1] = kept()
            return counts
            "#,
        )
        .eval()
        .unwrap();
    // Released at the next call; expiry and close release at once.
    assert_eq!(counts, [1, 0, 2, 0, 0]);
}

#[test]
fn resend_hands_back_the_same_stanza_table() {
    let same: bool = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example" })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            local stanza = { name = "iq" }
            route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, stanza)
            route("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
            route("presence", "unavailable", "s@example/a", "p.example", nil, nil, 0, 0)
            local action
            repeat action = p:poll() until action.kind ~= "log"
            assert(action.kind == "resend" and action.from == "p.example/u@example/r"
                and action.to == "s@example/b")
            assert(p:poll().kind == "log" and p:poll() == nil)
            return action.stanza == stanza
            "#,
        )
        .eval()
        .unwrap();
    assert!(same);
}

/// Routes a `get` from a requester whose payload the Lua chunk `payload`
/// builds (as Prosody's parser would: `name`, `attr`, children), with the
/// target online; the verdict and its first two values.
fn route_payload(options: &str, payload: &str) -> (String, Option<String>, Option<String>) {
    lua()
        .load(format!(
            r#"
            local p = client_proxy.new({{ host = "p.example", target_address = "s@example", {options} }})
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            local function el(name, attr, ...) return {{ name = name, attr = attr or {{}}, ... }} end
            local stanza = {payload}
            return route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, stanza)
            "#
        ))
        .eval()
        .unwrap()
}

/// A payload `depth` elements deep, the stanza element included.
fn nested(depth: usize) -> String {
    format!("(function() local t = el('leaf'); for _ = 2, {depth} do t = el('d', nil, t) end; return t end)()")
}

#[test]
fn h5_an_attribute_prosody_would_write_unparseable_is_refused() {
    let xml_foo = r#"el("iq", nil, el("q", { xmlns = "urn:x", ["http://www.w3.org/XML/1998/namespace\1foo"] = "1" }))"#;
    assert_eq!(
        route_payload("", xml_foo),
        (
            "error".into(),
            Some("modify".into()),
            Some("bad-request".into())
        )
    );
    // The attributes the XML namespace defines, and any other namespace, pass.
    let fine = r#"el("iq", nil, el("q", { ["xml:lang"] = "en", ["urn:a\1b"] = "1" }, "text"))"#;
    assert_eq!(route_payload("", fine).0, "forward");
}

#[test]
fn h5_nesting_past_max_depth_is_refused() {
    assert_eq!(route_payload("", &nested(64)).0, "forward");
    assert_eq!(
        route_payload("", &nested(65)),
        (
            "error".into(),
            Some("modify".into()),
            Some("policy-violation".into())
        )
    );
    assert_eq!(route_payload("max_depth = 100", &nested(100)).0, "forward");
    assert_eq!(route_payload("max_depth = 100", &nested(5_000)).0, "error");
    let err: String = lua()
        .load(r#"return select(2, client_proxy.new({ host = "p.example", target_address = "s@example", max_depth = 1 }))"#)
        .eval()
        .unwrap();
    assert!(err.contains("client_proxy_max_depth"), "{err}");
}

#[test]
fn h2_tables_no_parser_makes_end_the_walk() {
    // A table that holds itself, and one whose children are shared many
    // times over: bounded, refused, and the router goes on.
    let cycle = r#"(function() local t = el("iq"); t[1] = t; return t end)()"#;
    assert_eq!(
        route_payload("", cycle).2.as_deref(),
        Some("policy-violation")
    );
    let wide = r#"(function()
        local t = el("leaf")
        for _ = 1, 10 do local p = el("w"); for i = 1, 10 do p[i] = t end; t = p end
        return el("iq", nil, t) end)()"#;
    assert_eq!(
        route_payload("", wide).2.as_deref(),
        Some("policy-violation")
    );
    // Values of any type where children and attributes go.
    let odd = r#"el("iq", { [1] = "x", [true] = false, id = {} }, 7, true, el("q", "notatable"), function() end)"#;
    assert_eq!(route_payload("", odd).0, "forward");
}

#[test]
fn h4_payloads_kept_for_retries_stay_within_their_bound() {
    let verdicts: Vec<String> = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example",
                attempts = 2, max_bytes_in_flight = 10000 })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            local big = { name = "iq", attr = {}, string.rep("x", 3000) }
            local out = {}
            for i = 1, 4 do
                local v, a, b = route("iq", "get", "u@example/r", "p.example", tostring(i), nil, nil, 0, big)
                out[#out + 1] = v == "error" and (v .. "/" .. b) or v
            end
            -- One answered: room again.
            route("iq", "result", "s@example/a", "p.example/u@example/r", "1", nil, nil, 0)
            out[#out + 1] = (route("iq", "get", "u@example/r", "p.example", "5", nil, nil, 0, big))
            return out
            "#,
        )
        .eval()
        .unwrap();
    assert_eq!(
        verdicts,
        [
            "forward",
            "forward",
            "forward",
            "error/resource-constraint",
            "forward"
        ]
    );
}

mod fuzz {
    //! What the router is handed from Lua, as arbitrary as Lua allows:
    //! trees of any shape with keys and values of any bytes and types.

    use super::*;
    use mlua::Function;
    use proptest::prelude::*;

    const XML_FOO: &[u8] = b"http://www.w3.org/XML/1998/namespace\x01foo";

    #[derive(Clone, Debug)]
    enum Item {
        Element(Vec<(Vec<u8>, Vec<u8>)>, Vec<Item>),
        Text(Vec<u8>),
        Number(f64),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..12),
            Just(b"xmlns".to_vec()),
            Just(b"xml:lang".to_vec()),
            Just(b"urn:a\x01b".to_vec()),
            Just(XML_FOO.to_vec()),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        let leaf = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..16).prop_map(Item::Text),
            any::<f64>().prop_map(Item::Number),
            prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..8)), 0..3)
                .prop_map(|a| Item::Element(a, Vec::new())),
        ];
        leaf.prop_recursive(80, 300, 6, |inner| {
            (
                prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..8)), 0..3),
                prop::collection::vec(inner, 0..6),
            )
                .prop_map(|(a, c)| Item::Element(a, c))
        })
    }

    fn build(lua: &Lua, item: &Item) -> Value {
        match item {
            Item::Text(t) => Value::String(lua.create_string(t).unwrap()),
            Item::Number(n) => Value::Number(*n),
            Item::Element(attrs, children) => {
                let t = lua.create_table().unwrap();
                t.set("name", "x").unwrap();
                let a = lua.create_table().unwrap();
                for (k, v) in attrs {
                    a.set(lua.create_string(k).unwrap(), lua.create_string(v).unwrap())
                        .unwrap();
                }
                t.set("attr", a).unwrap();
                for (i, c) in children.iter().enumerate() {
                    t.raw_set(i + 1, build(lua, c)).unwrap();
                }
                Value::Table(t)
            }
        }
    }

    /// Depth (elements); whether an attribute key is one Prosody writes as
    /// XML the service must reject; whether one is of a form only a module
    /// could make (a prefix or a namespace other than the known ones),
    /// which may be refused too.
    fn facts(item: &Item) -> (u32, bool, bool) {
        match item {
            Item::Element(attrs, children) => {
                let bad = attrs.iter().any(|(k, _)| k == XML_FOO);
                let odd = attrs.iter().any(|(k, _)| {
                    (k.contains(&b':') || k.contains(&1)) && k != b"xml:lang" && k != b"urn:a\x01b"
                });
                children
                    .iter()
                    .map(facts)
                    .fold((1, bad, odd), |(d, b, o), (cd, cb, co)| {
                        (d.max(cd + 1), b || cb, o || co)
                    })
            }
            _ => (0, false, false),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_tables_are_routed_or_refused_never_raised(
            children in prop::collection::vec(item(), 0..4),
        ) {
            let lua = lua();
            let route: Function = lua
                .load(r#"
                    local p = client_proxy.new({ host = "p.example", target_address = "s@example" })
                    local route = p:router()
                    route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
                    return route"#)
                .eval()
                .unwrap();
            let stanza = Item::Element(Vec::new(), children);
            let table = build(&lua, &stanza);
            let (verdict, _, condition): (String, Option<String>, Option<String>) = route
                .call(("iq", "get", "u@example/r", "p.example", "1", Value::Nil, Value::Nil, 0, table))
                .unwrap();
            let (depth, bad, odd) = facts(&stanza);
            let expected = match (bad, depth > 64) {
                (_, true) => Some("policy-violation"),
                (true, false) => Some("bad-request"),
                (false, false) if odd => Some("either"),
                (false, false) => None,
            };
            match expected {
                // A deep payload may be found bad before it is found deep.
                Some("policy-violation") => prop_assert!(
                    matches!(condition.as_deref(), Some("policy-violation" | "bad-request")),
                    "{condition:?}"
                ),
                Some("either") => prop_assert!(
                    verdict == "forward" || condition.as_deref() == Some("bad-request")
                ),
                Some(c) => prop_assert_eq!(condition.as_deref(), Some(c)),
                None => prop_assert_eq!(verdict, "forward"),
            }
        }
    }
}

#[test]
fn running_out_of_lua_memory_mid_call_leaves_the_router_working() {
    let lua = lua();
    let route: mlua::Function = lua
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target_address = "s@example", attempts = 2 })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            return route"#,
        )
        .eval()
        .unwrap();
    let stanza = lua.create_table().unwrap();
    // Every accepted get is kept for a retry in Lua's registry, which grows
    // now and then: with no memory left, one of those growths fails.
    lua.set_memory_limit(lua.used_memory()).unwrap();
    let failed = (0..100_000).find(|i| {
        let (nil, id) = (Value::Nil, i.to_string());
        let args = (
            "iq",
            "get",
            "u@example/r",
            "p.example",
            id,
            nil.clone(),
            nil,
            0,
            &stanza,
        );
        route.call::<Value>(args).is_err()
    });
    lua.set_memory_limit(0).unwrap();
    assert!(failed.is_some(), "Lua never ran out of memory");
    let verdict: String = route
        .call((
            "iq",
            "get",
            "u@example/r",
            "p.example",
            "after",
            Value::Nil,
            Value::Nil,
            0,
        ))
        .unwrap();
    assert_eq!(verdict, "forward");
}
