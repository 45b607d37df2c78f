-- What an operator sees and steers through the shim: the metrics brought up
-- to date at each collection, and the admin console's commands.

local h = require "helpers.shim"; -- sets package.path for Prosody's util.*
local fake = require "helpers.fake_module";
local P, T, U = h.P, h.T, h.U;
local make_iq, make_presence, make_reply = h.make_iq, h.make_presence, h.make_reply;
local fresh_shim, online, request = h.fresh_shim, h.online, h.request;

-- Runs an admin console command as mod_admin_shell would: `self` carries
-- the session, whose print collects lines.
local function console(server, command, ...)
	local printed = {};
	local section = server.shared["/*/admin_shell/env"].client_proxy;
	local self = setmetatable({ session = { print = function (line) table.insert(printed, line); end } },
		{ __index = section });
	local ok, message = section[command](self, ...);
	return ok, message, printed;
end

describe("metrics", function ()
	it("count each outcome once, at collection, and keep the gauges right", function ()
		local shim, server = fresh_shim({ client_proxy_timeout = 5 });
		online(shim, "a");
		request(shim, "q1");
		request(shim, "q2");
		assert.is_true(shim:deliver(make_iq({ type = "get", from = U, to = P, id = "q2" }))); -- conflict
		shim:take();
		assert.equals(2, shim:metric("in_flight"));
		assert.equals(1, shim:metric("resources", "eligible"));
		assert.is_true(shim:deliver(make_reply("a", "q1")));
		server:advance(5.1);
		shim:take();
		assert.equals(1, shim:metric("requests", "replied"));
		assert.equals(1, shim:metric("requests", "timeout"));
		assert.equals(1, shim:metric("requests", "conflict"));
		assert.equals(0, shim:metric("in_flight"));
		-- A second collection adds nothing.
		assert.equals(1, shim:metric("requests", "replied"));
		shim:deliver(make_presence({ from = T.."/a" }, "dnd"));
		assert.same({ 1, 0, 1 }, { shim:metric("resources", "draining"), shim:metric("resources", "eligible"),
			shim:metric("resources", "online") });
	end);

	it("continue across a reload without counting anything twice", function ()
		local shim, server = fresh_shim();
		online(shim, "a");
		request(shim, "q1");
		assert.is_true(shim:deliver(make_reply("a", "q1")));
		shim:take();
		assert.equals(1, shim:metric("requests", "replied"));
		local new = server:reload(shim, { target_address = T });
		-- The families outlive the reload: the new instance's first
		-- collection must add nothing already counted.
		assert.equals(1, new:metric("requests", "replied"));
		request(new, "q2");
		assert.equals(1, new:metric("in_flight"));
	end);
end);

describe("admin console", function ()
	it("client_proxy:status prints the options, a line per resource, and the totals", function ()
		local shim, server = fresh_shim({ client_proxy_balance = "least_in_flight" });
		online(shim, "a");
		request(shim, "q1");
		local ok, message, printed = console(server, "status", P);
		assert.is_true(ok);
		assert.matches("^"..P:gsub("%p", "%%%0").." %-> "..T:gsub("%p", "%%%0")..": balance least_in_flight", printed[1]);
		assert.equals("  a  show -  priority 0  eligible  in_flight 1  served 0  failed 0", printed[2]);
		assert.matches("^1 online, 1 eligible", message);
	end);

	it("client_proxy:drain and :undrain steer a resource by name", function ()
		local shim, server = fresh_shim();
		online(shim, "a");
		online(shim, "b");
		assert.is_true((console(server, "drain", P, "a")));
		for i = 1, 10 do
			assert.equals(T.."/b", request(shim, "q"..i).attr.to);
		end
		assert.is_table(shim:find_log("info", T.."/a is draining (operator)"));
		assert.is_true((console(server, "undrain", P, "a")));
		local to_a = 0;
		for i = 1, 30 do
			if request(shim, "r"..i).attr.to == T.."/a" then to_a = to_a + 1; end
		end
		assert.is_true(to_a > 3, to_a);
	end);

	it("bad arguments get one line, never a traceback", function ()
		local _, server = fresh_shim();
		for _, args in ipairs({ { "status", "nowhere.example" }, { "status", "example.org" },
				{ "drain", P, "nobody" }, { "drain", P }, { "status" } }) do
			local ok, message = console(server, table.unpack(args));
			assert.is_false(ok, table.concat(args, " "));
			assert.is_string(message);
			assert.is_nil(message:find("\n", 1, true), message);
			assert.is_nil(message:find("traceback", 1, true), message);
		end
		local _, message = console(server, "drain", P, "nobody");
		assert.equals("bad argument: "..T.."/nobody is not online", message);
	end);
end);

describe("load", function ()
	it("a refused option is one line naming it, with no traceback", function ()
		local server = fake.new_server();
		local ok, err = pcall(server.load, server, { target_address = T, client_proxy_sticky = "{urn:x}q" });
		assert.is_false(ok);
		assert.matches("^option 'client_proxy_sticky'", err);
		assert.is_nil(err:find("traceback", 1, true));
	end);
end);
