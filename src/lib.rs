//! `client_proxy`: a Prosody component that sends every IQ request it gets to
//! one online resource of an XMPP account, and the reply back.
//!
//! The crate has two halves. [`core`] is the routing state machine, free of
//! Lua, sockets and clocks. `glue` (built with a Lua feature: `module` for
//! Prosody, or a linked Lua for tests) turns it into a Lua module that the Prosody plugin
//! `lua/mod_client_proxy.lua` loads.

pub mod core;
mod error;
#[cfg(feature = "mlua")]
mod glue;

pub use error::Error;

/// The Lua module's entry point: `require "client_proxy"` returns its table.
///
/// `skip_memory_check` lets mlua push strings and take arguments without a
/// protected call around each, as Lua's own C libraries do: Prosody sets no
/// memory limit, so a Lua allocation only fails when the process is out of
/// memory altogether.
#[cfg(feature = "module")]
#[mlua::lua_module(skip_memory_check)]
fn client_proxy(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    glue::exports(lua)
}

#[cfg(all(feature = "mlua", not(feature = "module")))]
pub use glue::exports;
