-- Loads a build of the library into whatever Lua runs this file and routes
-- one request through it: proof that the build fits that Lua.
-- Usage: lua spec/smoke.lua path/to/libclient_proxy.so
local path = assert(arg[1], "usage: smoke.lua LIBRARY");
local open = assert(package.loadlib(path, "luaopen_client_proxy"));
local lib = open();
local proxy = lib.new({ host = "proxy.example", target_address = "svc@example", seed = 1 });
local route = proxy:router();

assert(route("presence", nil, "svc@example/a", "proxy.example", nil, nil, 0, 1.0) == "done");
local verdict, from, to = route("iq", "get", "u@example/r", "proxy.example", "q1", nil, nil, 1.0);
assert(verdict == "forward", verdict);
assert(from == "proxy.example/u@example/r", from);
assert(to == "svc@example/a", to);
local verdict2, from2, to2, rtt = route("iq", "result", "svc@example/a", from, "q1", nil, nil, 1.25);
assert(verdict2 == "forward" and from2 == "proxy.example" and to2 == "u@example/r", verdict2);
assert(math.abs(rtt - 0.25) < 1e-9, rtt);

local ok_arg, err_arg = pcall(route, "iq", {}, "u@example/r", "proxy.example", "q2", nil, nil, 1.5);
assert(not ok_arg and tostring(err_arg):find("#2 (type)", 1, true), tostring(err_arg));
assert(route("iq", "get", "u@example/r", "proxy.example", "q3", nil, nil, 1.5) == "forward");

local refused, err = lib.new({ host = "proxy.example", target_address = "svc@example", timeout = 0 });
assert(refused == nil and err:find("client_proxy_timeout", 1, true), tostring(err));

print(("%s: client_proxy %s routes a request"):format(_VERSION, lib.version));
