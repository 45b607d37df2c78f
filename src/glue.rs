//! The one place where Lua values become core types and back.
//!
//! Lua sees a table of functions (`new`, `version`) and a userdata handle per
//! module instance, so several component hosts, and a reloaded module, each
//! keep their own state. Every error is a [`crate::Error`] until it crosses
//! into Lua here, as a Lua error with its message.
//!
//! Each stanza goes through a plain Lua C function, the handle's router,
//! rather than an mlua method: it reads the arguments in place and pushes the
//! verdict straight onto the stack, which costs a fraction of mlua's generic
//! conversions on the path every request and reply takes. Everything else
//! (options, actions, statistics) goes through mlua.

use std::cell::{Cell, RefCell, RefMut};
use std::ffi::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::{mem, slice, str};

use mlua::{ffi, Lua, Result, Table, UserData, UserDataMethods, Value};

use crate::core::{Action, Body, Config, Kind, OptionKind, Proxy, Stanza, Time, Value as Opt};
use crate::core::{Measure, Sample, Verdict, FAMILIES, OPTIONS};
use crate::Error;

mod walk;

impl From<Error> for mlua::Error {
    fn from(e: Error) -> Self {
        mlua::Error::RuntimeError(e.to_string())
    }
}

/// Registry references to stanzas the core no longer holds, freed by the next
/// call that has the Lua state at hand.
type Released = Rc<Cell<Vec<c_int>>>;

/// The Lua stanza of a request, kept in the registry to send it again (C3, D5).
struct Kept {
    id: c_int,
    released: Released,
}

impl Drop for Kept {
    fn drop(&mut self) {
        let mut ids = self.released.take();
        ids.push(self.id);
        self.released.set(ids);
    }
}

type Payload = Rc<Kept>;

/// What a module instance's handle and its routers share.
struct Shared {
    proxy: RefCell<Proxy<Payload>>,
    released: Released,
}

impl Shared {
    /// The core, for one call. Nothing here calls back into Lua, so no call
    /// can find it borrowed by another.
    fn proxy(&self) -> RefMut<'_, Proxy<Payload>> {
        self.proxy.borrow_mut()
    }
}

/// The userdata a module instance holds.
struct Handle(Rc<Shared>);

/// The module's table.
pub fn exports(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set("version", env!("CARGO_PKG_VERSION"))?;
    t.set("options", declarations(lua)?)?;
    t.set("metrics", families(lua)?)?;
    t.set(
        "new",
        lua.create_function(|_, options: Table| Ok(refusal(new(&options))))?,
    )?;
    Ok(t)
}

fn new(options: &Table) -> Result<Handle> {
    let config = config(options)?;
    let seed = match options.get::<Option<f64>>("seed")? {
        Some(seed) => seed as u64,
        None => rand::random(),
    };
    Ok(Handle(Rc::new(Shared {
        proxy: RefCell::new(Proxy::new(config, seed)?),
        released: Released::default(),
    })))
}

/// A call the operator's input can make fail answers `value` or `nil,
/// message`, Lua's convention, so that the shim logs or prints the message
/// as it is: a raised error would carry a traceback.
fn refusal<T>(result: Result<T>) -> (Option<T>, Option<String>) {
    match result {
        Ok(value) => (Some(value), None),
        Err(e) => (None, Some(message(&e))),
    }
}

/// The words of an error, without mlua's wrapping.
fn message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => message(cause),
        mlua::Error::FromLuaConversionError { from, to, .. } => {
            format!("bad argument: a {from} where a {to} was expected")
        }
        other => other.to_string(),
    }
}

