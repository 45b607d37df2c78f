//! The standalone component's Debian package of `make deb`
//! (scripts/build-deb-component), unpacked into a temporary root as
//! `dpkg-deb -x` does: exactly the expected files with their modes, the
//! example configuration a conffile, the control data; a postrm that
//! removes the operator's secret at purge and keeps it otherwise; a unit that
//! `systemd-analyze verify` accepts, with the settings an operator relies
//! on; lintian finds no error and no warning; and the packaged program,
//! started as the unit starts it (ExecStart, with the example configuration
//! filled in and the secret as a systemd credential), connects to a
//! Prosody's component port and serves a request.

mod package_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_proxy_testbed::{
    ping, spawn_echo, ProsodyBuilder, TempDir, Xmpp, PASSWORD, PROXY, TARGET,
};
use package_common::{
    assert_contents, assert_control, assert_doc, assert_lintian_clean, assert_stripped, contents,
    dpkg_deb, installed, unpacked,
};

const PACKAGE: &str = "client-proxy-component";
const UNIT: &str = "lib/systemd/system/client-proxy-component.service";
const CONFIG: &str = "etc/client-proxy-component/config.toml";
const BINARY: &str = "usr/bin/client-proxy-component";

/// Everything the package installs.
const CONTENTS: &[&str] = &[
    "./",
    "./etc/",
    "./etc/client-proxy-component/",
    "./etc/client-proxy-component/config.toml",
    "./lib/",
    "./lib/systemd/",
    "./lib/systemd/system/",
    "./lib/systemd/system/client-proxy-component.service",
    "./usr/",
    "./usr/bin/",
    "./usr/bin/client-proxy-component",
    "./usr/share/",
    "./usr/share/doc/",
    "./usr/share/doc/client-proxy-component/",
    "./usr/share/doc/client-proxy-component/changelog.gz",
    "./usr/share/doc/client-proxy-component/copyright",
    "./usr/share/lintian/",
    "./usr/share/lintian/overrides/",
    "./usr/share/lintian/overrides/client-proxy-component",
    "./usr/share/man/",
    "./usr/share/man/man1/",
    "./usr/share/man/man1/client-proxy-component.1.gz",
];

/// `$CLIENT_PROXY_COMPONENT_DEB`, or the package `make deb` builds (run here).
fn deb() -> PathBuf {
    package_common::deb(PACKAGE, "CLIENT_PROXY_COMPONENT_DEB")
}

/// The package's control archive, extracted as `dpkg-deb --control` does.
fn control(deb: &Path) -> TempDir {
    let control = TempDir::new().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(control.path())
        .status()
        .unwrap();
    assert!(status.success());
    control
}

/// The unit's values of `key`, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_package_holds_the_program_its_unit_and_its_configuration_with_their_modes() {
    let deb = &deb();
    assert_contents(deb, PACKAGE, CONTENTS);
    let listing = contents(deb);
    let mode = |path: &str| {
        listing
            .iter()
            .find(|(_, _, p)| p == &format!("./{path}"))
            .map(|(m, _, _)| m.as_str())
            .unwrap_or_else(|| panic!("no {path}"))
    };
    assert_eq!(mode(CONFIG), "-rw-r-----", "the options are root's alone");
    assert_eq!(mode(BINARY), "-rwxr-xr-x");
    assert_eq!(mode(UNIT), "-rw-r--r--");

    // The control archive: the configuration a conffile, one maintainer
    // script (postrm, executable).
    let control = control(deb);
    let mut files: Vec<String> = fs::read_dir(control.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["conffiles", "control", "md5sums", "postrm"]);
    let postrm = fs::metadata(control.path().join("postrm")).unwrap();
    assert_eq!(postrm.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        fs::read_to_string(control.path().join("conffiles")).unwrap(),
        format!("/{CONFIG}\n")
    );

    assert_control(deb, PACKAGE);
    let description = dpkg_deb(&["--field"], deb);
    assert!(description.contains("systemd unit"), "{description}");

    let root = unpacked(deb);
    assert_stripped(&root.path().join(BINARY));
    assert_doc(root.path(), PACKAGE);
    let man = Command::new("man")
        .arg("-l")
        .arg(
            root.path()
                .join("usr/share/man/man1/client-proxy-component.1.gz"),
        )
        .env("MANWIDTH", "80")
        .output();
    if let Ok(man) = man {
        let page = String::from_utf8_lossy(&man.stdout);
        assert!(
            man.status.success() && page.contains("--secret-file"),
            "{page}"
        );
    }
}

