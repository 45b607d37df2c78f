//! The Debian package of `make deb`, unpacked into a temporary root as
//! `dpkg-deb -x` does: it holds exactly the expected files, with the
//! control data an operator's apt needs, and the module it holds serves the
//! contract's basic rows (B1/A8, B2, C2) on the Prosody under test, found both
//! where Debian's Prosody looks (/usr/lib/prosody/modules) and through the
//! package's own directory for `plugin_paths`; lintian finds no error and
//! no warning in it.

mod package_common;

use std::path::PathBuf;
use std::time::Duration;

use client_proxy_testbed::{error_condition, ping, spawn_echo, EchoMode, ProxyServer, PROXY};
use package_common::{
    assert_contents, assert_control, assert_doc, assert_lintian_clean, assert_stripped, unpacked,
};

const WAIT: Duration = Duration::from_secs(5);

const PACKAGE: &str = "prosody-mod-client-proxy";

/// Everything the package installs.
const CONTENTS: &[&str] = &[
    "./",
    "./usr/",
    "./usr/lib/",
    "./usr/lib/prosody/",
    "./usr/lib/prosody/modules/",
    "./usr/lib/prosody/modules/mod_client_proxy/",
    "./usr/lib/prosody/modules/mod_client_proxy/client_proxy.so",
    "./usr/lib/prosody/modules/mod_client_proxy/mod_client_proxy.lua",
    "./usr/lib/prosody-mod-client-proxy/",
    "./usr/lib/prosody-mod-client-proxy/mod_client_proxy -> ../prosody/modules/mod_client_proxy",
    "./usr/share/",
    "./usr/share/doc/",
    "./usr/share/doc/prosody-mod-client-proxy/",
    "./usr/share/doc/prosody-mod-client-proxy/changelog.gz",
    "./usr/share/doc/prosody-mod-client-proxy/copyright",
];

/// `$CLIENT_PROXY_DEB`, or the package `make deb` builds (run here).
fn deb() -> PathBuf {
    package_common::deb(PACKAGE, "CLIENT_PROXY_DEB")
}

#[test]
fn the_package_holds_the_module_and_nothing_else_with_its_control_data() {
    let deb = &deb();
    assert_contents(deb, PACKAGE, CONTENTS);
    let depends = assert_control(deb, PACKAGE);
    for needed in ["prosody (>= 0.12)", "lua5.4"] {
        assert!(depends.contains(needed), "Depends: {depends}");
    }

    let root = unpacked(deb);
    let so = root
        .path()
        .join("usr/lib/prosody/modules/mod_client_proxy/client_proxy.so");
    assert_stripped(&so);
    assert_doc(root.path(), PACKAGE);
}

#[test]
fn lintian_finds_no_error_and_no_warning_in_the_package() {
    assert_lintian_clean(&deb());
}

/// B1/A8, B2 and C2 against the module as unpacked from the package, found
/// in `plugins` (a directory of the package's root).
async fn serves_rows(plugins: &str) {
    let root = unpacked(&deb());
    let plugins = root.path().join(plugins);
    let server = ProxyServer::builder_from(&plugins, "client_proxy_timeout = 1")
        .start()
        .expect("start Prosody with the packaged module");
    let name = server.prosody().installation().name();
    let loaded_from = plugins.join("mod_client_proxy/mod_client_proxy.lua");
    let path = server
        .prosody()
        .shell(&format!(
            "> prosody.hosts[\"{PROXY}\"].modules.client_proxy.module.path"
        ))
        .expect("the module's path");
    assert!(
        path.contains(&*loaded_from.to_string_lossy()),
        "{name}: the module was not loaded from {}: {path}",
        loaded_from.display()
    );
    let mut alice = server.client("alice", "phone").await;

    // B2: nobody online.
    let reply = alice.request(PROXY, "get", "b2", ping(), WAIT).await;
    assert_eq!(
        error_condition(&reply.expect("an answer")),
        Some(("cancel".into(), "service-unavailable".into())),
        "{name}: B2"
    );

    // B1, A8: a request served by a resource, and its answer.
    let echo = spawn_echo(server.service("r1").await);
    let reply = alice
        .request(PROXY, "get", "b1", ping(), WAIT)
        .await
        .expect("a reply");
    assert_eq!(reply.attr("type"), Some("result"), "{name}: B1/A8");
    assert_eq!(reply.attr("from"), Some(PROXY), "{name}: A8");
    assert_eq!(
        echo.seen(),
        [(
            "proxy.localhost/alice@localhost/phone".to_owned(),
            "b1".to_owned()
        )],
        "{name}: B1"
    );

    // C2: no answer within client_proxy_timeout.
    echo.set_mode(EchoMode::Silent);
    let reply = alice.request(PROXY, "get", "c2", ping(), WAIT).await;
    assert_eq!(
        error_condition(&reply.expect("an answer")),
        Some(("wait".into(), "remote-server-timeout".into())),
        "{name}: C2"
    );
    // B2's own warning is the only one expected.
    let problems: Vec<String> = server
        .prosody()
        .warnings_and_errors()
        .into_iter()
        .filter(|l| !l.contains("No resource of svc@localhost can take requests"))
        .collect();
    assert!(problems.is_empty(), "{name}: {problems:#?}");
}

#[tokio::test]
async fn the_packaged_module_serves_from_prosodys_plugin_directory() {
    serves_rows("usr/lib/prosody/modules").await;
}

#[tokio::test]
async fn the_packaged_module_serves_from_its_own_plugin_path_entry() {
    serves_rows("usr/lib/prosody-mod-client-proxy").await;
}
