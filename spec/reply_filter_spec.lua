-- The shim's filter on the implementing client's sessions, which takes a
-- reply to P/enc(U) as the session reads it instead of leaving it to the
-- router (docs/behaviour.md, row A8: the reply reaches U as before). Same
-- fake environment as mod_client_proxy_spec.lua, with Prosody's real
-- util.filters and util.events.
--
-- Run with `make test-busted` (CLIENT_PROXY_PLUGIN names the built plugin).

require "helpers.fake_module"; -- sets package.path for Prosody's util.*
local multitable = require "util.multitable";
local st = require "util.stanza";
local h = require "helpers.shim";
local P, T = h.P, h.T;
local make_iq = h.make_iq;
local make_message = h.make_message;
local fresh_shim = h.fresh_shim;
local online = h.online;

local LOCAL_U = "alice@example.org/phone";

-- A bound client session of T, as mod_c2s makes it: util.filters' filter
-- function, and the thread its stanzas are queued on (idle).
local function target_session(server, resource)
	local session = server:connect(T.."/"..resource);
	session.type, session.username = "c2s", "svc";
	session.thread = { state = "ready", queue = {} };
	return session;
end

local function filters_of(session)
	return session.filters and session.filters["stanzas/in"] or {};
end

-- What mod_c2s does with a stanza the session read: its filters first,
-- then (if one is left) the router. Returns what the router gets.
local function read(session, stanza)
	return session.filter("stanzas/in", stanza);
end

