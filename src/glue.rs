//! The one place where Lua values become core types and back.
//!
//! Lua sees a table of functions (`new`, `version`) and a userdata handle per
//! module instance, so several component hosts, and a reloaded module, each
//! keep their own state. Every error is a [`crate::Error`] until it crosses
//! into Lua here, as a Lua error with its message.

use std::rc::Rc;

use mlua::{
    IntoLuaMulti, Lua, MultiValue, RegistryKey, Result, Table, UserData, UserDataMethods, Value,
};

use crate::core::{Action, Config, Kind, Proxy, Stanza, Time, Verdict, GET_ATTEMPTS_RANGE};
use crate::core::{DropReason, MAX_IN_FLIGHT_RANGE};
use crate::Error;

impl From<Error> for mlua::Error {
    fn from(e: Error) -> Self {
        mlua::Error::RuntimeError(e.to_string())
    }
}

/// A reference to the Lua stanza of a `get`, kept to send it again (C3).
type Payload = Rc<RegistryKey>;

/// The userdata a module instance holds.
struct Handle(Proxy<Payload>);

/// The module's table.
pub fn exports(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set("version", env!("CARGO_PKG_VERSION"))?;
    t.set(
        "new",
        lua.create_function(|_, options: Table| new(&options))?,
    )?;
    Ok(t)
}

fn new(options: &Table) -> Result<Handle> {
    let config = config(options)?;
    let seed = match options.get::<Option<f64>>("seed")? {
        Some(seed) => seed as u64,
        None => rand::random(),
    };
    Ok(Handle(Proxy::new(config, seed)?))
}

/// Reads the options table that the shim builds from Prosody's config.
fn config(options: &Table) -> Result<Config> {
    let text = |key: &str| -> Result<String> {
        Ok(options.get::<Option<String>>(key)?.unwrap_or_default())
    };
    let mut config = Config::new(text("host")?, text("target")?);
    if let Some(timeout) = options.get::<Option<f64>>("timeout")? {
        config.timeout = timeout;
    }
    let whole = |key: &str, option: &'static str, range| -> Result<Option<u32>> {
        match options.get::<Option<f64>>(key)? {
            Some(v) => Ok(Some(Config::whole(option, v, range)?)),
            None => Ok(None),
        }
    };
    if let Some(v) = whole(
        "get_attempts",
        "client_proxy_get_attempts",
        GET_ATTEMPTS_RANGE,
    )? {
        config.get_attempts = v;
    }
    if let Some(v) = whole(
        "max_in_flight",
        "client_proxy_max_in_flight",
        MAX_IN_FLIGHT_RANGE,
    )? {
        config.max_in_flight = v;
    }
    if let Some(v) = whole(
        "max_in_flight_per_requester",
        "client_proxy_max_in_flight_per_requester",
        MAX_IN_FLIGHT_RANGE,
    )? {
        config.max_in_flight_per_requester = v;
    }
    Ok(config)
}

type StanzaArgs = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    f64,
    Value,
);

impl UserData for Handle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // name, type, from, to, id, show, priority, now, stanza
        //   -> "forward", from, to, rtt | "error", type, condition
        //    | "drop", reason | "pass", reason | "done"
        methods.add_method_mut("stanza", |lua, this, args: StanzaArgs| {
            let (name, ty, from, to, id, show, priority, now, stanza) = args;
            let (ty, from, to, id, show) = (&ty, &from, &to, &id, &show);
            let s = Stanza {
                kind: Kind::from_name(&name),
                ty: ty.as_deref(),
                from: from.as_deref().unwrap_or_default(),
                to: to.as_deref().unwrap_or_default(),
                id: id.as_deref(),
                show: show.as_deref(),
                priority: priority.unwrap_or(0.0).clamp(-128.0, 127.0) as i32,
            };
            // Kept only where the core may send it again; a stanza that cannot
            // be kept is served all the same, once.
            let keep = || lua.create_registry_value(stanza).ok().map(Rc::new);
            // One shape for every verdict, pushed straight onto the stack.
            let text = |s: &str| lua.create_string(s).map(Some);
            Ok(match this.0.handle(s, Time::from_secs_f64(now), keep) {
                Verdict::Forward { from, to, rtt } => (
                    "forward",
                    text(&from)?,
                    text(&to)?,
                    rtt.map(|d| d.as_secs_f64()),
                ),
                Verdict::Reply(e) => ("error", text(e.0.as_str())?, text(e.1.as_str())?, None),
                Verdict::Drop(r) => ("drop", text(r.as_str())?, None, None),
                Verdict::Pass(r) => ("pass", text(r.as_str())?, None, None),
                Verdict::Done => ("done", None, None, None),
            })
        });
        // -> "presence", to, type | "error", to, id, type, condition
        //  | "resend", stanza, from, to | "log", level, message | nil
        methods.add_method_mut("poll", |lua, this, ()| poll(lua, &mut this.0));
        methods.add_method_mut("start", |_, this, ()| {
            this.0.start();
            Ok(())
        });
        methods.add_method_mut("expire", |_, this, now: f64| {
            this.0.expire(Time::from_secs_f64(now));
            Ok(())
        });
        methods.add_method("next_deadline", |_, this, ()| {
            Ok(this.0.next_deadline().map(Time::as_secs_f64))
        });
        methods.add_method_mut("close", |_, this, ()| {
            this.0.close();
            Ok(())
        });
        methods.add_method_mut("reconfigure", |_, this, options: Table| {
            Ok(this.0.reconfigure(config(&options)?)?)
        });
        methods.add_method("stats", |lua, this, ()| stats(lua, &this.0));
        // A fault to inject, so that tests see what a panic in the core
        // becomes on the Lua side.
        #[cfg(test)]
        methods.add_method_mut("panic", |_, _, ()| -> Result<()> {
            panic!("injected fault")
        });
        methods.add_method("resources", |lua, this, ()| {
            let list = lua.create_table()?;
            for r in this.0.resources() {
                let t = lua.create_table()?;
                t.set("name", &*r.name)?;
                t.set("show", r.show.as_deref())?;
                t.set("priority", r.priority)?;
                list.push(t)?;
            }
            Ok(list)
        });
    }
}

