-- A fake Prosody for mod_client_proxy: just enough of the module API, the
-- `prosody` global and the core.* modules to load the shim, with Prosody's
-- real util.* modules and the real built library.
--
-- A "server" is the world that module instances share: the clock, the
-- hosts, the config, accounts and rosters, the timers, and package.loaded
-- (so a reloaded instance finds the library already loaded, as in Prosody).
-- server:load(options) loads one instance of the shim from
-- $CLIENT_PROXY_PLUGIN/mod_client_proxy.lua, which loads client_proxy.so
-- from next to it.

-- Prosody's source tree (its launchers' CFG_SOURCEDIR): the system's, or
-- another one named by $CLIENT_PROXY_PROSODY_SOURCE (`make test-busted`
-- runs the specs with 0.12's and with 13's).
local prosody_source = os.getenv("CLIENT_PROXY_PROSODY_SOURCE") or "/usr/lib/prosody";
package.path = prosody_source .. "/?.lua;" .. package.path;
package.cpath = prosody_source .. "/?.so;" .. package.cpath;
-- Prosody 13's modules require each other as "prosody.util.*"; its loader
-- maps those names to the files (0.12 has no loader and needs none).
local prosody_loader = io.open(prosody_source .. "/loader.lua");
if prosody_loader then
	prosody_loader:close();
	require "loader";
end

local st = require "util.stanza";
local jid = require "util.jid";
local events = require "util.events";
local multitable = require "util.multitable";

local plugin_dir = assert(os.getenv("CLIENT_PROXY_PLUGIN"),
	"CLIENT_PROXY_PLUGIN must name the folder that holds mod_client_proxy.lua and client_proxy.so (run `make test-busted`)");

local M = {
	plugin_dir = plugin_dir;
	host = "proxy.example";
	target = "svc@example.org";
};

local function read_file(path)
	local f = assert(io.open(path, "rb"));
	local text = f:read("a");
	f:close();
	return text;
end

local function format(fmt, ...)
	local args = table.pack(...);
	for i = 1, args.n do
		if type(args[i]) ~= "number" then args[i] = tostring(args[i]); end
	end
	local ok, text = pcall(string.format, fmt, table.unpack(args, 1, args.n));
	return ok and text or fmt;
end

---------------------------------------------------------------------------
-- Metrics: families with labelled children that count and sample.

local function new_metric(kind, name, label_keys)
	local family = { kind = kind, name = name, label_keys = label_keys, children = {} };
	function family:with_labels(...)
		local key = table.concat({ ... }, "\0");
		local child = self.children[key];
		if not child then
			child = { count = 0, samples = {} };
			function child:add(n) self.count = self.count + n; end
			function child:set(v) self.value = v; end
			function child:sample(v) table.insert(self.samples, v); end
			self.children[key] = child;
		end
		return child;
	end
	return family;
end

---------------------------------------------------------------------------
-- The server.

local server_mt = {};
server_mt.__index = server_mt;

function M.new_server()
	local server = setmetatable({
		clock = 1000.0; -- util.time.monotonic()
		hosts = {
			[M.host] = { type = "component", events = events.new(), modules = {} };
			["example.org"] = { type = "local", events = events.new(), modules = {} };
		};
		full_sessions = {}; -- prosody.full_sessions
		config = { [M.host] = {}; ["example.org"] = {} };
		accounts = { [M.target] = true };
		rosters = {};
		save_roster_result = true;
		saved_rosters = {}; -- { user, host, roster, jid } per save_roster call
		pushes = {}; -- { user, host, jid } per roster_push call
		journal = {}; -- "save_roster", "roster_push", "send <name> <type>", in order
		timers = {};
		loaded = {}; -- package.loaded as the shim sees it
		instances = {};
		shared = {}; -- module:shared tables, by path
		families = {}; -- metric families, by name
	}, server_mt);
	return server;
end

function server_mt:roster_of(bare)
	local roster = self.rosters[bare];
	if not roster then
		roster = { [false] = { version = 1, pending = {} } };
		self.rosters[bare] = roster;
	end
	return roster;
end