-- T/a online and connected; U connected on this server; mod_iq on its host.
-- The first reply took the router's way and put the filter on T/a.
local function filtered_shim(options)
	local shim, server = fresh_shim(options);
	server:load_mod_iq("example.org");
	local t_a = target_session(server, "a");
	local u = server:connect(LOCAL_U);
	online(shim, "a");
	assert.is_true(shim:deliver(make_iq({ type = "get", from = LOCAL_U, to = P, id = "first" })));
	assert.equals(1, #t_a.received);
	assert.is_true(shim:deliver(make_iq({ type = "result", from = T.."/a", to = P.."/"..LOCAL_U, id = "first" }), t_a));
	assert.equals(1, #u.received);
	assert.is_not_nil(filters_of(t_a)[1], "the first reply put the filter on the session");
	return shim, server, t_a, u;
end

-- A request from U, forwarded to T/a; returns the reply T/a would make.
local function asked(shim, t_a, id, ty)
	assert.is_true(shim:deliver(make_iq({ type = "get", from = LOCAL_U, to = P, id = id })));
	local forwarded = t_a.received[#t_a.received];
	assert.equals(id, forwarded.attr.id);
	return make_iq({ type = ty or "result", from = "forged@example.org/x", to = forwarded.attr.from, id = id });
end

describe("mod_client_proxy's reply filter", function ()
	it("hands a reply to the requester as the session reads it, from P, with `from` stamped first", function ()
		local shim, _, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		assert.is_nil(read(t_a, reply), "consumed: the router never sees it");
		assert.equals(2, #u.received);
		local got = u.received[2];
		assert.is_true(rawequal(reply, got));
		assert.equals(P, got.attr.from);
		assert.equals(LOCAL_U, got.attr.to);
		assert.equals("payload", got:get_child("query", "jabber:iq:version"):get_child_text("name"));
		assert.equals(2, #shim:rtt_samples());
	end);

	it("takes an error reply too, and the requests it settles are done", function ()
		local shim, _, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2", "error");
		reply:tag("error", { type = "cancel" })
			:tag("item-not-found", { xmlns = h.STANZAS }):up():up();
		assert.is_nil(read(t_a, reply));
		assert.equals("error", u.received[2].attr.type);
		assert.equals(0, shim:metric("in_flight"));
	end);

	it("leaves to the router what is not a reply to the address the proxy gave", function ()
		local shim, _, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		local others = {
			make_message({ from = T.."/a", to = P.."/"..LOCAL_U }),
			make_iq({ type = "get", from = T.."/a", to = P.."/"..LOCAL_U, id = "g" }),
			make_iq({ type = "result", from = T.."/a", to = LOCAL_U, id = "q2" }),
			make_iq({ type = "result", from = T.."/a", to = "PROXY.EXAMPLE/"..LOCAL_U, id = "q2" }),
			make_iq({ type = "result", from = T.."/a", to = P.."/"..LOCAL_U, id = "no id" }),
			st.iq({ type = "error", from = T.."/a", to = P.."/"..LOCAL_U, id = "q2" }), -- no condition
			make_iq({ type = "result", from = T.."/a", to = P.."/", id = "q2" }),
		};
		others[5].attr.id = nil;
		local namespaced = make_iq({ type = "result", from = T.."/a", to = P.."/"..LOCAL_U, id = "q2" });
		namespaced.attr.xmlns = "jabber:server";
		others[#others + 1] = namespaced;
		for _, stanza in ipairs(others) do
			assert.is_true(rawequal(stanza, read(t_a, stanza)));
		end
		assert.equals(1, #u.received);
		assert.equals(1, shim:metric("in_flight"));
		assert.is_nil(read(t_a, reply));
		assert.equals(2, #u.received);
	end);

	it("leaves a reply to the router while the session's thread has stanzas queued, so they stay in order", function ()
		local shim, _, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		t_a.thread = { state = "waiting", queue = {} };
		assert.is_true(rawequal(reply, read(t_a, reply)));
		t_a.thread = { state = "ready", queue = { make_message({ from = T.."/a" }) } };
		assert.is_true(rawequal(reply, read(t_a, reply)));
		assert.equals(1, #u.received);
		t_a.thread = { state = "ready", queue = {} };
		assert.is_nil(read(t_a, reply));
		assert.equals(2, #u.received);
	end);

	it("leaves a reply to the router when another module hooks what the router would fire", function ()
		local shim, server, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		for _, where in ipairs({ { "example.org", "pre-stanza" }, { "example.org", "pre-iq/host" },
				{ P, "iq/host", 20 } }) do
			local unhook = server:hook(where[1], where[2], function () end, where[3]);
			assert.is_true(rawequal(reply, read(t_a, reply)), where[2]);
			unhook();
		end
		assert.equals(1, #u.received);
		assert.is_nil(read(t_a, reply));
		assert.equals(2, #u.received);
	end);

	it("fires mod_blocklist's pre-event, as the router does, and a block holds", function ()
		local shim, server, t_a, u = filtered_shim();
		local host = server.hosts["example.org"];
		local blocklist = { event_handlers = multitable.new() };
		local blocked = true;
		local seen = 0;
		local function bounce_outgoing(event)
			seen = seen + 1;
			assert.equals(T.."/a", event.stanza.attr.from);
			return blocked;
		end
		blocklist.event_handlers:add(host.events, "pre-iq/host", bounce_outgoing, true);
		host.events.add_handler("pre-iq/host", bounce_outgoing, 1000);
		host.modules.blocklist = { module = blocklist };

		local reply = asked(shim, t_a, "q2");
		assert.is_nil(read(t_a, reply), "a blocked reply is dropped, as the router would");
		assert.equals(1, seen);
		assert.equals(1, #u.received);
		assert.equals(1, shim:metric("in_flight"));
		blocked = nil;
		reply = asked(shim, t_a, "q3");
		assert.is_nil(read(t_a, reply));
		assert.equals(2, seen);
		assert.equals(2, #u.received);
	end);

	it("logs a failure on the way and goes on, as the session's thread would", function ()
		local shim, _, t_a, u = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		u.send = function () error("the requester's connection broke"); end
		assert.is_nil(read(t_a, reply));
		assert.is_not_nil(shim:find_log("error", "Failed to handle iq type=result id=q2",
			"the requester's connection broke"));
	end);

	it("gives the router back a reply that matches no request, and does not count it twice", function ()
		local shim, _, t_a, u = filtered_shim();
		local stray = make_iq({ type = "result", from = T.."/a", to = P.."/"..LOCAL_U, id = "nobody-asked" });
		assert.is_true(rawequal(stray, read(t_a, stray)), "Prosody's own handlers may have it");
		assert.equals(1, shim:dropped("unmatched"));
		-- The router brings it to the component's hook next.
		assert.is_nil(shim:deliver(stray, t_a));
		assert.equals(1, shim:dropped("unmatched"));
		assert.equals(1, #u.received);
	end);

	it("is taken off the target's sessions on unload and on a reload, whose instance puts its own", function ()
		local shim, server, t_a = filtered_shim();
		local reply = asked(shim, t_a, "q2");
		local new = server:reload(shim, { target_address = T });
		assert.is_nil(filters_of(t_a)[1]);
		assert.is_true(rawequal(reply, read(t_a, reply)), "the router's way, to the new instance");
		reply.attr.from = T.."/a"; -- as the router stamps it
		assert.is_true(new:deliver(reply, t_a));
		assert.is_not_nil(filters_of(t_a)[1]);
		new:unload();
		assert.is_nil(filters_of(t_a)[1]);
	end);

	it("leaves to the router the replies of a session that mod_smacks resumed on a new connection", function ()
		-- The resumed session takes the new connection's filters, which
		-- pass the new connection's (unbound) session object.
		local shim, _, t_a, u = filtered_shim();
		local connection = { type = "c2s_unauthed", host = "example.org" };
		require "util.filters".initialize(connection);
		t_a.filter, t_a.filters = connection.filter, connection.filters;
		for i = 2, 3 do
			local reply = asked(shim, t_a, "q"..i);
			local from = reply.attr.from;
			assert.is_true(rawequal(reply, read(t_a, reply)));
			assert.equals(from, reply.attr.from);
			reply.attr.from = T.."/a"; -- as the router stamps it
			assert.is_true(shim:deliver(reply, t_a));
			assert.equals(i, #u.received);
		end
	end);

	it("is put only on the target's own sessions", function ()
		local shim, server = fresh_shim();
		server:load_mod_iq("example.org");
		local t_a = target_session(server, "a");
		local u = server:connect(LOCAL_U);
		u.type, u.username = "c2s", "alice";
		online(shim, "a");
		shim:deliver(make_iq({ type = "get", from = LOCAL_U, to = P, id = "q1" }));
		local impostor = { type = "c2s", username = "mallory", host = "example.org", full_jid = "mallory@example.org/x" };
		assert.is_true(shim:deliver(make_iq({ type = "result", from = T.."/a", to = P.."/"..LOCAL_U, id = "q1" }), impostor));
		assert.is_nil(impostor.filters);
		assert.is_nil(t_a.filters);
	end);
end);