#[test]
fn the_unit_runs_the_program_sandboxed_with_its_secret_as_a_credential() {
    let root = unpacked(&deb());
    let unit = fs::read_to_string(root.path().join(UNIT)).unwrap();
    let one = |key: &str| {
        let values = unit_values(&unit, key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0].clone()
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/client-proxy-component --config /run/client-proxy-component/config.toml \
         --secret-file ${CREDENTIALS_DIRECTORY}/secret"
    );
    assert_eq!(
        one("LoadCredential"),
        "secret:/etc/client-proxy-component/secret"
    );
    // The copy the service reads is made again before the SIGHUP.
    let reload = unit_values(&unit, "ExecReload");
    assert_eq!(
        reload.last().map(String::as_str),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert!(
        reload[0].contains("/etc/client-proxy-component/config.toml"),
        "{reload:?}"
    );
    for (key, value) in [
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !installed("systemd-analyze") {
        println!("systemd-analyze is not installed: the unit is not verified");
        return;
    }
    // verify wants ExecStart's program where the unit says: the unpacked
    // one stands in for /usr/bin's, in a copy of the unit; the manual page
    // of Documentation= is the unpacked one.
    let root = unpacked(&deb());
    let unit = fs::read_to_string(root.path().join(UNIT)).unwrap();
    let program = root.path().join(BINARY);
    let unit = unit.replace(
        "ExecStart=/usr/bin/client-proxy-component ",
        &format!("ExecStart={} ", program.display()),
    );
    let dir = TempDir::new().unwrap();
    let copy = dir.path().join("client-proxy-component.service");
    fs::write(&copy, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", root.path().join("usr/share/man"))
        .output()
        .expect("run systemd-analyze");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn purging_removes_the_secret_the_operator_wrote_and_removing_keeps_it() {
    // The packaged postrm, run as dpkg runs it for a root of its own
    // ($DPKG_ROOT), after dpkg removed the files it knows of.
    let control = control(&deb());
    let root = TempDir::new().unwrap();
    let etc = root.path().join("etc/client-proxy-component");
    let postrm = |action: &str| {
        let status = Command::new(control.path().join("postrm"))
            .arg(action)
            .env("DPKG_ROOT", root.path())
            .status()
            .unwrap();
        assert!(status.success(), "postrm {action}: {status}");
    };
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("secret"), "a secret\n").unwrap();
    for action in ["remove", "upgrade", "abort-install"] {
        postrm(action);
        assert!(
            etc.join("secret").exists(),
            "postrm {action} took the secret"
        );
    }
    postrm("purge");
    assert!(!etc.exists(), "purging left {}", etc.display());
    // A file of the operator's own there stays, and so does the directory.
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("secret"), "a secret\n").unwrap();
    fs::write(etc.join("notes"), "mine\n").unwrap();
    postrm("purge");
    assert!(!etc.join("secret").exists(), "purging left the secret");
    assert!(
        etc.join("notes").exists(),
        "purging took the operator's file"
    );
    // Purging again, with nothing left, succeeds too.
    fs::remove_dir_all(&etc).unwrap();
    postrm("purge");
}

#[test]
fn the_example_configuration_lists_every_option_of_the_program() {
    let root = unpacked(&deb());
    let config = fs::read_to_string(root.path().join(CONFIG)).unwrap();
    let help = Command::new(root.path().join(BINARY))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let options: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|flag| !["config", "help"].contains(flag))
        .map(|flag| flag.replace('-', "_"))
        .collect();
    assert!(options.len() > 10, "{help}");
    let missing: Vec<&String> = options
        .iter()
        .filter(|key| {
            !config.lines().any(|l| {
                l.trim_start_matches('#')
                    .strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with(" = "))
            })
        })
        .collect();
    assert!(missing.is_empty(), "not in {CONFIG}: {missing:?}");
    // How to write the secret, which the package does not ship.
    assert!(config.contains("install -m 0600 /dev/null /etc/client-proxy-component/secret"));
}

