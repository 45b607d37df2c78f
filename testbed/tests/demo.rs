//! `make demo` and `make demo-component` keep their promises: the demo
//! binary, run through the module and through the standalone component,
//! checks each step as it tells it (`--results`), and this test reads
//! those verdicts and the count of requests, not the wording.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The steps the demo tells, by their id in `--results`.
const STEPS: [&str; 7] = [
    "spread", "loss", "stray", "drain", "sticky", "timeout", "metrics",
];
/// Far more than the demo takes (under 10 s).
const LIMIT: Duration = Duration::from_secs(120);

struct Run {
    verdicts: Vec<(String, String, String)>,
    requests: Vec<(String, usize)>,
    success: bool,
    stdout: String,
}

/// Runs `demo ARGS --results FILE` and reads FILE.
fn demo(args: &[&str]) -> Run {
    let file = std::env::temp_dir().join(format!(
        "client-proxy-demo-{}-{}.txt",
        std::process::id(),
        args.join("")
    ));
    let _ = std::fs::remove_file(&file);
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo"));
    command
        .args(args)
        .arg("--results")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The demo (and with it its servers) ends with this test.
    // SAFETY: only prctl(2) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("run the demo");
    let started = Instant::now();
    while child.try_wait().expect("wait for the demo").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo took more than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("the demo's output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let results = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "no results from the demo ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&file);
    let mut run = Run {
        verdicts: Vec::new(),
        requests: Vec::new(),
        success: output.status.success(),
        stdout,
    };
    for line in results.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["step", id, verdict, why] => {
                run.verdicts
                    .push((id.to_owned(), verdict.to_owned(), why.to_owned()))
            }
            ["requests", ref counts @ ..] => {
                for count in counts {
                    let (name, n) = count.split_once('=').expect("name=count");
                    run.requests
                        .push((name.to_owned(), n.parse().expect("a count")));
                }
            }
            _ => panic!("a line the test cannot read: {line:?}"),
        }
    }
    run
}

fn check(args: &[&str]) {
    let run = demo(args);
    let ids: Vec<&str> = run.verdicts.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, STEPS, "{}", run.stdout);
    for (id, verdict, why) in &run.verdicts {
        assert_eq!(verdict, "held", "step {id}: {why}\n{}", run.stdout);
    }
    let count = |name: &str| {
        run.requests
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no count {name}"))
    };
    assert!(count("sent") > 100, "{}", run.stdout);
    assert_eq!(count("answered"), count("sent"), "{}", run.stdout);
    assert_eq!(count("unanswered"), 0, "{}", run.stdout);
    assert_eq!(count("twice"), 0, "{}", run.stdout);
    assert!(
        run.success,
        "the demo exited with an error:\n{}",
        run.stdout
    );
    // Piped, the text is plain.
    assert!(!run.stdout.contains('\x1b'), "{}", run.stdout);
}

#[test]
fn the_demo_keeps_its_promises_with_the_module() {
    check(&[]);
}

#[test]
fn the_demo_keeps_its_promises_through_the_component() {
    check(&["--component"]);
}

/// A mistyped flag is named, with exit code 2, before anything starts.
#[test]
fn a_bad_argument_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--no-such-flag")
        .output()
        .expect("run the demo");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}
