//! A copy of the module whose library fails: the shipped
//! `mod_client_proxy.lua` unchanged, beside a `client_proxy.so` that loads
//! the real library and hands out proxies whose router raises an error. A
//! real Prosody loading it shows what the shim does when the Rust core
//! fails.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::process::server_dir;
use crate::{plugin_dir, TempDir};

/// Lua run by the stand-in library's `luaopen_client_proxy` with the real
/// library's path and the error message: the real library, whose `new`
/// returns the real proxy but for its router, which raises.
const WRAPPER: &str = r#"
local real_path, message = ...
local real = assert(package.loadlib(real_path, "luaopen_client_proxy"))()
local wrapped = {}
for name, value in pairs(real) do wrapped[name] = value end
function wrapped.new(options)
	local inner, err = real.new(options)
	if not inner then return inner, err end
	local failing = {}
	function failing.router()
		return function () error(message, 0) end
	end
	return setmetatable(failing, { __index = function (_, name)
		return function (_, ...) return inner[name](inner, ...) end
	end })
end
return wrapped
"#;

/// A plugin directory holding `mod_client_proxy/` whose library's router
/// raises `message` on every stanza; removed when dropped. Builds the
/// stand-in library with the C compiler and Lua 5.4's headers.
pub fn failing_plugin_dir(message: &str) -> io::Result<TempDir> {
    let dir = server_dir()?;
    let module = dir.path().join("mod_client_proxy");
    fs::create_dir(&module)?;
    let built = plugin_dir().join("mod_client_proxy");
    fs::copy(
        built.join("mod_client_proxy.lua"),
        module.join("mod_client_proxy.lua"),
    )?;
    let real = std::path::absolute(built.join("client_proxy.so"))?;
    let source = dir.path().join("client_proxy.c");
    fs::write(&source, c_source(&real, message))?;
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-I/usr/include/lua5.4", "-o"])
        .arg(module.join("client_proxy.so"))
        .arg(&source)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "cannot build the failing library: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(dir)
}

fn c_source(real: &Path, message: &str) -> String {
    format!(
        "#include <lua.h>\n#include <lauxlib.h>\n\n\
         static const char wrapper[] = {};\n\n\
         int luaopen_client_proxy(lua_State *L) {{\n\
         \tif (luaL_loadstring(L, wrapper) != LUA_OK) return lua_error(L);\n\
         \tlua_pushstring(L, {});\n\
         \tlua_pushstring(L, {});\n\
         \tlua_call(L, 2, 1);\n\
         \treturn 1;\n}}\n",
        c_str(WRAPPER),
        c_str(&real.to_string_lossy()),
        c_str(message)
    )
}

/// A C string literal.
fn c_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n\"\n\t\""),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