local function fakes(server)
	local configmanager = {
		getconfig = function () return server.config; end;
		get = function (host, key)
			return (server.config[host] or {})[key];
		end;
	};
	local rostermanager = {
		load_roster = function (user, host)
			return server:roster_of(user.."@"..host);
		end;
		save_roster = function (user, host, roster, changed)
			table.insert(server.saved_rosters, { user = user, host = host, roster = roster, jid = changed });
			table.insert(server.journal, "save_roster");
			if server.save_roster_result then
				server.rosters[user.."@"..host] = roster;
			end
			return server.save_roster_result;
		end;
		roster_push = function (user, host, changed)
			table.insert(server.pushes, { user = user, host = host, jid = changed });
			table.insert(server.journal, "roster_push");
		end;
	};
	local usermanager = {
		user_exists = function (user, host)
			return server.accounts[user.."@"..host] == true;
		end;
	};
	local time = {
		monotonic = function () return server.clock; end;
		now = function () return server.clock; end;
	};
	-- No statistics provider: nothing to clean up in a registry.
	local statsmanager = {
		get_metric_registry = function () return nil; end;
	};
	local modulemanager = {
		get_module = function (host, name)
			for i = #server.instances, 1, -1 do
				local inst = server.instances[i];
				if inst.loaded and inst.module.host == host and name == "client_proxy" then
					return inst.env;
				end
			end
		end;
	};
	return {
		["core.configmanager"] = configmanager;
		["core.statsmanager"] = statsmanager;
		["core.modulemanager"] = modulemanager;
		["core.rostermanager"] = rostermanager;
		["core.usermanager"] = usermanager;
		["util.time"] = time;
	};
end

---------------------------------------------------------------------------
-- Sessions and other modules on the hosts, for the shim's delivery of IQs.

-- The sessions of an account on a host of this server, as sessionmanager
-- keeps them (host.sessions[user].sessions[resource]); nil elsewhere.
function server_mt:account_sessions(full_jid)
	local user, host = jid.split(full_jid);
	local h = self.hosts[host];
	if not (h and user) then return nil; end
	h.sessions = h.sessions or {};
	h.sessions[user] = h.sessions[user] or { sessions = {} };
	return h.sessions[user].sessions;
end

-- A client session bound to `full_jid`, in prosody.full_sessions and its
-- host's sessions. Its send records the stanza and returns `send_result`
-- (default true), as mod_c2s's does.
function server_mt:connect(full_jid, send_result)
	local _, host, resource = jid.split(full_jid);
	local session = { host = host, full_jid = full_jid, received = {} };
	if send_result == nil then send_result = true; end
	function session.send(stanza)
		table.insert(session.received, stanza);
		return send_result;
	end
	self.full_sessions[full_jid] = session;
	local account = self:account_sessions(full_jid);
	if account then account[resource] = session; end
	return session;
end

function server_mt:disconnect(full_jid)
	self.full_sessions[full_jid] = nil;
	local account = self:account_sessions(full_jid);
	if account then account[select(3, jid.split(full_jid))] = nil; end
end

-- Loads a stand-in for mod_iq on `host`: its "iq/full" handler, hooked as
-- moduleapi does (recorded in module.event_handlers). Returns the module.
function server_mt:load_mod_iq(host)
	local h = self.hosts[host];
	local mod = { event_handlers = multitable.new() };
	local function on_iq_full() return true; end
	mod.event_handlers:add(h.events, "iq/full", on_iq_full, true);
	h.events.add_handler("iq/full", on_iq_full, 0);
	h.modules.iq = { module = mod };
	return mod;
end

-- Hooks a handler of another module on one of the hosts; returns a function
-- that unhooks it.
function server_mt:hook(host, event, handler, priority)
	local h = self.hosts[host];
	h.events.add_handler(event, handler, priority);
	return function () h.events.remove_handler(event, handler); end;
end

---------------------------------------------------------------------------
-- Timers, on the fake clock.

-- Moves the clock by `seconds`, firing each timer of a loaded instance that
-- falls due on the way, at its due time, in order. A callback that returns
-- a number is due again that many seconds later, as in Prosody.
function server_mt:advance(seconds)
	local until_ = self.clock + seconds;
	while true do
		local next_timer;
		for _, t in ipairs(self.timers) do
			if t.active and t.owner.loaded and t.due <= until_
			and (not next_timer or t.due < next_timer.due) then
				next_timer = t;
			end
		end
		if not next_timer then break; end
		self.clock = math.max(self.clock, next_timer.due);
		next_timer.fired = next_timer.fired + 1;
		local again = next_timer.callback(self.clock);
		if type(again) == "number" then
			next_timer.due = self.clock + again;
		else
			next_timer.active = false;
		end
	end
	self.clock = until_;
end

