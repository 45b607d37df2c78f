-- The Lua shim handing stanzas to sessions of this server, and containing
-- failures of the library (row L8 of docs/behaviour.md). Same fake
-- environment as mod_client_proxy_spec.lua.
--
-- Run with `make test-busted` (CLIENT_PROXY_PLUGIN names the built plugin).

local fake = require "helpers.fake_module"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local h = require "helpers.shim";
local P, T, U, ENC_U = h.P, h.T, h.U, h.ENC_U;
local make_iq = h.make_iq;
local make_presence = h.make_presence;
local make_message = h.make_message;
local fresh_shim = h.fresh_shim;
local online = h.online;
local request = h.request;
local make_reply = h.make_reply;
local addresses = h.addresses;
local assert_error_reply = h.assert_error_reply;
local assert_iq_error = h.assert_iq_error;

---------------------------------------------------------------------------

describe("mod_client_proxy", function ()
	describe("delivery to sessions of this server", function ()
		local LOCAL_U = "alice@example.org/phone";

		-- mod_iq alone on example.org's "iq/full"; T/a and U connected there,
		-- and T/a online for the shim.
		local function direct_shim(options)
			local shim, server = fresh_shim(options);
			server:load_mod_iq("example.org");
			local t_a = server:connect(T.."/a");
			local u = server:connect(LOCAL_U);
			online(shim, "a");
			return shim, server, t_a, u;
		end

		local function local_request(id)
			return make_iq({ type = "get", from = LOCAL_U, to = P, id = id });
		end

		it("b1, a8: while mod_iq is the host's only iq/full handler, the request and its reply go straight to the sessions", function ()
			local shim, _, t_a, u = direct_shim();
			local iq = local_request("q1");
			assert.is_true(shim:deliver(iq));
			assert.same({}, shim:take(), "nothing through the router");
			assert.equals(1, #t_a.received);
			assert.is_true(rawequal(iq, t_a.received[1]));
			assert.equals(P.."/"..LOCAL_U, iq.attr.from);
			assert.equals(T.."/a", iq.attr.to);

			local reply = make_reply("a", "q1", LOCAL_U);
			assert.is_true(shim:deliver(reply));
			assert.same({}, shim:take());
			assert.equals(1, #u.received);
			assert.is_true(rawequal(reply, u.received[1]));
			assert.equals(P, reply.attr.from);
			assert.equals(LOCAL_U, reply.attr.to);
		end);

		it("b2, c2: the proxy's own errors go straight to the requester's session", function ()
			local shim, server, _, u = direct_shim({ client_proxy_timeout = 10 });
			assert.is_true(shim:deliver(local_request("q1")));
			server:advance(11);
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			assert.is_true(shim:deliver(local_request("q2")));
			assert.same({}, shim:take());
			assert.equals(2, #u.received);
			assert_iq_error(u.received[1], LOCAL_U, "q1", "wait", "remote-server-timeout");
			assert_iq_error(u.received[2], LOCAL_U, "q2", "cancel", "service-unavailable");
		end);

		it("c3: a get sent again goes straight to the other resource's session", function ()
			local shim, server, t_a = direct_shim();
			assert.is_true(shim:deliver(local_request("q1")));
			local t_b = server:connect(T.."/b");
			online(shim, "b");
			assert.is_true(shim:deliver(make_presence({ type = "unavailable", from = T.."/a" })));
			assert.same({}, shim:take());
			assert.equals(1, #t_a.received);
			assert.equals(1, #t_b.received);
			assert.equals(T.."/b", t_b.received[1].attr.to);
			assert.equals("q1", t_b.received[1].attr.id);
		end);

		it("another iq/full handler on the host (mod_blocklist, mod_firewall, ...) sends through the router, until it is unhooked", function ()
			local shim, server, t_a = direct_shim();
			local unhook = server:hook("example.org", "iq/full", function () end, 100);
			local first = request(shim, "q1", { from = LOCAL_U });
			assert.equals(T.."/a", first.attr.to);
			assert.same({}, t_a.received);

			unhook();
			assert.is_true(shim:deliver(local_request("q2")));
			assert.same({}, shim:take());
			assert.equals(1, #t_a.received);
			assert.equals("q2", t_a.received[1].attr.id);
		end);

		it("a single iq/full handler that is not mod_iq's sends through the router", function ()
			local shim, server = fresh_shim();
			server:hook("example.org", "iq/full", function () return true; end, 0);
			local t_a = server:connect(T.."/a");
			online(shim, "a");
			request(shim, "q1", { from = LOCAL_U });
			assert.same({}, t_a.received);
		end);

		it("a session whose send fails is tried once, as mod_iq does, and not routed again", function ()
			-- A failing send may have queued the stanza for a resumption
			-- (mod_smacks): routing it again would deliver it twice.
			local shim, server = direct_shim();
			local failing = server:connect(T.."/a", false);
			local iq = local_request("q1");
			assert.is_true(shim:deliver(iq));
			assert.equals(1, #failing.received, "tried once directly");
			assert.is_true(rawequal(iq, failing.received[1]));
			assert.same({}, shim:take(), "not through the router");
		end);

		it("with no session for the address, the router takes over (and mod_iq answers)", function ()
			local shim, server, t_a = direct_shim();
			assert.is_true(shim:deliver(local_request("q1")));
			assert.equals(1, #t_a.received);

			server:disconnect(LOCAL_U);
			local reply = make_reply("a", "q1", LOCAL_U);
			assert.is_true(shim:deliver(reply));
			local sent = shim:take();
			assert.equals(1, #sent);
			assert.is_true(rawequal(reply, sent[1]));
			assert.equals(LOCAL_U, reply.attr.to);
		end);
	end);

	describe("failure containment", function ()
		-- The real library, with a proxy whose router raises.
		local function failing_library(message)
			local path = fake.plugin_dir.."/client_proxy.so";
			local real = assert(package.loadlib(path, "luaopen_client_proxy"))();
			return {
				version = real.version;
				options = real.options;
				metrics = real.metrics;
				new = function (options)
					local inner = real.new(options);
					return setmetatable({
						router = function ()
							return function () error(message, 0); end;
						end;
					}, {
						__index = function (_, name)
							return function (_, ...) return inner[name](inner, ...); end;
						end;
					});
				end;
			};
		end

		it("a failure in the core is logged with the stanza's addresses and a get/set gets cancel/internal-server-error", function ()
			local server = fake.new_server();
			local shim = server:load({ target_address = T }, { library = failing_library("core exploded") });
			shim:take();
			for _, ty in ipairs({ "get", "set" }) do
				local iq = make_iq({ type = ty, from = U, to = P.."/x", id = ty.."1" });
				local orig = addresses(iq);
				local ok, ret = pcall(shim.deliver, shim, iq);
				assert.is_true(ok, "the handler raised: "..tostring(ret));
				assert.is_true(ret);
				local sent = shim:take();
				assert.equals(1, #sent);
				assert_error_reply(sent[1], orig, "cancel", "internal-server-error");
				assert.is_table(shim:find_log("error", "core exploded", "id="..ty.."1", "from="..U, "to="..P.."/x"));
			end
		end);

		it("a failure in the core on a stanza that is not a get/set is logged and answered with nothing", function ()
			local server = fake.new_server();
			local shim = server:load({ target_address = T }, { library = failing_library("core exploded") });
			shim:take();
			local stanzas = {
				make_iq({ type = "result", from = T.."/a", to = ENC_U, id = "r1" }),
				make_message({ from = U }),
				make_presence({ from = T.."/a" }),
			};
			for _, s in ipairs(stanzas) do
				local ok, ret = pcall(shim.deliver, shim, s);
				assert.is_true(ok, "the handler raised: "..tostring(ret));
				assert.is_true(ret);
				assert.is_table(shim:find_log("error", "core exploded", "from="..s.attr.from));
			end
			assert.same({}, shim:take());
		end);
	end);
end);
