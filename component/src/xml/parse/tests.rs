use super::*;

fn parse(s: &str) -> Stanza {
    Stanza::parse(s.as_bytes().to_vec())
}

fn defect(s: &str) -> Option<Defect> {
    parse(s).body().defect
}

#[test]
fn a_stanza_is_read_with_its_namespaces() {
    let s = parse(
        "<iq type='get' id='a&amp;b' from='u@x/r' to='p.x'>\
         <q xmlns='urn:x' xmlns:a='urn:a' a:k='v' xml:lang='en'><a:r>t&lt;<![CDATA[<c>]]></a:r></q></iq>",
    );
    assert_eq!(s.body().defect, None);
    assert_eq!(s.body().depth, 3);
    let root = s.root().unwrap();
    assert!(s.is(root, "iq", NS_ACCEPT));
    assert_eq!(s.top_attr("id").as_deref(), Some("a&b"));
    let q = s.child(root, "q", "urn:x").unwrap();
    let r = s.child(q, "r", "urn:a").unwrap();
    assert_eq!(s.text(r), "t<<c>");
    assert_eq!(s.attr(q, "k"), None, "a:k is in urn:a");
}

#[test]
fn addresses_change_and_nothing_else_does() {
    let s = parse("<iq xmlns:a='urn:a' type='get' a:x='1' id='1' from='u' to='p' ><q/></iq>");
    let out = s.with_addresses("p/u", "t@x/r", None);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<iq xmlns:a='urn:a' type='get' a:x='1' id='1' from='p/u' to='t@x/r'><q/></iq>"
    );
    let s = parse("<message to=\"p\"/>");
    let out = s.with_addresses("a'b", "c", Some("n"));
    assert_eq!(out, b"<message from='a&apos;b' to='c' id='n'/>");
}

#[test]
fn what_a_namespace_aware_parser_rejects_is_malformed() {
    for bad in [
        // Prosody's way of writing xml:foo.
        "<iq><q xmlns:ns1='http://www.w3.org/XML/1998/namespace' ns1:foo='1'/></iq>",
        "<iq><q p:a='1'/></iq>",
        "<iq><p:q/></iq>",
        "<iq><q xmlns:xml='urn:not-xml'/></iq>",
        "<iq><q xmlns:xmlns='urn:x'/></iq>",
        "<iq><q xmlns:p=''/></iq>",
        "<iq><q xmlns='http://www.w3.org/2000/xmlns/'/></iq>",
        "<iq><q xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'/></iq>",
        "<iq><q k='1' k='2'/></iq>",
        "<iq><q xmlns:a='urn:x' xmlns:a='urn:y'/></iq>",
        "<iq><q></r></iq>",
        "<iq><q>&foo;</q></iq>",
        "<iq><q>&#0;</q></iq>",
        "<iq><q>a]]>b</q></iq>",
        "<iq><q a='<'/></iq>",
        "<iq><q a='1'b='2'/></iq>",
        "<iq><!-- c --></iq>",
        "<iq><?pi x?></iq>",
        "<iq><1q/></iq>",
        "<iq><a:b:c xmlns:a='urn:a'/></iq>",
        "<iq>\u{1}</iq>",
        "<iq/>trailing",
        // Written back by Prosody with the XML namespace as the default.
        "<iq><xml:q/></iq>",
        // Attributes the XML namespace does not define.
        "<iq><q xml:foo='1'/></iq>",
        "<iq xml:foo='1'/>",
    ] {
        assert_eq!(defect(bad), Some(Defect::Malformed), "{bad}");
    }
}

#[test]
fn legitimate_payloads_pass() {
    for ok in [
        "<iq><q xmlns='urn:x' xml:lang='en' xml:space='preserve' xml:base='a' xml:id='i'/></iq>",
        "<iq><q xmlns:xml='http://www.w3.org/XML/1998/namespace'/></iq>",
        "<iq><a:q xmlns:a='urn:a' a:k='&apos;&quot;&#x10FFFF;&#9;'><a:r/></a:q></iq>",
        "<iq><q xmlns='urn:x'><r xmlns=''/></q></iq>",
        "<iq><stream:q/></iq>",
        "<iq><q xmlns:a='urn:x' a:k='1' k='2'/></iq>",
        "<iq>\t\r\n text &gt; ]] &amp;</iq>",
        "<iq\n id = \"1\"\t/>",
    ] {
        assert_eq!(defect(ok), None, "{ok}");
    }
}

#[test]
fn depth_is_measured_and_bounded() {
    let deep = |n: usize| format!("<iq>{}{}</iq>", "<a>".repeat(n), "</a>".repeat(n));
    assert_eq!(parse(&deep(63)).body().depth, 64);
    let past = parse(&deep(DEPTH_CAP as usize + 10));
    assert_eq!(past.body().depth, DEPTH_CAP + 1);
    assert_eq!(past.body().defect, Some(Defect::Oversized));
    // Its addresses can still be read for an answer.
    assert!(past.root().is_some());
}

#[test]
fn an_oversized_stanza_keeps_its_addresses() {
    let s = Stanza::oversized(Some(b"<iq type='get' id='9' from='u'>".to_vec()));
    assert_eq!(s.body().defect, Some(Defect::Oversized));
    assert_eq!(s.top_attr("id").as_deref(), Some("9"));
    assert!(Stanza::oversized(None).root().is_none());
}

#[test]
fn many_attributes_cost_no_more_than_their_number() {
    let attrs: String = (0..20_000).map(|i| format!(" a{i}='1'")).collect();
    let s = parse(&format!("<iq><q{attrs}/></iq>"));
    assert_eq!(s.body().defect, None);
    let dup = parse(&format!("<iq><q{attrs} a7='2'/></iq>"));
    assert_eq!(dup.body().defect, Some(Defect::Malformed));
}

#[test]
fn a_malformed_stanza_keeps_its_addresses_for_an_answer() {
    for bad in [
        "<iq xmlns:ns1='http://www.w3.org/XML/1998/namespace' ns1:foo='1' type='get' id='a' from='u'/>",
        "<iq p:x='1' type='get' id='a' from='u'/>",
        "<iq xmlns:p='' type='get' id='a' from='u'><q/></iq>",
        "<iq type='get' id='a' from='u' k='1' k='2'/>",
    ] {
        let s = parse(bad);
        assert_eq!(s.body().defect, Some(Defect::Malformed), "{bad}");
        let root = s.root().expect(bad);
        assert!(s.is(root, "iq", NS_ACCEPT), "{bad}");
        assert_eq!(s.top_attr("id").as_deref(), Some("a"), "{bad}");
    }
}