/// Reads the options table that the shim builds from Prosody's config, keyed
/// as the declarations in [`crate::core::OPTIONS`] are; an option not set
/// keeps its declared default.
fn config(options: &Table) -> Result<Config> {
    let host = options.get::<Option<String>>("host")?.unwrap_or_default();
    let mut config = Config::new(host, "");
    // Errors name the option as the operator wrote it: the shim says which
    // old names are in use.
    let written: Option<Table> = options.get("written")?;
    for spec in OPTIONS.iter().filter(|o| o.in_module()) {
        let value = match options.get::<Value>(spec.key)? {
            Value::Nil => continue,
            Value::Number(n) => Opt::Number(n),
            Value::Integer(n) => Opt::Number(n as f64),
            Value::Boolean(b) => Opt::Bool(b),
            Value::String(s) => Opt::Text(s.to_str()?.to_owned()),
            Value::Table(t) if spec.kind == OptionKind::List => Opt::List(
                t.sequence_values::<Value>()
                    .map(|v| match v? {
                        Value::String(s) => Ok(s.to_str()?.to_owned()),
                        _ => Err(spec
                            .error("must be a list of strings, such as { \"focus\" }")
                            .into()),
                    })
                    .collect::<Result<Vec<String>>>()?,
            ),
            other => Opt::Text(format!("a {}", other.type_name())),
        };
        config.set(spec.key, value).map_err(|e| {
            let name = written
                .as_ref()
                .and_then(|w| w.get::<Option<String>>(spec.key).ok().flatten());
            match (e, name) {
                (Error::Option { message, .. }, Some(name)) => {
                    mlua::Error::RuntimeError(format!("option '{name}' {message}"))
                }
                (e, _) => e.into(),
            }
        })?;
    }
    Ok(config)
}

/// The declarations the shim reads Prosody's config by: `{ key, name,
/// alias, kind }` in order, `kind` one of "seconds", "number", "boolean",
/// "string", "list".
fn declarations(lua: &Lua) -> Result<Table> {
    let list = lua.create_table()?;
    for spec in OPTIONS.iter().filter(|o| o.in_module()) {
        let t = lua.create_table()?;
        t.set("key", spec.key)?;
        t.set("name", spec.module)?;
        t.set("alias", spec.alias)?;
        let kind = match spec.kind {
            OptionKind::Seconds(..) => "seconds",
            OptionKind::Whole(..) => "number",
            OptionKind::Bool => "boolean",
            OptionKind::Choice(_) | OptionKind::Text => "string",
            OptionKind::List => "list",
        };
        t.set("kind", kind)?;
        list.push(t)?;
    }
    Ok(list)
}

/// The options in force, keyed as the declarations are.
fn effective(lua: &Lua, config: &Config) -> Result<Table> {
    let t = lua.create_table()?;
    for spec in OPTIONS.iter().filter(|o| o.in_module()) {
        match config.get(spec.key) {
            None => {}
            Some(Opt::Number(n)) => t.set(spec.key, n)?,
            Some(Opt::Bool(b)) => t.set(spec.key, b)?,
            Some(Opt::Text(s)) => t.set(spec.key, s)?,
            Some(Opt::List(l)) => t.set(spec.key, l)?,
        }
    }
    Ok(t)
}

impl UserData for Handle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // -> route(name, type, from, to, id, show, priority, now, stanza, condition, key)
        methods.add_method("router", |lua, this, ()| router(lua, &this.0));
        methods.add_method("poll", |lua, this, ()| poll(lua, &mut this.0.proxy()));
        methods.add_method("start", |_, this, ()| {
            this.0.proxy().start();
            Ok(())
        });
        methods.add_method("expire", |lua, this, now: f64| {
            this.0.proxy().expire(Time::from_secs_f64(now));
            release_with(lua, &this.0.released)
        });
        methods.add_method("next_deadline", |_, this, ()| {
            Ok(this.0.proxy().next_deadline().map(Time::as_secs_f64))
        });
        methods.add_method("close", |lua, this, ()| {
            this.0.proxy().close();
            release_with(lua, &this.0.released)
        });
        // -> true | nil, message
        methods.add_method("reconfigure", |_, this, options: Table| {
            let done = config(&options).and_then(|c| Ok(this.0.proxy().reconfigure(c)?));
            Ok(refusal(done.map(|()| true)))
        });
        methods.add_method("collect", |lua, this, ()| collect(lua, &mut this.0.proxy()));
        // -> the options in force, keyed as `options` declares them
        methods.add_method("options", |lua, this, ()| {
            effective(lua, this.0.proxy().config())
        });
        // -> the admin console's report, one string per line
        methods.add_method("status", |_, this, now: f64| {
            Ok(this.0.proxy().status(Time::from_secs_f64(now)))
        });
        // -> true | nil, message
        methods.add_method("drain", |_, this, (name, drained): (String, bool)| {
            let done = this.0.proxy().drain(&name, drained).map(|()| true);
            Ok(refusal(done.map_err(mlua::Error::from)))
        });
        methods.add_method("resources", |lua, this, ()| resources(lua, &this.0.proxy()));
    }
}

