-- The shim's part in choosing a resource (docs/behaviour.md, D1-D9): the options it
-- reads, the error condition and sticky key it reads off each stanza, and
-- the resends and log lines it carries out. The choice itself is the core's.

local h = require "helpers.shim"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local P, T, U, ENC_U = h.P, h.T, h.U, h.ENC_U;
local make_iq, make_presence, make_reply = h.make_iq, h.make_presence, h.make_reply;
local fresh_shim, online, request = h.fresh_shim, h.online, h.request;
local STANZAS = h.STANZAS;

local FOCUS = "http://jitsi.org/protocol/focus";

-- T/resource answers the request `id` with an IQ error of this condition.
local function make_error(resource, id, condition)
	return st.error_reply(make_iq({ type = "get", from = P.."/"..U, to = T.."/"..resource, id = id }),
		"cancel", condition);
end

local function conference(id, room)
	return st.iq({ type = "set", from = U, to = P, id = id })
		:tag("conference", { xmlns = FOCUS, room = room }):up();
end

local function load_error(options)
	local server = require "helpers.fake_module".new_server();
	local ok, err = pcall(server.load, server, options);
	assert.is_false(ok, "the shim loaded");
	return err;
end

-- The library's handle of a loaded shim, as module.save hands it on.
local function resources(shim)
	local by_name = {};
	for _, r in ipairs(shim.module.save().proxy:resources()) do by_name[r.name] = r; end
	return by_name;
end

