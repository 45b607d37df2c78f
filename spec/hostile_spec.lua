-- Hostile input through the shim (docs/behaviour.md, H1-H5): requests built as Prosody's
-- stream parser (util.xmppstream) builds them, with the real library.

local h = require "helpers.shim"; -- sets package.path for Prosody's util.*
local st = require "util.stanza";
local P, T, U = h.P, h.T, h.U;
local fresh_shim, online, request = h.fresh_shim, h.online, h.request;
local assert_answered_with = h.assert_answered_with;

-- How util.xmppstream keys an `xml:` attribute other than the four it maps.
local XML_FOO = "http://www.w3.org/XML/1998/namespace\1foo";

local function get(id, payload)
	return st.iq({ type = "get", from = U, to = P, id = id }):add_child(payload);
end

-- A payload that makes the iq `depth` elements deep.
local function nested(depth)
	local top = st.stanza("q", { xmlns = "urn:x" });
	local here = top;
	for _ = 3, depth do
		here = here:tag("d"); -- :tag descends and returns the same stanza
	end
	return top;
end

describe("hostile input", function ()
	it("h5: an xml: attribute Prosody would write unparseable never reaches the service", function ()
		local shim = fresh_shim();
		online(shim, "a");
		assert_answered_with(shim, get("h1", st.stanza("q", { xmlns = "urn:x", [XML_FOO] = "1" })),
			"modify", "bad-request");
		-- On the iq itself too.
		local iq = st.iq({ type = "get", from = U, to = P, id = "h2", [XML_FOO] = "1" });
		assert_answered_with(shim, iq, "modify", "bad-request");
		-- What the XML namespace defines, and any other namespace, go on.
		request(shim, "ok", nil);
		local fine = get("ok2", st.stanza("q", { xmlns = "urn:x", ["xml:lang"] = "en", ["urn:a\1b"] = "1" }));
		assert.is_true(shim:deliver(fine));
		assert.equals(T.."/a", shim:take()[1].attr.to);
	end);

	it("h5: a payload nested deeper than client_proxy_max_depth is refused", function ()
		local shim = fresh_shim();
		online(shim, "a");
		assert_answered_with(shim, get("deep", nested(65)), "modify", "policy-violation");
		assert_answered_with(shim, get("deeper", nested(6000)), "modify", "policy-violation");
		assert.is_true(shim:deliver(get("fits", nested(64))));
		assert.equals(T.."/a", shim:take()[1].attr.to);
	end);

	it("h5: client_proxy_max_depth is the operator's", function ()
		local shim = fresh_shim({ client_proxy_max_depth = 200 });
		online(shim, "a");
		assert.is_true(shim:deliver(get("fits", nested(200))));
		assert.equals(T.."/a", shim:take()[1].attr.to);
	end);

	it("h4: payloads kept for retries stay within client_proxy_max_bytes_in_flight", function ()
		local shim = fresh_shim({ client_proxy_max_bytes_in_flight = 10000, client_proxy_attempts = 2 });
		online(shim, "a");
		local big = string.rep("x", 3000);
		for i = 1, 3 do
			assert.is_true(shim:deliver(get("b"..i, st.stanza("q", { xmlns = "urn:x" }):text(big))));
			assert.equals(T.."/a", shim:take()[1].attr.to);
		end
		assert_answered_with(shim, get("b4", st.stanza("q", { xmlns = "urn:x" }):text(big)),
			"wait", "resource-constraint");
	end);
end);
