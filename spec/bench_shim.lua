-- The price of crossing into the library, per proxied request and reply:
-- the shim's whole path (Prosody's real util.stanza, the real library, a
-- fake module API) against the same address rewrite in plain Lua with no
-- state at all. Not a busted spec: run it with
--   CLIENT_PROXY_PLUGIN=build/lua-5.4/mod_client_proxy lua5.4 spec/bench_shim.lua [ROUNDS]
package.path = "./spec/?.lua;" .. package.path;

local fake = require "helpers.fake_module";
local st = require "util.stanza";
local jid_split = require "util.jid".split;

local rounds = tonumber(arg and arg[1]) or 200000;
local host, target = fake.host, fake.target;
local requester = "alice@example.org/phone";
local resource = target.."/r1";

-- The plain-Lua rewrite: what the original module did, minus its logging.
local plain = {};
function plain.handler(event)
	local stanza = event.stanza;
	local attr = stanza.attr;
	if jid_split(attr.from) == jid_split(target) then
		local _, _, to = jid_split(attr.to);
		attr.from, attr.to = host, to;
	else
		attr.from, attr.to = host.."/"..attr.from, resource;
	end
	plain.module:send(stanza);
	return true;
end

local server = fake.new_server();
local inst = server:load({ target_address = target });
inst:deliver(st.presence({ from = resource, to = host }));
inst:take();
-- A send as cheap as Prosody's is fast, for both paths; the fake's own
-- records every stanza.
local sent = 0;
function inst.module:send()
	sent = sent + 1;
	return true;
end
plain.module = inst.module;

-- Both paths get the same stanzas, built before the clock starts (building
-- one with util.stanza costs more than either path), and are reached the
-- same way.
local function run(deliver, take)
	local payload = st.stanza("ping", { xmlns = "urn:xmpp:ping" });
	local requests, replies = {}, {};
	for i = 1, rounds do
		local id = tostring(i);
		requests[i] = st.iq({ type = "get", from = requester, to = host, id = id }):add_child(payload);
		replies[i] = st.iq({ type = "result", from = resource, to = host.."/"..requester, id = id });
	end
	local start = os.clock();
	for i = 1, rounds do
		deliver({ stanza = requests[i] });
		deliver({ stanza = replies[i] });
		if i % 1000 == 0 then take(); end
	end
	local ns = (os.clock() - start) / rounds * 1e9;
	for i = 1, rounds do
		assert(replies[i].attr.to == requester, "reply not forwarded");
	end
	return ns;
end

local function shim_deliver(event)
	local hook = inst.hooks[fake.event_name(event.stanza)];
	return hook.handler(event);
end
local function plain_deliver(event)
	fake.event_name(event.stanza);
	return plain.handler(event);
end

-- Warm up, then take the median of five rounds of each.
run(shim_deliver, function () end);
run(plain_deliver, function () end);
local shim_ns, plain_ns = {}, {};
for i = 1, 5 do
	shim_ns[i] = run(shim_deliver, function () end);
	plain_ns[i] = run(plain_deliver, function () end);
end
table.sort(shim_ns);
table.sort(plain_ns);
local s, p = shim_ns[3], plain_ns[3];
print(("%s, %d request+reply rounds, median of 5:"):format(_VERSION, rounds));
print(("  shim + library:    %7.0f ns"):format(s));
print(("  plain Lua rewrite: %7.0f ns"):format(p));
print(("  ratio:             %7.2f (the difference, %.0f ns, is the price of the state and the crossing)"):format(s / p, s - p));
