//! What the tests of the Debian packages share: the packages `make deb`
//! builds, read with dpkg-deb, and lintian's verdict on them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use client_proxy_testbed::TempDir;

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The package `package`: `$env`, or the one `make deb` builds (run here
/// once, for both packages).
pub fn deb(package: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let prefix = format!("build/{package}_");
    let built = make_deb()
        .iter()
        .find(|p| p.starts_with(&prefix))
        .unwrap_or_else(|| panic!("make deb did not build {package}: {:?}", make_deb()));
    root_dir().join(built)
}

/// The packages `make deb` names, as it prints them (`build/NAME.deb`).
fn make_deb() -> &'static [String] {
    static BUILT: OnceLock<Vec<String>> = OnceLock::new();
    BUILT.get_or_init(|| {
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
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.ends_with(".deb"))
            .map(|l| l.trim().to_owned())
            .collect()
    })
}

pub fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("run dpkg-deb");
    assert!(output.status.success(), "dpkg-deb {args:?} failed");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// A control field of the package.
pub fn field(deb: &Path, name: &str) -> Option<String> {
    dpkg_deb(&["--field"], deb)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
}

/// Asserts the control fields both packages have (Package, Version,
/// Section net, Priority optional, and the rest not empty), and returns
/// Depends.
pub fn assert_control(deb: &Path, package: &str) -> String {
    assert_eq!(field(deb, "Package").as_deref(), Some(package));
    assert_eq!(
        field(deb, "Version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(field(deb, "Section").as_deref(), Some("net"));
    assert_eq!(field(deb, "Priority").as_deref(), Some("optional"));
    for name in [
        "Maintainer",
        "Description",
        "Installed-Size",
        "Architecture",
    ] {
        assert!(field(deb, name).is_some_and(|v| !v.is_empty()), "no {name}");
    }
    let depends = field(deb, "Depends").expect("Depends");
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");
    depends
}

/// `dpkg-deb --contents`, a line a file: (mode, owner, path [-> target]).
pub fn contents(deb: &Path) -> Vec<(String, String, String)> {
    dpkg_deb(&["--contents"], deb)
        .lines()
        .map(|line| {
            // mode owner size date time path [-> target]
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0].into(), words[1].into(), words[5..].join(" "))
        })
        .collect()
}

/// Asserts that the package is named after `package` and the version in
/// Cargo.toml, and holds exactly `expected`, all root's.
pub fn assert_contents(deb: &Path, package: &str, expected: &[&str]) {
    let name = deb.file_name().unwrap().to_string_lossy();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("{package}_{version}_")),
        "{name}: not named after the package and the version in Cargo.toml"
    );
    let listing = contents(deb);
    let mut paths: Vec<&str> = listing.iter().map(|(_, _, p)| p.as_str()).collect();
    paths.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(paths, expected, "{listing:#?}");
    assert!(
        listing.iter().all(|(_, owner, _)| owner == "root/root"),
        "{listing:#?}"
    );
}

/// The package unpacked into a fresh directory, as `dpkg-deb -x` does.
pub fn unpacked(deb: &Path) -> TempDir {
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

/// Asserts that an ELF file has no symbol table left.
pub fn assert_stripped(file: &Path) {
    let sections = Command::new("readelf")
        .arg("-S")
        .arg(file)
        .output()
        .unwrap();
    assert!(sections.status.success());
    assert!(
        !String::from_utf8_lossy(&sections.stdout).contains(".symtab"),
        "{} is not stripped",
        file.display()
    );
}

/// Whether `program` can be run (`--version`, or `--help`, succeeds).
pub fn installed(program: &str) -> bool {
    ["--version", "--help"].iter().any(|arg| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Asserts that lintian finds no error and no warning in the package;
/// info tags are printed. Skipped, saying so, without lintian.
pub fn assert_lintian_clean(deb: &Path) {
    if !installed("lintian") {
        println!("lintian is not installed (apt-get install lintian): not checked");
        return;
    }
    let output = Command::new("lintian")
        .args(["--display-info", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&output.stdout);
    print!("{report}");
    let bad: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        bad.is_empty() && output.status.success(),
        "lintian on {}:\n{report}{}",
        deb.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts that the unpacked package documents itself as Debian wants:
/// a copyright file with the license and a copyright notice, and a
/// changelog (gzip -9n) whose entry is this version's.
pub fn assert_doc(root: &Path, package: &str) {
    let doc = root.join("usr/share/doc").join(package);
    let copyright = std::fs::read_to_string(doc.join("copyright")).expect("a copyright file");
    assert!(copyright.contains("License: MIT"), "{copyright}");
    assert!(
        copyright
            .lines()
            .any(|l| l.starts_with("Copyright: ") && l.chars().any(|c| c.is_ascii_digit())),
        "no copyright notice with a year: {copyright}"
    );
    let changelog = Command::new("gzip")
        .arg("-dc")
        .arg(doc.join("changelog.gz"))
        .output()
        .expect("run gzip -dc");
    assert!(changelog.status.success(), "changelog.gz is not gzip");
    let changelog = String::from_utf8_lossy(&changelog.stdout);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        changelog.starts_with(&format!("{package} ({version}) unstable; urgency=")),
        "{changelog}"
    );
}
