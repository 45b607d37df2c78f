-- The Lua shim unloaded and reloaded (rows C4, C2 and L6 of
-- docs/behaviour.md): what is in flight is answered or kept, and a reload's
-- options apply or are refused whole. Same fake environment as
-- mod_client_proxy_spec.lua.
--
-- Run with `make test-busted` (CLIENT_PROXY_PLUGIN names the built plugin).

local fake = require "helpers.fake_module"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local h = require "helpers.shim";
local P, T, U = h.P, h.T, h.U;
local make_iq = h.make_iq;
local make_presence = h.make_presence;
local fresh_shim = h.fresh_shim;
local online = h.online;
local request = h.request;
local make_reply = h.make_reply;
local assert_iq_error = h.assert_iq_error;
local assert_presence = h.assert_presence;

---------------------------------------------------------------------------

describe("mod_client_proxy", function ()
	describe("unload and reload", function ()
		it("c4: unloading answers every request in flight with cancel/service-unavailable", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			request(shim, "q2", { from = "bob@example.net/desk", type = "set" });
			shim:unload();
			local sent = shim:take();
			assert.equals(2, #sent);
			table.sort(sent, function (x, y) return x.attr.id < y.attr.id; end);
			assert_iq_error(sent[1], U, "q1", "cancel", "service-unavailable");
			assert_iq_error(sent[2], "bob@example.net/desk", "q2", "cancel", "service-unavailable");
		end);

		it("c4: unloading for a reload sends nothing", function ()
			local shim = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			shim.module.reloading = true;
			shim:unload();
			assert.same({}, shim:take());
		end);

		it("c4: a reload keeps the requests in flight: the new instance forwards the late reply, once", function ()
			local shim, server = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			local new = server:reload(shim, { target_address = T });
			assert.same({}, shim:take(), "the old instance answers nothing");
			assert.same({}, new:take(), "no subscribe or probe again");

			local reply = make_reply("a", "q1");
			assert.is_true(new:deliver(reply));
			local sent = new:take();
			assert.equals(1, #sent);
			assert.is_true(rawequal(reply, sent[1]));
			assert.equals(P, reply.attr.from);
			assert.equals(U, reply.attr.to);
			assert.equals(1, #new:rtt_samples());
			-- Answered once: a second copy is not forwarded.
			assert.is_nil(new:deliver(make_reply("a", "q1")));
			assert.same({}, new:take());
		end);

		it("a reload whose new options are refused keeps the previous instance and options, and says why in one line", function ()
			local shim, server = fresh_shim({ client_proxy_timeout = 10 });
			online(shim, "a");
			request(shim, "q1");
			local new = server:reload(shim, { target_address = T, client_proxy_timeout = 0 });
			local line = new:find_log("error", "Keeping the previous options", "client_proxy_timeout");
			assert.is_table(line);
			assert.is_nil(line.message:find("traceback", 1, true));
			assert.same({}, new:take(), "nothing answered, nothing sent");
			-- a still answers q1 through the new instance.
			assert.is_true(new:deliver(make_reply("a", "q1")));
			assert.equals(U, new:take()[1].attr.to);
			-- The old timeout (10 s) is still in force.
			request(new, "q2");
			server:advance(10.1);
			local sent = new:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q2", "wait", "remote-server-timeout");
		end);

		it("a reload with a new target_address answers the old target's requests and subscribes to the new one", function ()
			local shim, server = fresh_shim();
			online(shim, "a");
			request(shim, "q1");
			server.accounts["svc2@example.org"] = true;
			local new = server:reload(shim, { target_address = "svc2@example.org" });
			local sent = new:take();
			assert.equals(3, #sent);
			assert_iq_error(sent[1], U, "q1", "cancel", "service-unavailable");
			assert_presence(sent[2], "svc2@example.org", "subscribe");
			assert_presence(sent[3], "svc2@example.org", "probe");
			assert.is_table(new:find_log("info", "target_address changed from "..T.." to svc2@example.org"));
			-- The old target's resources are nobody's now; the new one's serve.
			assert.is_true(new:deliver(make_presence({ from = "svc2@example.org/b" })));
			local iq = make_iq({ type = "get", from = U, to = P, id = "q2" });
			assert.is_true(new:deliver(iq));
			assert.equals("svc2@example.org/b", new:take()[1].attr.to);
			assert.equals(1, new:metric("requests", "unloaded"));
		end);

		it("c4: a reload keeps the resources online", function ()
			local shim, server = fresh_shim();
			online(shim, "a");
			local new = server:reload(shim, { target_address = T });
			local iq = request(new, "q1");
			assert.equals(T.."/a", iq.attr.to);
		end);

		it("c2: after a reload, a request in flight still times out at its own deadline", function ()
			local shim, server = fresh_shim({ client_proxy_timeout = 30 });
			online(shim, "a");
			request(shim, "q1");
			server:advance(20);
			local new = server:reload(shim, { target_address = T, client_proxy_timeout = 30 });
			server:advance(10.05);
			local sent = new:take();
			assert.equals(1, #sent, "the request must time out 30 s after it was sent, not 30 s after the reload");
			assert_iq_error(sent[1], U, "q1", "wait", "remote-server-timeout");
			assert.same({}, shim:take(), "the old instance's timer is gone with it");
		end);

		it("c2: after a reload with a shorter client_proxy_timeout, a new request times out by its own deadline", function ()
			local shim, server = fresh_shim({ client_proxy_timeout = 30 });
			online(shim, "a");
			request(shim, "q1");
			server:advance(1);
			local new = server:reload(shim, { target_address = T, client_proxy_timeout = 5 });
			-- Whatever timer there is now is due by q1's deadline, 29 s away.
			server:advance(6);
			assert.same({}, new:take());
			request(new, "q2");
			server:advance(5.05);
			local sent = new:take();
			assert.equals(1, #sent, "q2 must time out 5 s after it was sent");
			assert_iq_error(sent[1], U, "q2", "wait", "remote-server-timeout");
			server:advance(18);
			sent = new:take();
			assert.equals(1, #sent);
			assert_iq_error(sent[1], U, "q1", "wait", "remote-server-timeout");
		end);

		it("a reload before T's host activates still sends subscribe and probe when it does", function ()
			local server = fake.new_server();
			server.hosts["example.org"] = nil; -- in the config, not active
			local shim = fresh_shim(nil, server);
			local new = server:reload(shim, { target_address = T });
			assert.same({}, new:take());
			server.hosts["example.org"] = { type = "local" };
			server:fire_global("host-activated", "example.org");
			assert.same({}, shim:take(), "the old instance is gone");
			local sent = new:take();
			assert.equals(2, #sent);
			assert_presence(sent[1], T, "subscribe");
			assert_presence(sent[2], T, "probe");
		end);

		it("after a reload, T binding a resource still puts P in T's roster", function ()
			local server = fake.new_server();
			server.accounts[T] = nil;
			local shim = fresh_shim(nil, server);
			local new = server:reload(shim, { target_address = T });
			server.accounts[T] = true;
			new:fire_on("example.org", "resource-bind", { session = { username = "svc" } });
			assert.equals(1, #server.saved_rosters);
			assert.equals("from", server.rosters[T][P].subscription);
		end);
	end);

end);
