-- The Lua shim (lua/mod_client_proxy.lua) in a fake Prosody module
-- environment, with Prosody's real util.stanza and the real built library.
-- Test names start with the row of docs/behaviour.md they check.
--
-- Run with `make test-busted` (CLIENT_PROXY_PLUGIN names the built plugin).

local fake = require "helpers.fake_module"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";

local h = require "helpers.shim";
local P, T, U, ENC_U, STANZAS = h.P, h.T, h.U, h.ENC_U, h.STANZAS;
local make_iq = h.make_iq;
local make_presence = h.make_presence;
local make_message = h.make_message;
local fresh_shim = h.fresh_shim;
local online = h.online;
local request = h.request;
local make_reply = h.make_reply;
local addresses = h.addresses;
local assert_error_reply = h.assert_error_reply;
local assert_answered_with = h.assert_answered_with;
local assert_iq_error = h.assert_iq_error;
local assert_presence = h.assert_presence;

---------------------------------------------------------------------------

describe("mod_client_proxy", function ()

	describe("hooks", function ()
		it("hooks iq, message and presence to host, bare and full JIDs, before mod_iq (priority > 0), with one handler", function ()
			local shim = fresh_shim();
			local handler;
			for _, kind in ipairs({ "iq", "message", "presence" }) do
				for _, to in ipairs({ "host", "bare", "full" }) do
					local event = kind.."/"..to;
					local hook = shim.hooks[event];
					assert.is_table(hook, "not hooked: "..event);
					assert.is_number(hook.priority, event);
					assert.is_true(hook.priority > 0, event.." must run before mod_iq's handlers at 0");
					handler = handler or hook.handler;
					assert.equals(handler, hook.handler, event);
				end
			end
		end);

		it("a request to a user@P address (iq/bare) is routed like one to P", function ()
			local shim = fresh_shim();
			online(shim, "a");
			local iq = request(shim, "q1", { to = "room@"..P });
			assert.equals(ENC_U, iq.attr.from);
			assert.equals(T.."/a", iq.attr.to);
		end);
	end);

	describe("load", function ()
		local function load_error(options, how)
			local server = fake.new_server();
			local ok, err = pcall(server.load, server, options, how);
			assert.is_false(ok, "the shim loaded");
			assert.is_string(err);
			return err, server;
		end

		it("refuses a host that is not a component, with an error naming the host", function ()
			local err = load_error({ target_address = T }, { host_type = "local" });
			assert.matches('"'..P..'"', err, 1, true);
			assert.matches("Component", err, 1, true);
		end);

		it("refuses to load without target_address, naming the option", function ()
			local err = load_error({});
			assert.matches("target_address", err, 1, true);
		end);

		it("refuses a target_address that is not a bare JID, naming the option", function ()
			local err = load_error({ target_address = T.."/resource" });
			assert.matches("target_address", err, 1, true);
			assert.matches("bare JID", err, 1, true);
		end);

		it("refuses client_proxy_timeout = 0, naming the option and its range", function ()
			local err = load_error({ target_address = T, client_proxy_timeout = 0 });
			assert.matches("client_proxy_timeout", err, 1, true);
			assert.matches("from 0.1 to 86400", err, 1, true);
		end);

		it("refuses client_proxy_attempts = 2.5, naming the option and its range", function ()
			local err = load_error({ target_address = T, client_proxy_attempts = 2.5 });
			assert.matches("client_proxy_attempts", err, 1, true);
			assert.matches("from 1 to 10", err, 1, true);
			err = load_error({ target_address = T, client_proxy_get_attempts = 2.5 });
			assert.matches("option 'client_proxy_get_attempts'", err, 1, true);
		end);

		it("refuses client_proxy_max_in_flight = 0 before it sends anything or touches a roster", function ()
			local err, server = load_error({ target_address = T, client_proxy_max_in_flight = 0 });
			assert.matches("client_proxy_max_in_flight", err, 1, true);
			assert.same({}, server.journal);
		end);
	end);

	describe("start", function ()
		it("sends T a subscribe then a probe when T's host is active, after putting P in T's roster with subscription from", function ()
			local server = fake.new_server();
			server:roster_of(T)[false].pending[P] = true;
			local shim = server:load({ target_address = T });
			local sent = shim:take();
			assert.equals(2, #sent);
			assert_presence(sent[1], T, "subscribe");
			assert_presence(sent[2], T, "probe");

			local roster = server.rosters[T];
			assert.equals("from", roster[P].subscription);
			assert.is_nil(roster[false].pending[P], "the pending subscription is cleared");
			assert.equals(1, #server.saved_rosters);
			assert.same({ user = "svc", host = "example.org", jid = P },
				{ user = server.saved_rosters[1].user, host = server.saved_rosters[1].host, jid = server.saved_rosters[1].jid });
			assert.same({ { user = "svc", host = "example.org", jid = P } }, server.pushes);
			-- The roster is saved first, so T's server approves the subscribe itself.
			assert.same({ "save_roster", "roster_push", "send presence subscribe", "send presence probe" }, server.journal);
		end);

		it("turns a subscription to into both, and leaves from alone", function ()
			local server = fake.new_server();
			server:roster_of(T)[P] = { subscription = "to", groups = {} };
			fresh_shim(nil, server);
			assert.equals("both", server.rosters[T][P].subscription);
			assert.equals(1, #server.saved_rosters);

			local server2 = fake.new_server();
			server2:roster_of(T)[P] = { subscription = "from", groups = {} };
			fresh_shim(nil, server2);
			assert.same({}, server2.saved_rosters);
			assert.same({}, server2.pushes);
		end);

		it("logs an error and pushes nothing when the roster cannot be saved", function ()
			local server = fake.new_server();
			server.save_roster_result = false;
			local shim = fresh_shim(nil, server);
			assert.equals(1, #server.saved_rosters);
			assert.same({}, server.pushes);
			assert.is_table(shim:find_log("error", "roster", T));
		end);

		it("leaves the roster alone with client_proxy_manage_roster = false", function ()
			local server = fake.new_server();
			local shim = server:load({ target_address = T, client_proxy_manage_roster = false });
			assert.equals(2, #shim:take());
			assert.same({}, server.saved_rosters);
			assert.is_nil(server.rosters[T]);
			assert.is_nil(shim.context_hooks["example.org"]);
		end);

		it("when T has no account yet, warns, and fixes the roster when T binds a resource", function ()
			local server = fake.new_server();
			server.accounts[T] = nil;
			local shim = server:load({ target_address = T });
			assert.equals(2, #shim:take(), "subscribe and probe are sent anyway");
			assert.same({}, server.saved_rosters);
			assert.is_table(shim:find_log("warn", T, P));

			server.accounts[T] = true;
			shim:fire_on("example.org", "resource-bind", { session = { username = "someone-else" } });
			assert.same({}, server.saved_rosters);
			shim:fire_on("example.org", "resource-bind", { session = { username = "svc" } });
			assert.equals(1, #server.saved_rosters);
			assert.equals("from", server.rosters[T][P].subscription);
		end);

		it("with T on another server, sends subscribe and probe at once and leaves rosters alone", function ()
			local server = fake.new_server();
			local shim = server:load({ target_address = "svc@elsewhere.example" });
			local sent = shim:take();
			assert.equals(2, #sent);
			assert_presence(sent[1], "svc@elsewhere.example", "subscribe");
			assert_presence(sent[2], "svc@elsewhere.example", "probe");
			assert.same({}, server.saved_rosters);
			assert.is_nil(shim.global_hooks["host-activated"]);
		end);

		it("when T's host is configured here but not active yet, sends nothing until host-activated fires for it", function ()
			local server = fake.new_server();
			server.hosts["example.org"] = nil; -- in the config, not active
			local shim = server:load({ target_address = T });
			assert.same({}, shim:take());
			assert.same({}, server.saved_rosters);
			assert.is_table(shim.global_hooks["host-activated"]);

			server.hosts["other.example"] = { type = "local" };
			server:fire_global("host-activated", "other.example");
			assert.same({}, shim:take());

			server.hosts["example.org"] = { type = "local" };
			server:fire_global("host-activated", "example.org");
			local sent = shim:take();
			assert.equals(2, #sent);
			assert_presence(sent[1], T, "subscribe");
			assert_presence(sent[2], T, "probe");
			assert.equals("from", server.rosters[T][P].subscription);
		end);
	end);

	describe("requests", function ()
		it("b1: an iq get is rewritten in place, from P/U to T/r, id and payload unchanged, and taken", function ()
			local shim = fresh_shim();
			online(shim, "a");
			local iq = make_iq({ type = "get", from = U, to = P, id = "q1" });
			local query = iq.tags[1];
			local ret = shim:deliver(iq);
			assert.is_true(ret);
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.is_true(rawequal(iq, sent[1]), "the same stanza object is sent");
			assert.equals(ENC_U, iq.attr.from);
			assert.equals(T.."/a", iq.attr.to);
			assert.equals("q1", iq.attr.id);
			assert.equals("get", iq.attr.type);
			assert.equals(1, #iq.tags);
			assert.is_true(rawequal(query, iq.tags[1]));
			assert.equals("payload", iq:get_child("query", "jabber:iq:version"):get_child_text("name"));
		end);

		it("b1: an iq set to P/anything is forwarded the same way", function ()
			local shim = fresh_shim();
			online(shim, "a");
			local iq = request(shim, "s1", { type = "set", to = P.."/anything" });
			assert.equals(ENC_U, iq.attr.from);
			assert.equals(T.."/a", iq.attr.to);
			assert.equals("set", iq.attr.type);
		end);

		it("b2: a resource with a negative priority is not eligible: cancel/service-unavailable", function ()
			local shim = fresh_shim();
			online(shim, "a", -1);
			assert_answered_with(shim, make_iq({ type = "get", from = U, to = P, id = "q1" }),
				"cancel", "service-unavailable");
		end);

		it("b2: with no resource online, a get is answered with cancel/service-unavailable from the address it was sent to", function ()
			local shim = fresh_shim();
			assert_answered_with(shim, make_iq({ type = "get", from = U, to = P.."/x", id = "q1" }),
				"cancel", "service-unavailable");
		end);

		it("b3: a request with the id of one still in flight gets cancel/conflict; the first is not disturbed", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			assert_answered_with(shim, make_iq({ type = "get", from = U, to = P, id = "q1" }),
				"cancel", "conflict");
			local reply = make_reply("a", "q1");
			assert.is_true(shim:deliver(reply));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.equals(U, sent[1].attr.to);
		end);

		it("b4: over client_proxy_max_in_flight_per_requester (per bare JID) gets wait/resource-constraint", function ()
			local shim = fresh_shim({ client_proxy_max_in_flight_per_requester = 1 });
			online(shim, "a");
			request(shim, "q1");
			assert_answered_with(shim, make_iq({ type = "get", from = "alice@example.net/laptop", to = P, id = "q2" }),
				"wait", "resource-constraint");
			-- Another requester is not limited by alice's requests.
			request(shim, "q3", { from = "bob@example.net/desk" });
		end);

		it("b4: over client_proxy_max_in_flight gets wait/resource-constraint", function ()
			local shim = fresh_shim({ client_proxy_max_in_flight = 1 });
			online(shim, "a");
			request(shim, "q1");
			assert_answered_with(shim, make_iq({ type = "set", from = "bob@example.net/desk", to = P, id = "q2" }),
				"wait", "resource-constraint");
		end);

		it("b5: an iq result or error to P is left to Prosody (nil), nothing sent, counted as unanswerable", function ()
			local shim = fresh_shim();
			online(shim, "a");
			assert.is_nil(shim:deliver(make_iq({ type = "result", from = U, to = P, id = "r1" })));
			assert.is_nil(shim:deliver(make_iq({ type = "error", from = U, to = P.."/x", id = "r2" })));
			assert.same({}, shim:take());
			assert.equals(2, shim:dropped("unanswerable"));
			assert.equals(0, shim:dropped("unmatched"));
		end);

		it("b6: a message is answered with cancel/feature-not-implemented", function ()
			local shim = fresh_shim();
			online(shim, "a");
			assert_answered_with(shim, make_message({ from = U, to = P.."/x", id = "m1" }),
				"cancel", "feature-not-implemented");
		end);

		it("b7: a presence is answered with cancel/bad-request", function ()
			local shim = fresh_shim();
			assert_answered_with(shim, make_presence({ from = U, to = P }), "cancel", "bad-request");
			assert_answered_with(shim, make_presence({ type = "subscribe", from = U, to = P }), "cancel", "bad-request");
		end);

		it("b7: a presence or message of type error is dropped: taken, nothing sent, counted", function ()
			local shim = fresh_shim();
			assert.is_true(shim:deliver(make_presence({ type = "error", from = U, to = P })));
			assert.is_true(shim:deliver(make_message({ type = "error", from = U, to = P })));
			assert.same({}, shim:take());
			assert.equals(2, shim:dropped("unanswerable"));
		end);
	end);

	describe("from the target", function ()
		it("a4: presence subscribed from T makes P probe T", function ()
			local shim = fresh_shim();
			assert.is_true(shim:deliver(make_presence({ type = "subscribed", from = T })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_presence(sent[1], T, "probe");
		end);

		it("a6: presence subscribe from T is answered with subscribed", function ()
			local shim = fresh_shim();
			assert.is_true(shim:deliver(make_presence({ type = "subscribe", from = T })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_presence(sent[1], T, "subscribed");
		end);

		it("a7: a probe from T is answered with P's available presence, to the prober", function ()
			local shim = fresh_shim();
			assert.is_true(shim:deliver(make_presence({ type = "probe", from = T })));
			assert.is_true(shim:deliver(make_presence({ type = "probe", from = T.."/a" })));
			local sent = shim:take();
			assert.equals(2, #sent);
			assert_presence(sent[1], T, nil);
			assert_presence(sent[2], T.."/a", nil);
		end);

		it("a8: the matching reply is rewritten in place to from P, to U, and its rtt is sampled", function ()
			local shim, server = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			server:advance(0.25);
			local reply = make_reply("a", "q1");
			local ret = shim:deliver(reply);
			assert.is_true(ret);
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.is_true(rawequal(reply, sent[1]), "the reply itself is sent");
			assert.equals(P, reply.attr.from);
			assert.equals(U, reply.attr.to);
			assert.equals("q1", reply.attr.id);
			assert.equals("result", reply.attr.type);
			assert.equals("payload", reply:get_child("query", "jabber:iq:version"):get_child_text("name"));
			local samples = shim:rtt_samples();
			assert.equals(1, #samples);
			assert.is_true(math.abs(samples[1] - 0.25) < 1e-6, "rtt "..tostring(samples[1]));
			-- The request is done: its deadline passes without a second answer.
			server:advance(60);
			assert.same({}, shim:take());
		end);

		it("a8: an error reply from T is forwarded the same way", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			local reply = make_reply("a", "q1", U, "error");
			reply:tag("error", { type = "cancel" }):tag("item-not-found", { xmlns = STANZAS });
			assert.is_true(shim:deliver(reply));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.equals(P, sent[1].attr.from);
			assert.equals(U, sent[1].attr.to);
			local _, condition = sent[1]:get_error();
			assert.equals("item-not-found", condition);
		end);

		it("a9: a reply that matches nothing is left to Prosody (nil), nothing sent, counted as unmatched", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			online(shim, "b");
			local unknown_id = make_reply("a", "nope");
			local other_resource = make_reply("b", "q1");
			local other_requester = make_reply("a", "q1", "bob@example.net/desk");
			for _, reply in ipairs({ unknown_id, other_resource, other_requester }) do
				local before = addresses(reply);
				assert.is_nil(shim:deliver(reply));
				assert.same(before, addresses(reply), "left unchanged");
			end
			assert.same({}, shim:take());
			assert.equals(3, shim:dropped("unmatched"));
			-- The request is still in flight: the right reply goes through.
			assert.is_true(shim:deliver(make_reply("a", "q1")));
			assert.equals(1, #shim:take());
		end);

		it("a10: an iq get from T/r to P/x is answered with cancel/feature-not-implemented", function ()
			local shim = fresh_shim();
			online(shim, "a");
			assert_answered_with(shim, make_iq({ type = "get", from = T.."/a", to = P.."/"..U, id = "t1" }),
				"cancel", "feature-not-implemented");
		end);

		it("a11: a message from T/r is answered with cancel/feature-not-implemented", function ()
			local shim = fresh_shim();
			online(shim, "a");
			assert_answered_with(shim, make_message({ from = T.."/a", to = P.."/"..U }),
				"cancel", "feature-not-implemented");
		end);

		it("a12: an iq to P itself from T is answered with cancel/bad-request", function ()
			local shim = fresh_shim();
			online(shim, "a");
			assert_answered_with(shim, make_iq({ type = "set", from = T.."/a", to = P, id = "t1" }),
				"cancel", "bad-request");
		end);
	end);

	describe("requests in flight", function ()
		it("c2: a request with no reply by the deadline gets wait/remote-server-timeout from P; a late reply is dropped", function ()
			local shim, server = fresh_shim({ client_proxy_timeout = 10 });
			online(shim, "a");
			local t0 = server.clock;
			request(shim, "q1");
			local armed = server:armed_timers();
			assert.equals(1, #armed);
			assert.is_true(math.abs(armed[1].due - (t0 + 10)) < 1e-6, "due at "..armed[1].due);

			server:advance(9.9);
			assert.same({}, shim:take());
			server:advance(0.2);
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "wait", "remote-server-timeout");
			assert.same({}, server:armed_timers(), "nothing left to time out");

			assert.is_nil(shim:deliver(make_reply("a", "q1")));
			assert.same({}, shim:take());
			assert.equals(1, shim:dropped("unmatched"));
		end);

		it("c2: each request times out at its own deadline", function ()
			local shim, server = fresh_shim({ client_proxy_timeout = 10 });
			online(shim, "a");
			request(shim, "q1");
			server:advance(4);
			request(shim, "q2");
			server:advance(6.05);
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "wait", "remote-server-timeout");
			server:advance(3.9);
			assert.same({}, shim:take());
			server:advance(0.1);
			sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q2", "wait", "remote-server-timeout");
		end);

		it("c3: a get whose resource goes offline is sent again, a clone of the original, to another resource", function ()
			local shim = fresh_shim({ client_proxy_get_attempts = 2 });
			online(shim, "a");
			local iq = request(shim, "q1"); -- a is the only one online
			online(shim, "b");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			local sent = shim:take();
			assert.equals(1, #sent);
			local again = sent[1];
			assert.is_false(rawequal(iq, again), "a clone is sent, not the stanza already sent");
			assert.equals("iq", again.name);
			assert.equals("get", again.attr.type);
			assert.equals("q1", again.attr.id);
			assert.equals(ENC_U, again.attr.from);
			assert.equals(T.."/b", again.attr.to);
			assert.equals("payload", again:get_child("query", "jabber:iq:version"):get_child_text("name"));
			assert.equals(T.."/a", iq.attr.to, "the first stanza is left as it was sent");

			-- Only b's reply is accepted now.
			assert.is_nil(shim:deliver(make_reply("a", "q1")));
			assert.is_true(shim:deliver(make_reply("b", "q1")));
			sent = shim:take();
			assert.equals(1, #sent);
			assert.equals(U, sent[1].attr.to);
		end);

		it("c3: the stanza sent again is addressed by the core, whatever became of the one already sent", function ()
			local shim = fresh_shim({ client_proxy_get_attempts = 2 });
			online(shim, "a");
			local iq = request(shim, "q1");
			iq.attr.from, iq.attr.to = "changed@on.delivery", "changed@on.delivery/x";
			online(shim, "b");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.equals(ENC_U, sent[1].attr.from);
			assert.equals(T.."/b", sent[1].attr.to);
		end);

		it("c3: a set whose resource goes offline gets wait/recipient-unavailable", function ()
			local shim = fresh_shim({ client_proxy_get_attempts = 2 });
			online(shim, "a");
			request(shim, "s1", { type = "set" });
			online(shim, "b");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "s1", "wait", "recipient-unavailable");
		end);

		it("c3: a get with no attempt left gets wait/recipient-unavailable", function ()
			local shim = fresh_shim({ client_proxy_get_attempts = 1 });
			online(shim, "a");
			request(shim, "q1");
			online(shim, "b");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "wait", "recipient-unavailable");
		end);

		it("c3: a get whose resource goes offline with none left online gets cancel/service-unavailable", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "cancel", "service-unavailable");
		end);

		it("a5: unsubscribed from T settles every request and logs a warning naming T", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			assert.is_true(shim:deliver(make_presence({ type = "unsubscribed", from = T })));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "cancel", "service-unavailable");
			assert.is_table(shim:find_log("warn", T, "subscription"));
		end);
	end);

end);