-- The timers still armed by loaded instances.
function server_mt:armed_timers()
	local list = {};
	for _, t in ipairs(self.timers) do
		if t.active and t.owner.loaded then table.insert(list, t); end
	end
	return list;
end

---------------------------------------------------------------------------
-- Module instances.

local instance_mt = {};
instance_mt.__index = instance_mt;

-- Loads one instance of the shim on M.host. `options` are the Component
-- block's options; `how` may hold host_type (default "component"),
-- reloading (true for the instance that replaces another on a reload),
-- library (put in package.loaded.client_proxy before the shim runs) and
-- get_option_period (see below).
-- Returns the instance, or raises the error the shim raised while loading.
function server_mt:load(options, how)
	options = options or {};
	how = how or {};
	local server = self;
	local inst = setmetatable({
		server = server;
		loaded = true;
		sent = {};
		logs = {};
		hooks = {}; -- event -> { handler, priority }
		context_hooks = {}; -- host -> event -> list of { handler, priority }
		global_hooks = {}; -- event -> list of { handler, priority }
		metrics = {};
		timers = {};
	}, instance_mt);

	local module = {
		name = "client_proxy";
		host = M.host;
		path = plugin_dir.."/mod_client_proxy.lua";
		reloading = how.reloading or nil;
		saved_state = how.saved_state; -- what module.save returned, on a reload
	};
	inst.module = module;

	function module:get_host_type()
		return how.host_type or "component";
	end
	local function option(name, default)
		local value = options[name];
		if value == nil then return default; end
		return value;
	end
	function module:get_option(name, default)
		return option(name, default);
	end
	-- Prosody 13's, when `how.get_option_period` stands in for its parsing
	-- of periods ("2 min"): that function gets the raw value and returns
	-- seconds or nil (0.12 has no such method).
	if how.get_option_period then
		function module:get_option_period(name, default)
			return how.get_option_period(option(name, default));
		end
	end
	function module:get_option_string(name, default)
		local value = option(name, default);
		return value ~= nil and tostring(value) or nil;
	end
	function module:get_option_number(name, default)
		return tonumber(option(name, default));
	end
	function module:get_option_array(name, default)
		local value = option(name, default);
		if value == nil then return nil; end
		if type(value) ~= "table" then return { value }; end
		return { table.unpack(value) };
	end
	function module:get_option_boolean(name, default)
		local value = option(name, default);
		if value == nil then return nil; end
		return value == true or value == "true";
	end
	function module:hook(event, handler, priority)
		assert(not inst.hooks[event], "hooked twice: "..event);
		inst.hooks[event] = { handler = handler, priority = priority };
		server.hosts[M.host].events.add_handler(event, handler, priority);
	end
	function module:shared(name)
		local t = server.shared[name] or {};
		server.shared[name] = t;
		return t;
	end
	function module:hook_global(event, handler, priority)
		inst.global_hooks[event] = inst.global_hooks[event] or {};
		table.insert(inst.global_hooks[event], { handler = handler, priority = priority });
	end
	function module:context(host)
		local context = { host = host };
		function context:hook(event, handler, priority)
			local by_event = inst.context_hooks[host] or {};
			inst.context_hooks[host] = by_event;
			by_event[event] = by_event[event] or {};
			table.insert(by_event[event], { handler = handler, priority = priority });
		end
		return context;
	end
	function module:send(stanza)
		assert(st.is_stanza(stanza), "module:send of a non-stanza");
		table.insert(inst.sent, stanza);
		table.insert(server.journal, "send "..stanza.name.." "..tostring(stanza.attr.type));
		return true;
	end
	function module:log(level, fmt, ...)
		table.insert(inst.logs, { level = level, message = format(fmt, ...) });
	end
	function module:add_timer(delay, callback)
		assert(type(delay) == "number" and delay >= 0, "bad timer delay: "..tostring(delay));
		local t = {
			owner = inst, delay = delay, due = server.clock + delay,
			callback = callback, active = true, fired = 0,
		};
		function t:stop() self.active = false; end
		t.disarm = t.stop;
		function t:reschedule(d) self.delay, self.due, self.active = d, server.clock + d, true; end
		table.insert(server.timers, t);
		table.insert(inst.timers, t);
		return t;
	end
	-- As in Prosody's registry, a family outlives the instance that made it.
	function module:metric(kind, name, unit, description, label_keys, conf) -- luacheck: ignore 212
		local family = server.families[name] or new_metric(kind, name, label_keys);
		server.families[name] = family;
		inst.metrics[name] = family;
		return family;
	end

	local required = fakes(server);
	local function fake_require(name)
		local fake = required[name];
		if fake then return fake; end
		assert(not name:match("^core%."), "the shim requires an unexpected core module: "..name);
		return require(name);
	end
	local loaded = server.loaded;
	if how.library then
		loaded.client_proxy = how.library;
	end
	local env = setmetatable({
		module = module;
		prosody = { hosts = server.hosts, full_sessions = server.full_sessions };
		require = fake_require;
		package = setmetatable({ loaded = loaded }, { __index = package });
	}, { __index = _G });
	inst.env = env;

	local chunk = assert(load(read_file(module.path), "@"..module.path, "t", env));
	local ok, err = pcall(chunk);
	if not ok then
		inst.loaded = false;
		server.failed = inst; -- what it sent before failing stays readable
		error(err, 0);
	end
	table.insert(server.instances, inst);
	return inst;