/// The upvalue of a router: a userdata holding this, emptied by its `__gc`.
type Slot = Option<Rc<Shared>>;

/// A new router of this instance: a C closure whose one upvalue is a
/// userdata holding the shared state.
fn router(lua: &Lua, shared: &Rc<Shared>) -> Result<mlua::Function> {
    let slot: Slot = Some(shared.clone());
    // SAFETY: the userdata is sized and (as all Lua userdata) aligned for a
    // `Slot`, and written before anything else can see it.
    unsafe {
        lua.exec_raw((), move |state| {
            let ud = ffi::lua_newuserdata(state, mem::size_of::<Slot>());
            ud.cast::<Slot>().write(slot);
            ffi::lua_createtable(state, 0, 1);
            ffi::lua_pushcfunction(state, drop_shared);
            ffi::lua_setfield(state, -2, c"__gc".as_ptr());
            ffi::lua_setmetatable(state, -2);
            ffi::lua_pushcclosure(state, route, 1);
        })
    }
}

unsafe extern "C-unwind" fn drop_shared(state: *mut ffi::lua_State) -> c_int {
    let slot = &mut *ffi::lua_touserdata(state, 1).cast::<Slot>();
    // Dropping frees Rust memory only, and must not unwind into Lua.
    let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(slot.take())));
    0
}

/// `route(name, type, from, to, id, show, priority, now, stanza, condition, key)`
///   -> "forward", from, to, rtt | "error", type, condition
///    | "drop", reason | "pass", reason | "done"
///
/// and, padded to the fifth value, `true` when the event also queued
/// actions for `poll` ("done" always may have); a forward that gives the
/// stanza a new id (O1, O2) has it sixth.
///
/// Raises a Lua error for arguments of the wrong type, and for a panic, once
/// no Rust value that needs dropping is left on this frame.
unsafe extern "C-unwind" fn route(state: *mut ffi::lua_State) -> c_int {
    let message = match panic::catch_unwind(AssertUnwindSafe(|| route_stanza(state))) {
        Ok(Ok(results)) => return results,
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic_message(panic),
    };
    push(state, &message);
    drop(message);
    ffi::lua_error(state)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s.as_str(),
        _ => "unknown panic",
    };
    format!("client_proxy panicked: {text}")
}

