//! The facts of a Prosody stanza's payload, read straight off its Lua table
//! for the core's checks of hostile input (H1, H4, H5).
//!
//! A util.stanza element is a table with `name`, `attr` and its children
//! (tables for elements, strings for text) in its array part. The walk is
//! iterative, reads with raw accesses only (no metamethod runs, nothing
//! raises), stops descending once the nesting is past the limit, and leaves
//! the Lua stack as it found it.

use std::ffi::c_int;
use std::slice;

use mlua::ffi;

use crate::core::{xml_attribute_allowed, Body, Defect, NS_XML, NS_XMLNS};

/// What an element costs beyond its attributes and text, roughly: its name
/// written twice and its brackets.
const ELEMENT_BYTES: usize = 16;

/// Elements looked at, at most. Prosody's parser makes trees of at most a
/// few tens of thousands (256 KiB a stanza); a table built otherwise may
/// share children, or hold itself, and is not walked without end.
const MAX_ELEMENTS: usize = 200_000;

/// Walks the stanza at stack index `idx`, counting its depth up to
/// `limit` + 1.
///
/// # Safety
/// `state` is a live Lua state with `idx` a valid index.
pub(super) unsafe fn body(state: *mut ffi::lua_State, idx: c_int, limit: u32) -> Body {
    let mut body = Body::default();
    if ffi::lua_type(state, idx) != ffi::LUA_TTABLE {
        return body;
    }
    let top = ffi::lua_gettop(state);
    let idx = ffi::lua_absindex(state, idx);
    // The key "attr", pushed once: every stanza holds it already, so this
    // finds the interned string and allocates nothing.
    ffi::lua_pushlstring(state, c"attr".as_ptr(), 4);
    let attr_key = ffi::lua_gettop(state);
    ffi::lua_pushvalue(state, idx);
    element(state, attr_key, &mut body);
    body.depth = 1;
    // The next child to visit, for each element from the stanza down to the
    // one on top of the Lua stack.
    let mut next: Vec<ffi::lua_Integer> = vec![1];
    let mut elements = 1;
    while let Some(i) = next.last_mut() {
        let ty = ffi::lua_rawgeti(state, -1, *i);
        *i += 1;
        match ty {
            ffi::LUA_TTABLE => {
                let depth = next.len() as u32 + 1;
                body.depth = body.depth.max(depth);
                if depth > limit || ffi::lua_checkstack(state, 4) == 0 {
                    body.depth = body.depth.max(limit.saturating_add(1));
                    break;
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    body.defect = Some(Defect::Oversized);
                    break;
                }
                element(state, attr_key, &mut body);
                next.push(1);
            }
            ffi::LUA_TSTRING => {
                body.bytes += ffi::lua_rawlen(state, -1);
                ffi::lua_pop(state, 1);
            }
            ffi::LUA_TNIL => {
                // Past the last child: back to the parent.
                ffi::lua_pop(state, 2);
                next.pop();
            }
            _ => ffi::lua_pop(state, 1),
        }
        if body.defect.is_some() {
            break;
        }
    }
    ffi::lua_settop(state, top);
    body
}

/// Counts the element on top of the stack and checks its attributes.
unsafe fn element(state: *mut ffi::lua_State, attr_key: c_int, body: &mut Body) {
    body.bytes += ELEMENT_BYTES;
    ffi::lua_pushvalue(state, attr_key);
    if ffi::lua_rawget(state, -2) != ffi::LUA_TTABLE {
        ffi::lua_pop(state, 1);
        return;
    }
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, -2) != 0 {
        // Only a string key is looked at as one: lua_tolstring would turn a
        // number key into a string in place and break lua_next.
        if ffi::lua_type(state, -2) == ffi::LUA_TSTRING {
            let name = bytes(state, -2);
            if !attribute_allowed(name) {
                body.defect = Some(Defect::Malformed);
            }
            body.bytes += name.len() + 4;
            if ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
                body.bytes += ffi::lua_rawlen(state, -1);
            }
        }
        ffi::lua_pop(state, 1);
    }
    ffi::lua_pop(state, 1);
}

unsafe fn bytes<'a>(state: *mut ffi::lua_State, i: c_int) -> &'a [u8] {
    let mut len = 0;
    let data = ffi::lua_tolstring(state, i, &mut len);
    slice::from_raw_parts(data.cast::<u8>(), len)
}

/// Whether Prosody's serializer writes this attribute key as XML that a
/// namespace-aware parser accepts.
///
/// Its parser keys an attribute in a namespace as `URI\1name` (the four the
/// XML namespace defines as `xml:name`), and its serializer declares a
/// generated prefix for the URI: fine for any namespace but the XML one
/// (whose prefix is `xml` alone) and the namespace of declarations. A key
/// with a colon and no URI is written as it is, so its prefix is unbound
/// unless it is `xml`.
fn attribute_allowed(key: &[u8]) -> bool {
    if let Some(sep) = key.iter().position(|&b| b == 1) {
        let (ns, local) = (&key[..sep], &key[sep + 1..]);
        return !ns.is_empty()
            && !local.is_empty()
            && !local.contains(&1)
            && !local.contains(&b':')
            && ns != NS_XMLNS.as_bytes()
            && (ns != NS_XML.as_bytes()
                || std::str::from_utf8(local).is_ok_and(xml_attribute_allowed));
    }
    match key.iter().position(|&b| b == b':') {
        None => true,
        Some(colon) => {
            &key[..colon] == b"xml"
                && std::str::from_utf8(&key[colon + 1..]).is_ok_and(xml_attribute_allowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::attribute_allowed;

    #[test]
    fn attribute_keys_as_prosody_writes_them() {
        for ok in [
            &b"id"[..],
            b"xmlns",
            b"xml:lang",
            b"urn:a\x01b",
            b"http://www.w3.org/XML/1998/namespace\x01lang",
        ] {
            assert!(attribute_allowed(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"http://www.w3.org/XML/1998/namespace\x01foo"[..],
            b"http://www.w3.org/2000/xmlns/\x01a",
            b"\x01a",
            b"urn:a\x01",
            b"urn:a\x01b\x01c",
            b"urn:a\x01p:b",
            b"xml:foo",
            b"a:b",
        ] {
            assert!(!attribute_allowed(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
