-- mod_client_proxy: IQ requests sent to this component are served by the
-- online resources of one account (target_address), and the replies come
-- back through the component to whoever asked.
--
-- The state (resources online, requests in flight, address translation)
-- lives in a Rust library next to this file. This shim hands it the
-- attributes of each stanza and applies the verdict to the stanza it holds.

local st = require "util.stanza";
local jid_split = require "util.jid".split;
local filters = require "util.filters";
local monotonic = require "util.time".monotonic;
local configmanager = require "core.configmanager";
local rostermanager = require "core.rostermanager";
local usermanager = require "core.usermanager";

if module:get_host_type() ~= "component" then
	error(("client_proxy must be loaded on a Component (Component \"proxy.example.org\" \"client_proxy\"), "
		.."and %q is not one"):format(module.host), 0);
end

local function load_library()
	if package.loaded.client_proxy then
		return package.loaded.client_proxy;
	end
	local dir = (module.path or ""):match("^(.*)[/\\]") or ".";
	local path = dir.."/client_proxy.so";
	local open, err = package.loadlib(path, "luaopen_client_proxy");
	if not open then
		error("cannot load the client_proxy library "..path..": "..tostring(err), 0);
	end
	package.loaded.client_proxy = open();
	return package.loaded.client_proxy;
end

local lib = load_library();

-- Seconds, or on Prosody 13 also a period such as "2 min".
local function get_option_period(name)
	local value = module:get_option(name);
	local seconds;
	if module.get_option_period then
		seconds = module:get_option_period(name);
	else
		seconds = tonumber(value);
	end
	if value ~= nil and seconds == nil then
		error(("option '%s' must be a number of seconds%s (got %q)"):format(name, module.get_option_period
			and ' or a period such as "2 min"' or ' (a period such as "2 min" needs Prosody 13)', tostring(value)), 0);
	end
	return seconds;
end

local getters = {
	seconds = get_option_period;
	number = function (name) return module:get_option_number(name); end;
	boolean = function (name) return module:get_option_boolean(name); end;
	string = function (name) return module:get_option_string(name); end;
	list = function (name) return module:get_option_array(name); end;
};

-- The options the config sets, read as the library declares them; the
-- library fills in the defaults and checks every value.
local function read_options(declarations)
	local options = { host = module.host, written = {} };
	for _, o in ipairs(declarations) do
		local name = o.name;
		if module:get_option(name) == nil and o.alias and module:get_option(o.alias) ~= nil then
			name = o.alias; -- an old name, still read; errors name it
			options.written[o.key] = name;
		end
		options[o.key] = getters[o.kind](name);
	end
	return options;
end

local proxy, route; -- this instance's handle, and its router

-- Sends what the core queued; defined below.
local flush;

-- On a reload, the previous instance's handle (with everything online and
-- in flight, and what the metrics have counted of it).
local saved = module.saved_state or {};

-- The families as the library declares them. Prosody keeps them across a
-- reload, and so does the handle with its counts: each collection adds
-- what is new since the last one.
local families = {};
for _, f in ipairs(lib.metrics) do
	families[f.name] = module:metric(f.kind, f.name, f.unit, f.help, { f.label },
		f.buckets and { buckets = f.buckets } or nil);
end
local measure_rtt = families.rtt:with_labels();
local internal_errors = families.requests:with_labels("internal_error");

local function update_metrics(handle)
	for _, s in ipairs((handle or proxy):collect()) do
		local family = families[s[1]];
		local metric = s[2] and family:with_labels(s[2]) or family:with_labels();
		if s[3] == "add" then
			metric:add(s[4]);
		else
			metric:set(s[4]);
		end
	end
end

-- The instance to serve with (`proxy` holds the new one, if the options
-- were taken): the previous one with the new options, the new one, or on a
-- reload whose options are refused, the previous one as it was. Returns
-- whether to subscribe and probe.
local function take_over(options, refused)
	local previous = saved.proxy;
	if not previous then
		if refused then
			error(refused, 0);
		end
		return true;
	end
	local old_target = previous:options().target_address;
	if not refused then
		local ok, err = previous:reconfigure(options);
		if ok then
			proxy = previous;
			return not saved.started;
		elseif proxy:options().target_address == old_target then
			refused = err;
		end
	end
	if refused then
		module:log("error", "Keeping the previous options: %s", refused);
		proxy = previous;
		return not saved.started;
	end
	-- A new target: the old one's requests are answered as on unload (C4).
	local fresh = proxy;
	proxy = previous;
	proxy:close();
	flush();
	update_metrics(previous);
	proxy = fresh;
	module:log("info", "target_address changed from %s to %s: requests in flight answered, "
		.."subscribing to the new target", old_target, fresh:options().target_address);
	return true;