/// The body of [`route`]. Lua can raise here only when it is out of memory,
/// as with mlua's `skip_memory_check` (see `lib.rs`).
unsafe fn route_stanza(state: *mut ffi::lua_State) -> std::result::Result<c_int, Error> {
    let slot = &*ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<Slot>();
    let shared = slot
        .as_ref()
        .ok_or_else(|| Error::Argument("router finalized".into()))?;
    let name = text(state, 1, "name")?.unwrap_or_default();
    #[cfg(test)]
    if name == "panic" {
        panic!("injected fault");
    }
    let kind = Kind::from_name(name);
    let mut s = Stanza {
        kind,
        ty: text(state, 2, "type")?,
        from: text(state, 3, "from")?.unwrap_or_default(),
        to: text(state, 4, "to")?.unwrap_or_default(),
        id: text(state, 5, "id")?,
        show: text(state, 6, "show")?,
        priority: number(state, 7, "priority")?
            .unwrap_or(0.0)
            .clamp(-128.0, 127.0) as i32,
        condition: text(state, 10, "condition")?,
        key: text(state, 11, "key")?,
        body: Body::default(),
    };
    let now = number(state, 8, "now")?
        .ok_or_else(|| Error::Argument("#8 (now) must be a number".into()))?;
    release(state, &shared.released);
    // Everything that touches Lua happens before the core is borrowed for
    // `handle`: Lua raises (by longjmp) when it is out of memory, and would
    // leave the core borrowed for good.
    let (limit, attempts, from_target) = {
        let proxy = shared.proxy();
        let config = proxy.config();
        let bare = s.from.split_once('/').map_or(s.from, |(bare, _)| bare);
        (config.max_depth, config.attempts, bare == config.target)
    };
    // The payload of what a requester sends on towards the service; the
    // service's own replies go back as they came.
    let request = kind == Some(Kind::Iq) && matches!(s.ty, Some("get" | "set"));
    if !from_target && matches!(kind, Some(Kind::Iq | Kind::Message)) {
        s.body = walk::body(state, 9, limit);
    }
    // Kept only where the core may send it again; a stanza that cannot be
    // kept is served all the same, once. A reference the core does not
    // take is released at the next call.
    let keep = request && attempts > 1 && !from_target;
    let kept = (keep && ffi::lua_type(state, 9) > ffi::LUA_TNIL).then(|| {
        ffi::lua_pushvalue(state, 9);
        let id = ffi::luaL_ref(state, ffi::LUA_REGISTRYINDEX);
        Rc::new(Kept {
            id,
            released: shared.released.clone(),
        })
    });
    let mut proxy = shared.proxy();
    let verdict = proxy.handle(s, Time::from_secs_f64(now), || kept);
    // Whether the event also queued actions (a log line of an ejection or a
    // readmission) for `poll`; "done" says so by itself.
    let queued = proxy.has_actions();
    drop(proxy);
    // A C function has room for 20 values on its stack.
    let mut new_id = None;
    let pushed = match verdict {
        Verdict::Forward { from, to, rtt, id } => {
            new_id = id;
            push(state, "forward");
            push(state, &from);
            push(state, &to);
            match rtt {
                Some(rtt) => ffi::lua_pushnumber(state, rtt.as_secs_f64()),
                None => ffi::lua_pushnil(state),
            }
            4
        }
        Verdict::Reply(e) => {
            push(state, "error");
            push(state, e.0.as_str());
            push(state, e.1.as_str());
            3
        }
        Verdict::Drop(reason) => {
            push(state, "drop");
            push(state, reason.as_str());
            2
        }
        Verdict::Pass(reason) => {
            push(state, "pass");
            push(state, reason.as_str());
            2
        }
        Verdict::Done => {
            push(state, "done");
            return Ok(1);
        }
    };
    if !queued && new_id.is_none() {
        return Ok(pushed);
    }
    for _ in pushed..4 {
        ffi::lua_pushnil(state);
    }
    ffi::lua_pushboolean(state, c_int::from(queued));
    match new_id {
        Some(id) => {
            push(state, &id);
            Ok(6)
        }
        None => Ok(5),
    }
}

unsafe fn push(state: *mut ffi::lua_State, s: &str) {
    ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
}

/// Argument `i`: a string, borrowed from the Lua stack for this call, or nil.
unsafe fn text<'a>(
    state: *mut ffi::lua_State,
    i: c_int,
    what: &str,
) -> std::result::Result<Option<&'a str>, Error> {
    match ffi::lua_type(state, i) {
        ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(None),
        ffi::LUA_TSTRING => {
            let mut len = 0;
            let data = ffi::lua_tolstring(state, i, &mut len);
            str::from_utf8(slice::from_raw_parts(data.cast::<u8>(), len))
                .map(Some)
                .map_err(|_| Error::Argument(format!("#{i} ({what}) is not UTF-8")))
        }
        _ => Err(Error::Argument(format!(
            "#{i} ({what}) must be a string or nil"
        ))),
    }
}

/// Argument `i`: a number, or nil.
unsafe fn number(
    state: *mut ffi::lua_State,
    i: c_int,
    what: &str,
) -> std::result::Result<Option<f64>, Error> {
    match ffi::lua_type(state, i) {
        ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(None),
        ffi::LUA_TNUMBER => Ok(Some(ffi::lua_tonumber(state, i))),
        _ => Err(Error::Argument(format!(
            "#{i} ({what}) must be a number or nil"
        ))),
    }
}

/// Frees the registry references of stanzas the core has let go of.
unsafe fn release(state: *mut ffi::lua_State, released: &Released) {
    let mut ids = released.take();
    for &id in &ids {
        ffi::luaL_unref(state, ffi::LUA_REGISTRYINDEX, id);
    }
    ids.clear();
    // Nothing is released while luaL_unref runs; the capacity is kept.
    released.set(ids);
}