#[test]
fn lintian_finds_no_error_and_no_warning_in_the_package() {
    assert_lintian_clean(&deb());
}

/// The program, killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_packaged_program_started_as_its_unit_starts_it_serves_a_request() {
    const SECRET: &str = "a long random secret";
    let root = unpacked(&deb());
    let prosody = ProsodyBuilder::new()
        .user(TARGET, PASSWORD)
        .user("alice@localhost", PASSWORD)
        .external_component(PROXY, SECRET)
        .roster_item(TARGET, PROXY, "from")
        .start()
        .expect("start Prosody with a component port");
    let port = prosody.component_addr().expect("a component port");

    // What the operator does after installing: fill in the three options,
    // write the secret (mode 0600); systemd then copies both for the service.
    let dir = TempDir::new().unwrap();
    let example = fs::read_to_string(root.path().join(CONFIG)).unwrap();
    let config: String = example
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("domain", _)) => format!("domain = \"{PROXY}\""),
            Some(("server", _)) => format!("server = [\"{port}\"]"),
            Some(("target_address", _)) => format!("target_address = \"{TARGET}\""),
            _ => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(config, example, "nothing to fill in");
    let config_copy = dir.path().join("config.toml");
    fs::write(&config_copy, config).unwrap();
    fs::set_permissions(&config_copy, fs::Permissions::from_mode(0o400)).unwrap();
    let credentials = dir.path().join("credentials");
    fs::create_dir(&credentials).unwrap();
    fs::write(credentials.join("secret"), format!("{SECRET}\n")).unwrap();
    fs::set_permissions(
        credentials.join("secret"),
        fs::Permissions::from_mode(0o400),
    )
    .unwrap();

    let unit = fs::read_to_string(root.path().join(UNIT)).unwrap();
    let exec_start = unit_values(&unit, "ExecStart").remove(0);
    let argv: Vec<String> = exec_start
        .split_whitespace()
        .map(|word| {
            word.replace("/usr/bin/", &format!("{}/usr/bin/", root.path().display()))
                .replace(
                    "/run/client-proxy-component/config.toml",
                    &config_copy.to_string_lossy(),
                )
                .replace("${CREDENTIALS_DIRECTORY}", &credentials.to_string_lossy())
        })
        .collect();
    let log = dir.path().join("component.log");
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("run the packaged program");
    let component = Running { child, log };
    assert!(
        component.wait_for_log("Connected to", Duration::from_secs(10)),
        "{argv:?} did not connect:\n{}",
        component.log()
    );

    let mut service = Xmpp::connect(prosody.c2s_addr(), &format!("{TARGET}/r1"), PASSWORD)
        .await
        .expect("the service logs in");
    service.send_presence(None, 0).await.unwrap();
    service.sync().await;
    let echo = spawn_echo(service);
    let mut alice = Xmpp::connect(prosody.c2s_addr(), "alice@localhost/phone", PASSWORD)
        .await
        .expect("alice logs in");
    let reply = alice
        .request(PROXY, "get", "packaged", ping(), Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
    assert_eq!(
        echo.seen(),
        [(
            format!("{PROXY}/alice@localhost/phone"),
            "packaged".to_owned()
        )]
    );
    let log = component.log();
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
}