end

-- What Prosody's modulemanager does on a reload: save the old instance,
-- unload it with reloading set, load a new one with reloading set, then
-- restore into it what was saved.
function server_mt:reload(old, options, how)
	local saved = old.module.save and old.module.save();
	old.module.reloading = true;
	old:unload();
	how = how or {};
	how.reloading = true;
	how.saved_state = saved;
	local new = self:load(options, how);
	new.module.reloading = nil;
	if new.module.restore then
		new.module.restore(saved or {});
	end
	return new;
end

-- Fires a global event (prosody.events) at every loaded instance.
function server_mt:fire_global(event, ...)
	for _, inst in ipairs(self.instances) do
		if inst.loaded then
			for _, h in ipairs(inst.global_hooks[event] or {}) do
				h.handler(...);
			end
		end
	end
end

-- Unloads the instance as Prosody does: module.unload, then its hooks and
-- timers are gone.
function instance_mt:unload()
	if self.module.unload then
		self.module.unload();
	end
	for event, hook in pairs(self.hooks) do
		self.server.hosts[M.host].events.remove_handler(event, hook.handler);
	end
	self.loaded = false;
end

-- The event Prosody fires for a stanza to `to` (stanza_router's to_type).
function M.event_name(stanza)
	local node, _, resource = jid.split(stanza.attr.to);
	local to_type;
	if node then
		to_type = resource and "full" or "bare";
	else
		to_type = "host";
	end
	return stanza.name.."/"..to_type;
end

-- Hands a stanza to the instance's handler as Prosody would; returns what
-- the handler returned.
function instance_mt:deliver(stanza, origin)
	assert(self.loaded, "delivering to an unloaded instance");
	local event = M.event_name(stanza);
	local hook = assert(self.hooks[event], "nothing hooked on "..event);
	return hook.handler({ stanza = stanza, origin = origin or {} });
end

-- Fires an event on the hooks the instance set on another host.
function instance_mt:fire_on(host, event, data)
	local by_event = self.context_hooks[host] or {};
	for _, h in ipairs(by_event[event] or {}) do
		h.handler(data);
	end
end

-- The stanzas sent since the last take(), and forgets them.
function instance_mt:take()
	local sent = self.sent;
	self.sent = {};
	return sent;
end

-- The first log line at `level` whose message contains every one of the
-- given plain strings.
function instance_mt:find_log(level, ...)
	local needles = { ... };
	for _, line in ipairs(self.logs) do
		if line.level == level then
			local all = true;
			for _, needle in ipairs(needles) do
				if not line.message:find(needle, 1, true) then all = false; break; end
			end
			if all then return line; end
		end
	end
	return nil;
end

-- How many stanzas the "dropped" counter counted with this reason.
-- Fires the instance's stats-update handlers, as a collection does.
function instance_mt:collect()
	for _, h in ipairs(self.global_hooks["stats-update"] or {}) do
		h.handler();
	end
end

-- The count of a counter's child, or the value of a gauge's, after a
-- collection.
function instance_mt:metric(name, ...)
	self:collect();
	local family = assert(self.metrics[name], "no metric "..name);
	local child = family.children[table.concat({ ... }, "\0")];
	return child and (child.value or child.count) or 0;
end

function instance_mt:dropped(reason)
	self:collect();
	local family = assert(self.metrics.dropped, "no dropped metric");
	local child = family.children[reason];
	return child and child.count or 0;
end

-- The samples of the rtt histogram.
function instance_mt:rtt_samples()
	local family = assert(self.metrics.rtt, "no rtt metric");
	local child = family.children[""];
	return child and child.samples or {};
end

return M;