/// [`release`], from an mlua method.
fn release_with(lua: &Lua, released: &Released) -> Result<()> {
    // SAFETY: unref only touches the registry.
    unsafe { lua.exec_raw((), |state| release(state, released)) }
}

/// The next thing the core queued, as a table of named fields, or nil:
/// `{ kind = "presence", to, type }`, `{ kind = "error", to, id, type,
/// condition, from }` (`from` nil: the component's host), `{ kind =
/// "resend", stanza, from, to }`, or `{ kind = "log", level, message, event }`
/// (`event` the report's name, `message` its text).
fn poll(lua: &Lua, proxy: &mut Proxy<Payload>) -> Result<Option<Table>> {
    let Some(action) = proxy.poll_action() else {
        return Ok(None);
    };
    let t = lua.create_table()?;
    match action {
        Action::Presence { ty, to } => {
            t.set("kind", "presence")?;
            t.set("to", to)?;
            t.set("type", ty.as_attr())?;
        }
        Action::Error {
            from,
            to,
            id,
            error,
        } => {
            t.set("kind", "error")?;
            t.set("to", to)?;
            t.set("id", id)?;
            t.set("type", error.0.as_str())?;
            t.set("condition", error.1.as_str())?;
            t.set("from", from)?;
        }
        Action::Resend { payload, from, to } => {
            // SAFETY: pushes the registry entry the payload owns.
            let stanza: Value = unsafe {
                lua.exec_raw((), |state| {
                    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, payload.id.into());
                })?
            };
            t.set("kind", "resend")?;
            t.set("stanza", stanza)?;
            t.set("from", from)?;
            t.set("to", to)?;
        }
        Action::Log(event) => {
            t.set("kind", "log")?;
            t.set("level", event.level().as_str())?;
            t.set("message", event.to_string())?;
            t.set("event", event.name())?;
        }
    }
    Ok(Some(t))
}

/// The metric families the shim registers: `{ name, kind, unit, help,
/// label, buckets }` in order, `kind` as Prosody's `module:metric` takes it.
fn families(lua: &Lua) -> Result<Table> {
    let list = lua.create_table()?;
    for family in FAMILIES {
        let t = lua.create_table()?;
        t.set("name", family.name)?;
        t.set("unit", family.unit)?;
        t.set("help", family.help)?;
        t.set("label", family.label.map(|(label, _)| label))?;
        let kind = match family.measure {
            Measure::Counter => "counter",
            Measure::Gauge => "gauge",
            Measure::Histogram(buckets) => {
                t.set("buckets", buckets.to_vec())?;
                "histogram"
            }
        };
        t.set("kind", kind)?;
        list.push(t)?;
    }
    Ok(list)
}

/// What changed since the last collection: `{ family, label, "add" | "set",
/// value }` each.
fn collect(lua: &Lua, proxy: &mut Proxy<Payload>) -> Result<Table> {
    let list = lua.create_table()?;
    for sample in proxy.collect() {
        let (family, label, how, value) = match sample {
            Sample::Add { family, label, by } => (family, label, "add", by as f64),
            Sample::Set {
                family,
                label,
                value,
            } => (family, label, "set", value),
        };
        let t = lua.create_table()?;
        t.raw_set(1, FAMILIES[family].name)?;
        t.raw_set(2, label)?;
        t.raw_set(3, how)?;
        t.raw_set(4, value)?;
        list.push(t)?;
    }
    Ok(list)
}

/// One table per resource online: what its presence said, whether it gets
/// requests and why not, and how it has served.
fn resources(lua: &Lua, proxy: &Proxy<Payload>) -> Result<Table> {
    let list = lua.create_table()?;
    for r in proxy.resources() {
        let t = lua.create_table()?;
        t.set("name", &*r.name)?;
        t.set("show", r.show.as_deref())?;
        t.set("priority", r.priority)?;
        t.set("state", r.state().as_str())?;
        t.set("in_flight", r.in_flight)?;
        t.set("served", r.served)?;
        t.set("failed", r.failed)?;
        if let Some((until, reason)) = r.ejected {
            t.set("ejected_until", until.as_secs_f64())?;
            t.set("ejected_for", reason.as_str())?;
        }
        list.push(t)?;
    }
    Ok(list)
}

#[cfg(all(test, not(feature = "module")))]
mod tests;