describe("choosing a resource", function ()

	it("d1: client_proxy_resources keeps the others out and says so once, at info", function ()
		local shim = fresh_shim({ client_proxy_resources = { "focus" } });
		assert.is_true(shim:deliver(make_presence({ from = T.."/jvb" })));
		assert.is_table(shim:find_log("info", T.."/jvb", "client_proxy_resources"));
		online(shim, "focus");
		for i = 1, 10 do
			assert.equals(T.."/focus", request(shim, "q"..i).attr.to);
		end
	end);

	it("d1: a single name is taken as a list of one", function ()
		local shim = fresh_shim({ client_proxy_resources = "focus" });
		online(shim, "focus");
		shim:deliver(make_presence({ from = T.."/other" }));
		for i = 1, 10 do
			assert.equals(T.."/focus", request(shim, "q"..i).attr.to);
		end
	end);

	it("d2: show dnd drains a resource; client_proxy_drain_show names other values", function ()
		local shim = fresh_shim({ client_proxy_drain_show = { "xa" } });
		online(shim, "a");
		online(shim, "b");
		assert.is_true(shim:deliver(make_presence({ from = T.."/a" }, "xa")));
		for i = 1, 10 do
			assert.equals(T.."/b", request(shim, "q"..i).attr.to);
		end
	end);

	it("d3: round_robin alternates", function ()
		local shim = fresh_shim({ client_proxy_balance = "round_robin" });
		online(shim, "a");
		online(shim, "b");
		local first = request(shim, "q1").attr.to;
		local second = request(shim, "q2").attr.to;
		assert.are_not.equal(first, second);
		assert.equals(first, request(shim, "q3").attr.to);
	end);

	it("d3, d4: bad values are refused at load, naming the option", function ()
		local err = load_error({ target_address = T, client_proxy_balance = "fastest" });
		assert.matches("client_proxy_balance", err, 1, true);
		err = load_error({ target_address = T, client_proxy_sticky = "{"..FOCUS.."}conference" });
		assert.matches("client_proxy_sticky", err, 1, true);
		err = load_error({ target_address = T, client_proxy_drain_show = { "busy" } });
		assert.matches("client_proxy_drain_show", err, 1, true);
	end);

	it("d4: a stanza:find path keeps a room on one resource; requests without it still go out", function ()
		local shim = fresh_shim({ client_proxy_sticky = "{"..FOCUS.."}conference@room" });
		for _, r in ipairs({ "a", "b", "c", "d" }) do online(shim, r); end
		local rooms = {};
		for i = 1, 40 do
			local room = "room"..(i % 8).."@conference.example.org";
			assert.is_true(shim:deliver(conference("c"..i, room)));
			local sent = shim:take();
			assert.equals(1, #sent);
			rooms[room] = rooms[room] or sent[1].attr.to;
			assert.equals(rooms[room], sent[1].attr.to, room);
			assert.is_true(shim:deliver(make_reply(sent[1].attr.to:match("/(.*)$"), "c"..i)));
			shim:take();
		end
		local used = {};
		for _, to in pairs(rooms) do used[to] = true; end
		assert.is_true(next(used, next(used)) ~= nil, "more than one resource serves the rooms");
		assert.is_table(request(shim, "plain"));
	end);

	it("d5: a not-me error sends a clone of the set to another resource; a8: the result comes back", function ()
		local shim = fresh_shim();
		online(shim, "stray");
		local iq = request(shim, "s1", { type = "set" });
		online(shim, "focus");
		assert.is_true(shim:deliver(make_error("stray", "s1", "feature-not-implemented")));
		local sent = shim:take();
		assert.equals(1, #sent);
		assert.is_false(rawequal(iq, sent[1]));
		assert.equals("set", sent[1].attr.type);
		assert.equals(ENC_U, sent[1].attr.from);
		assert.equals(T.."/focus", sent[1].attr.to);
		assert.equals("payload", sent[1]:get_child("query", "jabber:iq:version"):get_child_text("name"));
		assert.is_true(shim:deliver(make_reply("focus", "s1")));
		sent = shim:take();
		assert.equals(1, #sent);
		assert.equals(U, sent[1].attr.to);
		assert.equals("result", sent[1].attr.type);
		-- d6: the stray is ejected, and the log names it.
		assert.is_table(shim:find_log("warn", "Ejected", T.."/stray", "not_me"));
		local by_name = resources(shim);
		assert.same({ "ejected", "eligible" }, { by_name.stray.state, by_name.focus.state });
		assert.equals("not_me", by_name.stray.ejected_for);
	end);

	it("c3: a recipient-unavailable bounce of a get moves it; of a set answers wait/recipient-unavailable", function ()
		local shim = fresh_shim();
		online(shim, "a");
		request(shim, "g1");
		request(shim, "s1", { type = "set" });
		online(shim, "b");
		assert.is_true(shim:deliver(make_error("a", "g1", "recipient-unavailable")));
		local sent = shim:take();
		assert.equals(1, #sent);
		assert.equals(T.."/b", sent[1].attr.to);
		assert.is_true(shim:deliver(make_error("a", "s1", "recipient-unavailable")));
		sent = shim:take();
		assert.equals(1, #sent);
		assert.equals(U, sent[1].attr.to);
		local error_type, condition = sent[1]:get_error();
		assert.same({ "wait", "recipient-unavailable" }, { error_type, condition });
		assert.equals(STANZAS, sent[1]:get_child("error"):get_child(condition, STANZAS).attr.xmlns);
	end);

	it("client_proxy_attempts = 1 forwards a not-me answer as it is; the old name still counts", function ()
		for _, options in ipairs({ { client_proxy_attempts = 1 }, { client_proxy_get_attempts = 1 } }) do
			local shim = fresh_shim(options);
			online(shim, "a");
			request(shim, "q1");
			online(shim, "b");
			assert.is_true(shim:deliver(make_error("a", "q1", "service-unavailable")));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.equals(U, sent[1].attr.to);
			assert.equals("error", sent[1].attr.type);
		end
	end);

	it("resources() reports state, load and counts per resource", function ()
		local shim = fresh_shim({ client_proxy_resources = { "a", "b", "n" } });
		online(shim, "a");
		request(shim, "q1");
		shim:deliver(make_presence({ from = T.."/b" }, "dnd"));
		shim:deliver(make_presence({ from = T.."/n" }, nil, -1));
		shim:deliver(make_presence({ from = T.."/x" }));
		local by_name = resources(shim);
		assert.same({ "eligible", 1, 0, 0 },
			{ by_name.a.state, by_name.a.in_flight, by_name.a.served, by_name.a.failed });
		assert.equals("draining", by_name.b.state);
		assert.equals("dnd", by_name.b.show);
		assert.equals("negative_priority", by_name.n.state);
		assert.equals("filtered", by_name.x.state);
		assert.is_true(shim:deliver(make_reply("a", "q1")));
		by_name = resources(shim);
		assert.same({ 0, 1 }, { by_name.a.in_flight, by_name.a.served });
	end);
end);
