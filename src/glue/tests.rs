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
            local p = client_proxy.new({ host = "p.example", target = "s@example", seed = 3 })
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
        .load(r#"local p, err = client_proxy.new({ host = "p.example", target = "s@example", max_in_flight = 0 })
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
        .load(r#"return select(2, client_proxy.new({ host = "p.example", target = "s@example", timeout = {} }))"#)
        .eval()
        .unwrap();
    assert!(!err.contains("traceback") && err.contains("table"), "{err}");
}

#[test]
fn a_verdict_says_when_the_event_queued_actions_too() {
    let (queued, level, after): (bool, String, Option<bool>) = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target = "s@example" })
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
            local kind, level, message = p:poll()
            assert(kind == "log" and message:match("^Ejected") and p:poll() == nil)
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
            r#"return select(2, client_proxy.new({ host = "p.example", target = "s@example", attempts = 0,
            attempts_option = "client_proxy_get_attempts" }))"#,
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
            local p = client_proxy.new({ host = "p.example", target = "s@example" })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            route("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
            p:drain("a", true)
            local lines = p:status(0)
            local states = p:stats().states
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
        .load(r#"return select(2, client_proxy.new({ host = "p.example", target = "s@example", resources = { "a", 2 } }))"#)
        .eval()
        .unwrap();
    assert!(err.contains("client_proxy_resources"), "{err}");
    let ok: bool = lua()
        .load(
            r#"
            local p = client_proxy.new({ host = "p.example", target = "s@example",
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
            local route = client_proxy.new({{ host = "p.example", target = "s@example" }}):router()
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
            local p = client_proxy.new({ host = "p.example", target = "s@example", timeout = 5 })
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
            local p = client_proxy.new({ host = "p.example", target = "s@example" })
            local route = p:router()
            route("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
            local stanza = { name = "iq" }
            route("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, stanza)
            route("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
            route("presence", "unavailable", "s@example/a", "p.example", nil, nil, 0, 0)
            local kind, kept, from, to
            repeat kind, kept, from, to = p:poll() until kind ~= "log"
            assert(kind == "resend" and from == "p.example/u@example/r" and to == "s@example/b")
            assert(p:poll() == "log" and p:poll() == nil)
            return kept == stanza
            "#,
        )
        .eval()
        .unwrap();
    assert!(same);
}
