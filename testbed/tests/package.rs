//! The Debian package of `make deb`, unpacked into a temporary root as
//! `dpkg-deb -x` does: it holds exactly the expected files, with the
//! control data an operator's apt needs, and the module it holds serves the
//! SPEC's basic rows (B1/A8, B2, C2) on the Prosody under test, found both
//! where Debian's Prosody looks (/usr/lib/prosody/modules) and through the
//! package's own directory for `plugin_paths`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use client_proxy_testbed::{
    error_condition, ping, spawn_echo, EchoMode, ProxyServer, TempDir, PROXY,
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
    "./usr/share/doc/prosody-mod-client-proxy/copyright",
];

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$CLIENT_PROXY_DEB`, or the package `make deb` builds (run here).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(build_deb)
}

fn build_deb() -> PathBuf {
    if let Some(path) = std::env::var_os("CLIENT_PROXY_DEB") {
        return PathBuf::from(path);
    }
    let output = Command::new("make")
        .args(["-s", "-C"])
        .arg(root_dir())
        .arg("deb")
        .output()
        .expect("run make deb");
    assert!(
        output.status.success(),
        "make deb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let name = stdout
        .lines()
        .rfind(|l| l.ends_with(".deb"))
        .expect("make deb names the package");
    root_dir().join(name.trim())
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("run dpkg-deb");
    assert!(output.status.success(), "dpkg-deb {args:?} failed");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The package unpacked into a fresh directory, as `dpkg-deb -x` does.
fn unpacked(deb: &Path) -> TempDir {
    let dir = TempDir::new().expect("create the package's root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir.path())
        .status()
        .expect("run dpkg-deb -x");
    assert!(status.success(), "dpkg-deb -x failed");
    dir
}

#[test]
fn the_package_holds_the_module_and_nothing_else_with_its_control_data() {
    let deb = deb();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("{PACKAGE}_{version}_")),
        "{name}: not named after the package and the version in Cargo.toml"
    );

    let listing = dpkg_deb(&["--contents"], deb);
    let mut paths: Vec<String> = listing
        .lines()
        .map(|line| {
            // mode owner size date time path [-> target]
            line.split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    paths.sort();
    let mut expected: Vec<String> = CONTENTS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(paths, expected, "{listing}");
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "{listing}"
    );

    let field = |name: &str| {
        dpkg_deb(&["--field"], deb)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    assert_eq!(field("Package").as_deref(), Some(PACKAGE));
    assert_eq!(field("Version").as_deref(), Some(version));
    let depends = field("Depends").expect("Depends");
    for needed in ["prosody (>= 0.12)", "lua5.4", "libc6 (>= "] {
        assert!(depends.contains(needed), "Depends: {depends}");
    }
    for name in [
        "Maintainer",
        "Description",
        "Section",
        "Priority",
        "Installed-Size",
    ] {
        assert!(field(name).is_some_and(|v| !v.is_empty()), "no {name}");
    }

    let root = unpacked(deb);
    let so = root
        .path()
        .join("usr/lib/prosody/modules/mod_client_proxy/client_proxy.so");
    let sections = Command::new("readelf").arg("-S").arg(&so).output().unwrap();
    assert!(sections.status.success());
    assert!(
        !String::from_utf8_lossy(&sections.stdout).contains(".symtab"),
        "the library is not stripped"
    );
    let copyright = fs::read_to_string(
        root.path()
            .join(format!("usr/share/doc/{PACKAGE}/copyright")),
    )
    .expect("a copyright file");
    assert!(copyright.contains("License: MIT"));
}

/// B1/A8, B2 and C2 against the module as unpacked from the package, found
/// in `plugins` (a directory of the package's root).
async fn serves_rows(plugins: &str) {
    let root = unpacked(deb());
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
