-- client_proxy_timeout as Prosody 13's module:get_option_period reads it
-- ("2 min"), and as 0.12, which has no such method, reads it (seconds only).
--
-- Run with `make test-busted`.

local fake = require "helpers.fake_module";
local st = require "util.stanza";

local P, T = fake.host, fake.target;
local U = "alice@example.net/phone";

-- Stands in for Prosody 13's parsing: numbers as seconds, "N min".
local function period(value)
	if type(value) == "number" then return value; end
	local n = tostring(value):match("^(%d+) min$");
	return n and tonumber(n) * 60 or nil;
end

-- Loads the shim with this timeout, puts T/a online and sends one request;
-- returns how far away its timeout timer is due.
local function timer_delay(timeout, how)
	local server = fake.new_server();
	local shim = server:load({ target_address = T, client_proxy_timeout = timeout }, how);
	shim:deliver(st.presence({ from = T.."/a", to = P }));
	local t0 = server.clock;
	assert.is_true(shim:deliver(st.iq({ type = "get", from = U, to = P, id = "q1" })
		:tag("ping", { xmlns = "urn:xmpp:ping" })));
	local armed = server:armed_timers();
	assert.equals(1, #armed);
	return armed[1].due - t0;
end

local function load_error(timeout, how)
	local server = fake.new_server();
	local ok, err = pcall(server.load, server, { target_address = T, client_proxy_timeout = timeout }, how);
	assert.is_false(ok, "the shim loaded");
	return err;
end

describe("client_proxy_timeout", function ()
	local prosody13 = { get_option_period = period };

	it("with module:get_option_period (Prosody 13), takes a period such as \"2 min\"", function ()
		assert.near(120, timer_delay("2 min", prosody13), 1e-6);
		assert.near(7, timer_delay(7, prosody13), 1e-6);
	end);

	it("with module:get_option_period, refuses what it cannot read, naming the option", function ()
		local err = load_error("soon", prosody13);
		assert.matches("client_proxy_timeout", err, 1, true);
		assert.matches('"soon"', err, 1, true);
	end);

	it("without it (Prosody 0.12), takes seconds, as a number or a numeric string", function ()
		assert.near(7, timer_delay(7), 1e-6);
		assert.near(2.5, timer_delay("2.5"), 1e-6);
		assert.near(30, timer_delay(nil), 1e-6);
	end);

	it("without it, refuses a period with an error that says it needs Prosody 13", function ()
		local err = load_error("2 min");
		assert.matches("client_proxy_timeout", err, 1, true);
		assert.matches("needs Prosody 13", err, 1, true);
	end);
end);