end

-- Stanzas to the component reach this module before Prosody's own IQ
-- handling (mod_iq, at 0), so no inherited handler answers in the
-- implementing client's place.
local hook_priority = 10;


local hosts = prosody.hosts;
local full_sessions = prosody.full_sessions;

-- Whether the handlers of `event` on the host are `module_name`'s alone
-- (or, if `none_too`, none at all). Cached per handler array: util.events
-- makes a new one whenever a handler is added or removed.
local handled_only_by_cache = setmetatable({}, { __mode = "k" });
local function handled_only_by(host_session, event, module_name, none_too)
	local handlers = host_session.events.get_handlers(event);
	if not handlers then
		return none_too;
	end
	local only = handled_only_by_cache[handlers];
	if only == nil then
		local mod = host_session.modules[module_name];
		local own = mod and mod.module.event_handlers:get(host_session.events, event);
		only = own ~= nil;
		for i = 1, #handlers do
			if not (own and own[handlers[i]]) then
				only = false;
				break;
			end
		end
		handled_only_by_cache[handlers] = only;
	end
	return only;
end

-- The session of this server that `to` names, if IQs may be handed to it
-- as mod_iq would, without a second pass through the router (which cost
-- about a tenth of Prosody's CPU per proxied round trip). Only while mod_iq's
-- is the host's only "iq/full" handler: modules that filter IQs there
-- (mod_blocklist, mod_firewall, ...) see every stanza.
local function direct_session(to)
	local session = full_sessions[to];
	if session then
		local host_session = hosts[session.host];
		if host_session and handled_only_by(host_session, "iq/full", "iq", false) then
			return session;
		end
	end
	return nil;
end

-- Sends a stanza the module made or rewrote: an IQ straight to a local
-- session where it may, anything else through the router. As mod_iq, a
-- session's send is tried once: one that fails may have queued the stanza
-- for a resumption (mod_smacks), and routing it again would queue it twice.
local function send(stanza)
	local session = stanza.name == "iq" and direct_session(stanza.attr.to);
	if session then
		session.send(stanza);
	else
		module:send(stanza);
	end
end

local function error_iq(to, id, error_type, condition, from)
	return st.iq({ type = "error", from = from or module.host, to = to, id = id })
		:tag("error", { type = error_type })
			:tag(condition, { xmlns = "urn:ietf:params:xml:ns:xmpp-stanzas" }):up()
		:up();
end

-- Sends what the core queued (presence, errors for settled requests,
-- requests sent again) and logs what it reported.
function flush()
	for action in proxy.poll, proxy do
		local kind = action.kind;
		if kind == "presence" then
			module:send(st.presence({ from = module.host, to = action.to, type = action.type }));
		elseif kind == "error" then
			send(error_iq(action.to, action.id, action.type, action.condition, action.from));
		elseif kind == "resend" then
			local stanza = st.clone(action.stanza);
			stanza.attr.from, stanza.attr.to = action.from, action.to;
			send(stanza);
		elseif kind == "log" then
			module:log(action.level, "%s", action.message);
		end
	end
end

local options, fresh_start;
do
	local ok, read = pcall(read_options, lib.options);
	local fresh, refused;
	if ok then
		fresh, refused = lib.new(read);
	else
		refused = read;
	end
	proxy = fresh;
	fresh_start = take_over(read, refused);
	-- The options in force, defaults filled in.
	options = proxy:options();
end
route = proxy:router();
local target_address = options.target_address;
local target_user, target_host = jid_split(target_address);
-- A stanza:find path whose value keeps requests on one resource (D4);
-- "requester" the library reads from the address itself.
local sticky_path = options.sticky ~= "requester" and options.sticky or nil;

module:hook_global("stats-update", function () update_metrics(); end);

-- Removes this host's samples: the families themselves stay registered.
local function forget_metrics()
	local registry = require "core.statsmanager".get_metric_registry();
	if not registry then
		return;
	end
	for name, family in pairs(registry:get_metric_families()) do
		if name:match("^prosody_mod_client_proxy/") and family.data and family.data.remove then
			family.data:remove(module.host);
		end
	end
end

-- One timer, due at the earliest deadline in flight (or earlier). After a
-- reload, or with a new client_proxy_timeout, that deadline is not always
-- one timeout away.
local timer, timer_due;

local function on_timer()
	local now = monotonic();
	proxy:expire(now);
	flush();
	local deadline = proxy:next_deadline();
	if not deadline then
		timer, timer_due = nil, nil;
		return nil;
	end
	local delay = math.max(deadline - now, 0.001);
	timer_due = now + delay;
	return delay;
end

-- Called with the time a request was accepted: its deadline is one timeout
-- later, so a timer due before that needs no change.
local function arm_timer(now)
	if timer and timer_due <= now + options.timeout then
		return;
	end
	local deadline = proxy:next_deadline();
	if not deadline or (timer and timer_due <= deadline) then
		return;
	end
	if timer then
		timer:stop();
	end
	now = monotonic();
	local delay = math.max(deadline - now, 0.001);
	timer_due = now + delay;
	timer = module:add_timer(delay, on_timer);
end

local function describe(stanza)
	local attr = stanza.attr;
	return ("%s type=%s id=%s from=%s to=%s"):format(stanza.name, tostring(attr.type),
		tostring(attr.id), tostring(attr.from), tostring(attr.to));
end

-- Hands the stanza's attributes to the library, and returns its verdict and
-- the time. A failure there is logged, and a get or set answered. The
-- values after the verdict are named for both of their uses: from, to and
-- the round trip for "forward"; the error's type and condition for
-- "error"; the reason (in the first) for "drop" and "pass" (`route` in
-- src/glue.rs defines them).
local function route_stanza(stanza)
	local attr, name = stanza.attr, stanza.name;
	local show, priority, condition, key;
	if name == "presence" then
		show = stanza:get_child_text("show");
		priority = tonumber(stanza:get_child_text("priority"));
	elseif name == "iq" then
		local stanza_type = attr.type;
		if stanza_type == "error" then
			condition = select(2, stanza:get_error());
		elseif sticky_path and (stanza_type == "get" or stanza_type == "set") then
			key = stanza:find(sticky_path);
			if type(key) ~= "string" then key = nil; end
		end
	end
	local now = monotonic();
	local ok, verdict, from_or_type, to_or_condition, rtt, queued, id = pcall(route,
		name, attr.type, attr.from, attr.to, attr.id, show, priority, now, stanza, condition, key);
	if not ok then
		module:log("error", "Failed to route %s: %s", describe(stanza), tostring(verdict));
		if name == "iq" and (attr.type == "get" or attr.type == "set") then
			internal_errors:add(1);
			module:send(st.error_reply(stanza, "cancel", "internal-server-error"));
		end
		return "failed";
	end
	return verdict, from_or_type, to_or_condition, rtt, now, queued, id;
end

-- For the reply filter (below): the replies it handed back to the router,
-- and its installer.
local passed = setmetatable({}, { __mode = "k" });
local watch;

-- Kept apart from route_stanza, with few locals, so that session.send runs
-- on as little Lua stack as possible: Prosody's garbage collector shrinks
-- each session's stack at every cycle, and one more call level here cost
-- about 16,000 instructions per round trip (BENCHMARKS.md).
local function handle_stanza(event)
	local stanza = event.stanza;
	if passed[stanza] then
		passed[stanza] = nil;
		return nil;
	end
	local verdict, from_or_type, to_or_condition, rtt, now, queued, id = route_stanza(stanza);
	if queued then
		flush();
	end
	if verdict == "forward" then
		stanza.attr.from, stanza.attr.to = from_or_type, to_or_condition;
		if id then
			stanza.attr.id = id;
		end
		-- Messages take the router's way, past carbons, archives and offline
		-- storage; an IQ to a local session is handed over once (see send).
		local session = stanza.name == "iq" and direct_session(to_or_condition);
		if session then
			session.send(stanza);
		else
			module:send(stanza);
		end
		if rtt then
			measure_rtt:sample(rtt);
			watch(event.origin);
		else
			arm_timer(now);
		end
	elseif verdict == "error" then
		send(st.error_reply(stanza, from_or_type, to_or_condition));
	elseif verdict == "done" then
		flush();
	elseif verdict ~= "failed" then -- "drop", or "pass": not ours, Prosody may have it
		module:log("debug", "Dropped (%s) %s", from_or_type, describe(stanza));
		if verdict == "pass" then
			return nil;
		end
	end
	return true;
end

-- Replies from the implementing client, taken as its session reads them.
--
-- A reply is addressed to P/enc(U), which is neither a session nor a host,
-- so Prosody's router would stringprep it, log it, queue it on the
-- session's thread, fire the pre-events on the target's host and one event
-- on the component's: 100,000 instructions, a seventh of Prosody's work
-- for a proxied round trip (BENCHMARKS.md, "The reply filter"). This
-- filter on the target's sessions does for such a reply what the router
-- would, in its order, when that is all the router would do: nothing but
-- mod_blocklist (whose pre-event it fires) hooks those events, and the
-- session's thread has nothing queued (stanzas stay in order). A reply the
-- core does not recognise goes back to the router, which preps its address.
local reply_prefix = module.host.."/";
local take_reply; -- the filter; defined below

-- Below every other "stanzas/in" filter: mod_smacks counts the stanza and
-- mod_stanza_debug logs it first.
local reply_filter_priority = -100000;

-- Puts the filter on a session of the target that sent a reply the
-- router's way (its first). A session that mod_smacks resumed keeps the
-- router's way: it takes the new connection's filters, which pass the new
-- connection's session object, not bound to a resource.
function watch(session)
	local installed = session and session.filters and session.filters["stanzas/in"];
	if session and not (installed and installed[take_reply]) and session.type == "c2s" and session.full_jid
		and session.username == target_user and session.host == target_host then
		filters.add_filter(session, "stanzas/in", take_reply, reply_filter_priority);
	end
end

-- Takes the filter off every session of the target (it is on no other).
local function unwatch()
	local host_session = hosts[target_host];
	local account = host_session and host_session.sessions and host_session.sessions[target_user];
	for _, session in pairs(account and account.sessions or {}) do
		filters.remove_filter(session, "stanzas/in", take_reply);
	end
end

-- The router's work on a reply, from the pre-events on: true if the reply
-- was consumed, false if it goes back to the router (not the proxy's: a
-- reply to one of Prosody's own requests, say).
local function take(stanza, session, target)
	local event = { origin = session, stanza = stanza, to_self = false };
	if target.events.fire_event("pre-iq/host", event) then
		return true;
	end
	if handle_stanza(event) == nil then
		passed[stanza] = true;
		return false;
	end
	return true;
end

function take_reply(stanza, session)
	local attr = stanza.attr;
	local to, stanza_type = attr.to, attr.type;
	if stanza.name ~= "iq" or attr.xmlns ~= nil or attr.id == nil
		or not (stanza_type == "result" or stanza_type == "error" and stanza.tags[1])
		or type(to) ~= "string" or #to <= #reply_prefix or to:sub(1, #reply_prefix) ~= reply_prefix then
		return stanza;
	end
	local full_jid, thread = session.full_jid, session.thread;
	if not full_jid or thread and (thread.state ~= "ready" or thread.queue == nil or thread.queue[1] ~= nil) then
		return stanza;
	end
	local target = hosts[session.host];
	local own = hosts[module.host].events.get_handlers("iq/host");
	if not (target and own and own[1] == handle_stanza)
		or target.events.get_handlers("pre-stanza")
		or not handled_only_by(target, "pre-iq/host", "blocklist", true) then
		return stanza;
	end
	attr.from = full_jid;
	-- Not in the session's thread, whose runner would log a failure and go
	-- on: so does this, instead of letting it close the session.
	local ok, consumed = pcall(take, stanza, session, target);
	if not ok then
		module:log("error", "Failed to handle %s: %s", describe(stanza), tostring(consumed));
		return nil;
	end
	return not consumed and stanza or nil;
end

for _, kind in ipairs({ "iq", "message", "presence" }) do
	for _, to in ipairs({ "host", "bare", "full" }) do
		module:hook(kind.."/"..to, handle_stanza, hook_priority);
	end
end

-- Puts the component in the target's roster with a subscription "from", so
-- it gets the target's presence without anyone approving it by hand.
local function ensure_roster()
	if not usermanager.user_exists(target_user, target_host) then
		module:log("warn", "%s has no account yet; the subscription of %s will be approved when it logs in",
			target_address, module.host);
		return;
	end
	local roster = rostermanager.load_roster(target_user, target_host);
	local item = roster[module.host];
	if item and (item.subscription == "from" or item.subscription == "both") then
		return;
	end
	if not item then
		item = { subscription = "none", groups = {} };
		roster[module.host] = item;
	end
	item.subscription = item.subscription == "to" and "both" or "from";
	roster[false].pending[module.host] = nil;
	if rostermanager.save_roster(target_user, target_host, roster, module.host) then
		rostermanager.roster_push(target_user, target_host, module.host);
		module:log("info", "Added %s to the roster of %s with subscription %q",
			module.host, target_address, item.subscription);
	else
		module:log("error", "Could not save the roster of %s", target_address);
	end
end

local function is_local_account_host(host)
	local h = prosody.hosts[host];
	return h and h.type == "local";
end

-- Subscribe, then probe, so the resources online now are learned at once.
-- On a reload the running instance has done that already (unless the
-- target changed); the hooks, though, went with the previous instance.
local started = false;

local function start()
	if options.manage_roster and is_local_account_host(target_host) then
		ensure_roster();
		module:context(target_host):hook("resource-bind", function (event)
			if event.session.username == target_user then
				ensure_roster();
			end
		end);
	end
	if fresh_start then
		proxy:start();
		flush();
	end
	started = true;
end

function module.save()
	return { proxy = proxy, started = started };
end

function module.unload()
	-- The filter belongs to this instance; a new one puts its own.
	unwatch();
	if module.reloading then return; end
	proxy:close();
	flush();
	forget_metrics();
end

-- What the admin console's client_proxy commands call (see below).
function module.client_proxy_status()
	local lines = proxy:status(monotonic());
	flush();
	return lines;
end

function module.client_proxy_drain(resource, drained)
	local ok, err = proxy:drain(resource, drained);
	flush();
	return ok, err;
end

-- prosodyctl shell: client_proxy:status(host), :drain(host, resource),
-- :undrain(host, resource). The console's environment is shared by every
-- host, so the commands find the instance by host.
local console = module:shared("/*/admin_shell/env");
local commands = {};
console.client_proxy = commands;

local function instance(host)
	if type(host) ~= "string" or not prosody.hosts[host] then
		return nil, ("no host %q on this server"):format(tostring(host));
	end
	local mod = require "core.modulemanager".get_module(host, "client_proxy");
	if not mod then
		return nil, ("%s is not a client_proxy component"):format(host);
	end
	return mod.module;
end

function commands:status(host)
	local mod, err = instance(host);
	if not mod then
		return false, err;
	end
	local lines = mod.client_proxy_status();
	for i = 1, #lines - 1 do
		self.session.print(lines[i]);
	end
	return true, lines[#lines];
end

local function set_drain(host, resource, drained)
	local mod, err = instance(host);
	if not mod then
		return false, err;
	end
	if type(resource) ~= "string" then
		return false, "name a resource of the target, such as \"focus\"";
	end
	local ok, refused = mod.client_proxy_drain(resource, drained);
	if not ok then
		return false, refused;
	end
	return true, resource..(drained and " drains: no new requests" or " takes requests again");
end

function commands:drain(host, resource) -- luacheck: ignore 212/self
	return set_drain(host, resource, true);
end

function commands:undrain(host, resource) -- luacheck: ignore 212/self
	return set_drain(host, resource, false);
end

if prosody.hosts[target_host] or not configmanager.getconfig()[target_host] then
	-- Active here already, or on another server.
	start();
else
	-- A host of this server that is not active yet: hosts activate in no
	-- fixed order. Start once its own modules are loaded.
	module:log("debug", "Waiting for %s to activate", target_host);
	module:hook_global("host-activated", function (host)
		if host == target_host then
			start();
		end
	end, -10);
end

-- Requests a previous instance left in flight keep their deadlines.
arm_timer(monotonic());

module:log("debug", "Proxying to %s", target_address);
