-- The shim's part in messages and the service's own requests (docs/behaviour.md, M, O):
-- messages go through the router, and a request of the service's leaves
-- and comes back under the ids the core gives.

local h = require "helpers.shim"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local P, T, U, ENC_U = h.P, h.T, h.U, h.ENC_U;
local make_iq, fresh_shim, online = h.make_iq, h.fresh_shim, h.online;

describe("messages", function ()
	it("m1: a message from a requester goes to a resource as from P/enc(U), body untouched", function ()
		local shim = fresh_shim({ client_proxy_messages = true });
		online(shim, "a");
		local msg = st.message({ type = "chat", from = U, to = P, id = "m1" }, "hello");
		assert.is_true(shim:deliver(msg));
		local sent = shim:take();
		assert.equals(1, #sent);
		assert.is_true(rawequal(msg, sent[1]));
		assert.same({ ENC_U, T.."/a", "hello" }, { sent[1].attr.from, sent[1].attr.to, sent[1]:get_child_text("body") });
	end);

	it("m2: the service's message to P/enc(U) reaches U from P", function ()
		local shim = fresh_shim({ client_proxy_messages = true });
		online(shim, "a");
		assert.is_true(shim:deliver(st.message({ type = "chat", from = T.."/a", to = ENC_U }, "hi")));
		local sent = shim:take();
		assert.same({ P, U }, { sent[1].attr.from, sent[1].attr.to });
	end);

	it("b6: without client_proxy_messages a message is still not implemented", function ()
		local shim = fresh_shim();
		online(shim, "a");
		assert.is_true(shim:deliver(st.message({ type = "chat", from = U, to = P }, "hello")));
		local sent = shim:take();
		assert.equals("error", sent[1].attr.type);
		assert.equals("feature-not-implemented", select(2, sent[1]:get_error()));
	end);
end);

describe("requests of the service's", function ()
	it("o1, o2: leave with a new id and come back under the original one", function ()
		local shim = fresh_shim({ client_proxy_outbound_iq = true });
		online(shim, "a");
		local ask = make_iq({ type = "get", from = T.."/a", to = ENC_U, id = "ask1" });
		assert.is_true(shim:deliver(ask));
		local out = shim:take()[1];
		assert.same({ P, U }, { out.attr.from, out.attr.to });
		assert.are_not.equal("ask1", out.attr.id);
		assert.is_true(shim:deliver(make_iq({ type = "result", from = U, to = P, id = out.attr.id })));
		local back = shim:take()[1];
		assert.same({ ENC_U, T.."/a", "ask1", "result" }, { back.attr.from, back.attr.to, back.attr.id, back.attr.type });
	end);

	it("o3: no answer is a timeout to the resource, from P/enc(U), under its id", function ()
		local shim, server = fresh_shim({ client_proxy_outbound_iq = true, client_proxy_timeout = 2 });
		online(shim, "a");
		assert.is_true(shim:deliver(make_iq({ type = "set", from = T.."/a", to = ENC_U, id = "ask" })));
		shim:take();
		server:advance(2.1);
		local sent = shim:take();
		assert.equals(1, #sent);
		assert.equals(ENC_U, sent[1].attr.from);
		assert.equals(T.."/a", sent[1].attr.to);
		assert.equals("ask", sent[1].attr.id);
		local error_type, condition = sent[1]:get_error();
		assert.same({ "wait", "remote-server-timeout" }, { error_type, condition });
	end);

	it("a10: without client_proxy_outbound_iq it is still not implemented", function ()
		local shim = fresh_shim();
		online(shim, "a");
		assert.is_true(shim:deliver(make_iq({ type = "get", from = T.."/a", to = ENC_U, id = "ask" })));
		local sent = shim:take();
		assert.equals(1, #sent);
		assert.equals("feature-not-implemented", select(2, sent[1]:get_error()));
	end);
end);