fn poll(lua: &Lua, proxy: &mut Proxy<Payload>) -> Result<MultiValue> {
    match proxy.poll_action() {
        None => Ok(MultiValue::new()),
        Some(Action::Presence { ty, to }) => ("presence", to, ty.as_attr()).into_lua_multi(lua),
        Some(Action::Error { to, id, error }) => {
            ("error", to, id, error.0.as_str(), error.1.as_str()).into_lua_multi(lua)
        }
        Some(Action::Resend { payload, from, to }) => {
            let stanza = lua.registry_value::<Value>(&payload)?;
            ("resend", stanza, from, to).into_lua_multi(lua)
        }
        Some(Action::Log { level, message }) => {
            ("log", level.as_str(), message).into_lua_multi(lua)
        }
    }
}

fn stats(lua: &Lua, proxy: &Proxy<Payload>) -> Result<Table> {
    let s = proxy.stats();
    let t = lua.create_table()?;
    t.set("in_flight", proxy.in_flight())?;
    t.set("online", proxy.online())?;
    t.set("requests", s.requests)?;
    t.set("refused", s.refused)?;
    t.set("replies", s.replies)?;
    t.set("failed", s.failed)?;
    t.set("timeouts", s.timeouts)?;
    t.set("resent", s.resent)?;
    let dropped = lua.create_table()?;
    for reason in DropReason::ALL {
        dropped.set(reason.as_str(), s.dropped[reason as usize])?;
    }
    t.set("dropped", dropped)?;
    Ok(t)
}

#[cfg(all(test, not(feature = "module")))]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
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
                assert(p:stanza("presence", nil, "s@example/a", "p.example", nil, "away", 2, 0) == "done")
                assert(p:resources()[1].show == "away" and p:resources()[1].priority == 2)
                return p:stanza("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, {})
                "#,
            )
            .eval()
            .unwrap();
        assert_eq!(verdict, "forward");
        assert_eq!(from, "p.example/u@example/r");
        assert_eq!(to, "s@example/a");
    }

    #[test]
    fn a_bad_option_is_a_lua_error_naming_it() {
        let err = lua()
            .load(r#"client_proxy.new({ host = "p.example", target = "s@example", max_in_flight = 0 })"#)
            .exec()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client_proxy_max_in_flight") && err.contains("1 to"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_in_a_call_becomes_a_lua_error_and_the_handle_lives_on() {
        let (ok, message, after): (bool, String, String) = lua()
            .load(
                r#"
                local p = client_proxy.new({ host = "p.example", target = "s@example" })
                local ok, err = pcall(p.panic, p)
                local after = p:stanza("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0)
                return ok, tostring(err), after
                "#,
            )
            .eval()
            .unwrap();
        assert!(!ok);
        assert!(message.contains("injected fault"), "{message}");
        assert_eq!(after, "error");
    }

    #[test]
    fn resend_hands_back_the_same_stanza_table() {
        let same: bool = lua()
            .load(
                r#"
                local p = client_proxy.new({ host = "p.example", target = "s@example" })
                p:stanza("presence", nil, "s@example/a", "p.example", nil, nil, 0, 0)
                local stanza = { name = "iq" }
                p:stanza("iq", "get", "u@example/r", "p.example", "1", nil, nil, 0, stanza)
                p:stanza("presence", nil, "s@example/b", "p.example", nil, nil, 0, 0)
                p:stanza("presence", "unavailable", "s@example/a", "p.example", nil, nil, 0, 0)
                local kind, kept, from, to = p:poll()
                assert(kind == "resend" and from == "p.example/u@example/r" and to == "s@example/b")
                assert(p:poll() == nil)
                return kept == stanza
                "#,
            )
            .eval()
            .unwrap();
        assert!(same);
    }
}
