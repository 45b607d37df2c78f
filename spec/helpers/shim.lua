-- Stanzas and checks that the busted specs of the shim share.

local fake = require "helpers.fake_module"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local assert = require "luassert";

local P = fake.host; -- the component: proxy.example
local T = fake.target; -- the target account: svc@example.org
local U = "alice@example.net/phone"; -- a requester
local ENC_U = P.."/"..U; -- what T sees as the requester (JAT: U verbatim)
local STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";

-- An IQ with a payload that must travel untouched.
local function make_iq(attr)
	return st.iq({ type = attr.type, from = attr.from, to = attr.to, id = attr.id })
		:tag("query", { xmlns = "jabber:iq:version" }):text_tag("name", "payload"):up();
end

local function make_presence(attr, show, priority)
	local p = st.presence({ type = attr.type, from = attr.from, to = attr.to or P });
	if show then p:text_tag("show", show); end
	if priority then p:text_tag("priority", tostring(priority)); end
	return p;
end

local function make_message(attr)
	return st.message({ type = attr.type, from = attr.from, to = attr.to or P, id = attr.id }, "hello");
end

-- A server and a shim loaded on it, with the load-time presences taken.
local function fresh_shim(options, server)
	server = server or fake.new_server();
	options = options or {};
	if options.target_address == nil then options.target_address = T; end
	local shim = server:load(options);
	shim:take();
	return shim, server;
end

-- T/resource comes online (A1): consumed, nothing sent.
local function online(shim, resource, priority)
	local ret = shim:deliver(make_presence({ from = T.."/"..resource }, nil, priority));
	assert.is_true(ret);
	assert.same({}, shim:take());
end

-- A request from `from` (default U) that the shim forwards; returns it.
local function request(shim, id, attr)
	attr = attr or {};
	local iq = make_iq({ type = attr.type or "get", from = attr.from or U, to = attr.to or P, id = id });
	assert.is_true(shim:deliver(iq));
	local sent = shim:take();
	assert.equals(1, #sent);
	assert.is_true(rawequal(iq, sent[1]), "the request itself is sent");
	return iq;
end

-- The target's reply to a request forwarded to T/resource.
local function make_reply(resource, id, requester, ty)
	return make_iq({ type = ty or "result", from = T.."/"..resource, to = P.."/"..(requester or U), id = id });
end

-- Copies the routing attributes of a stanza before the shim sees it.
local function addresses(stanza)
	local a = stanza.attr;
	return { name = stanza.name, type = a.type, from = a.from, to = a.to, id = a.id };
end

-- `reply` is an error-reply (docs/behaviour.md: same id, to the sender, from the address
-- the original was sent to) of the original whose attributes were `orig`.
local function assert_error_reply(reply, orig, error_type, condition)
	assert.is_true(st.is_stanza(reply));
	assert.equals(orig.name, reply.name);
	assert.equals("error", reply.attr.type);
	assert.equals(orig.id, reply.attr.id);
	assert.equals(orig.from, reply.attr.to);
	assert.equals(orig.to, reply.attr.from);
	local got_type, got_condition = reply:get_error();
	assert.equals(error_type, got_type);
	assert.equals(condition, got_condition);
end

-- Delivers `stanza` and checks that the only thing sent is an error-reply
-- to it; the handler must have taken the stanza (returned true).
local function assert_answered_with(shim, stanza, error_type, condition)
	local orig = addresses(stanza);
	assert.is_true(shim:deliver(stanza));
	local sent = shim:take();
	assert.equals(1, #sent);
	assert_error_reply(sent[1], orig, error_type, condition);
end

-- An IQ error from P to `to` with this id, type and condition.
local function assert_iq_error(stanza, to, id, error_type, condition)
	assert.equals("iq", stanza.name);
	assert.equals("error", stanza.attr.type);
	assert.equals(P, stanza.attr.from);
	assert.equals(to, stanza.attr.to);
	assert.equals(id, stanza.attr.id);
	local got_type, got_condition = stanza:get_error();
	assert.equals(error_type, got_type);
	assert.equals(condition, got_condition);
	assert.equals(STANZAS, stanza:get_child("error"):get_child(condition, STANZAS).attr.xmlns);
end

-- A presence from P to `to` of type `ty` (nil: available).
local function assert_presence(stanza, to, ty)
	assert.equals("presence", stanza.name);
	assert.equals(P, stanza.attr.from);
	assert.equals(to, stanza.attr.to);
	assert.equals(ty, stanza.attr.type);
end

return {
	P = P;
	T = T;
	U = U;
	ENC_U = ENC_U;
	STANZAS = STANZAS;
	make_iq = make_iq;
	make_presence = make_presence;
	make_message = make_message;
	fresh_shim = fresh_shim;
	online = online;
	request = request;
	make_reply = make_reply;
	addresses = addresses;
	assert_error_reply = assert_error_reply;
	assert_answered_with = assert_answered_with;
	assert_iq_error = assert_iq_error;
	assert_presence = assert_presence;
};
