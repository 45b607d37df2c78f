//! The rows of `docs/behaviour.md` and the code that cites them agree.
//!
//! The document defines a row with a table line whose first cell is the
//! row's id: a capital letter of a family (A B C D H K L M O) and one or two
//! digits, such as `| D5 | ... |`.
//!
//! The source files looked at are the `.rs` and `.lua` files under `src/`,
//! `lua/`, `spec/`, `tests/`, `component/src/`, `component/tests/`,
//! `testbed/src/` and `testbed/tests/` (this file excepted). In them:
//!
//! - A row is *cited* where its id stands as a whole word (no letter, digit
//!   or `_` on either side) inside a comment or a string literal, for
//!   example `// C3: a get goes to another resource`, `"(M1-M5)"` in the
//!   component's `--help`, or a label such as `"D8: readmitted"` in the
//!   model test. Code outside comments and strings is not looked at (so an
//!   identifier, or a character literal such as `'\u{C0}'`, never counts),
//!   and only capitals count there (a lower-case `d5` in prose or data is not
//!   a citation). A test name cites the rows it starts with, as below. Test
//!   data that would read as a row id in a string must be written otherwise
//!   (in lower case, or with a prefix such as `q1`).
//! - A test is *named after* a row when its name starts with the row's id in
//!   lower case: a Rust function marked with an attribute that says `test`
//!   (`#[test]`, `#[tokio::test]`, ...) whose name starts with `d5_`, or with
//!   several ids, `a10_a11_a12_...`; or a busted `it("...")` or
//!   `describe("...")` in `spec/` whose description starts with the id and a
//!   colon, `it("d5: ...")`, or with several, `it("o1, o2: ...")`. A Rust
//!   function with such a name that is not a test still cites its rows.
//!
//! Two checks: every row cited exists in the document
//! ([`every_row_cited_is_in_the_document`]), and every row of the document
//! has a test named after it ([`every_row_of_the_document_has_a_test`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DOCUMENT: &str = "docs/behaviour.md";
const FAMILIES: &str = "ABCDHKLMO";
const SOURCES: [&str; 8] = [
    "src",
    "lua",
    "spec",
    "tests",
    "component/src",
    "component/tests",
    "testbed/src",
    "testbed/tests",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `s` as a row id (`D5`, `A12`) if it is one; letters in either case.
fn row_id(s: &str) -> Option<String> {
    let mut chars = s.chars();
    let letter = chars.next()?.to_ascii_uppercase();
    let digits: String = chars.collect();
    let ok = FAMILIES.contains(letter)
        && (1..=2).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| format!("{letter}{digits}"))
}

/// The rows the document defines, each with the line it is on.
fn document_rows() -> (BTreeMap<String, usize>, Vec<String>) {
    let path = root().join(DOCUMENT);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = BTreeMap::new();
    let mut twice = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix('|') else {
            continue;
        };
        let first = rest.split('|').next().unwrap_or("").trim();
        if first.starts_with(|c: char| c.is_ascii_uppercase()) {
            if let Some(id) = row_id(first) {
                if rows.insert(id.clone(), n + 1).is_some() {
                    twice.push(format!("{id} is defined twice ({DOCUMENT}:{})", n + 1));
                }
            }
        }
    }
    assert!(
        rows.len() > 40,
        "{DOCUMENT} defines only {} rows: is it the right document?",
        rows.len()
    );
    (rows, twice)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The capital row ids that stand as whole words in `text`.
fn ids_in_prose(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut ids = Vec::new();
    for i in 0..chars.len() {
        if !FAMILIES.contains(chars[i]) || (i > 0 && is_word(chars[i - 1])) {
            continue;
        }
        let digits = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let end = i + 1 + digits;
        if (1..=2).contains(&digits) && chars.get(end).is_none_or(|&c| !is_word(c)) {
            ids.push(chars[i..end].iter().collect());
        }
    }
    ids
}

/// The ids a Rust test name starts with: `a10_a11_a12_x` gives A10, A11, A12.
fn ids_of_fn_name(name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = name;
    while let Some((head, tail)) = rest.split_once('_') {
        match row_id(head).filter(|_| head.starts_with(|c: char| c.is_ascii_lowercase())) {
            Some(id) => ids.push(id),
            None => break,
        }
        rest = tail;
    }
    ids
}

/// The ids a busted description starts with: `"o1, o2: ..."` gives O1, O2.
fn ids_of_description(text: &str) -> Vec<String> {
    let Some((head, _)) = text.split_once(':') else {
        return Vec::new();
    };
    let parts: Vec<&str> = head
        .split([',', '/', '&', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "and")
        .collect();
    let ids: Vec<String> = parts.iter().filter_map(|p| row_id(p)).collect();
    if ids.is_empty() || ids.len() != parts.len() {
        return Vec::new();
    }
    ids
}

/// What one source file says about rows.
#[derive(Default)]
struct Findings {
    /// (id, line) for every id cited in a comment, a string or a test name.
    cited: Vec<(String, usize)>,
    /// (id, line) for every test named after a row.
    tests: Vec<(String, usize)>,
}

/// Counts lines while a lexer walks the characters of a file.
struct Cursor {
    chars: Vec<char>,
    i: usize,
    line: usize,
}

impl Cursor {
    fn new(text: &str) -> Self {
        Cursor {
            chars: text.chars().collect(),
            i: 0,
            line: 1,
        }
    }
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }
    fn starts(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(k, c)| self.peek(k) == Some(c))
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }
    fn prev(&self) -> Option<char> {
        self.i.checked_sub(1).map(|k| self.chars[k])
    }
}

/// Prose (a comment's or a string's text) and the line it starts on.
fn cite(findings: &mut Findings, text: &str, line: usize) {
    for (n, l) in (line..).zip(text.split('\n')) {
        for id in ids_in_prose(l) {
            findings.cited.push((id, n));
        }
    }
}

fn scan_rust(text: &str) -> Findings {
    let mut f = Findings::default();
    let mut c = Cursor::new(text);
    // Code since the last `;`, `{` or `}`: the attributes of the next item.
    let mut item = String::new();
    while let Some(ch) = c.peek(0) {
        let line = c.line;
        let after_word = c.prev().is_some_and(is_word);
        if c.starts("//") {
            let mut body = String::new();
            while let Some(ch) = c.peek(0).filter(|&ch| ch != '\n') {
                body.push(ch);
                c.bump();
            }
            cite(&mut f, &body, line);
        } else if c.starts("/*") {
            let (mut depth, mut body) = (0, String::new());
            loop {
                if c.starts("/*") {
                    depth += 1;
                    c.bump();
                    c.bump();
                } else if c.starts("*/") {
                    depth -= 1;
                    c.bump();
                    c.bump();
                    if depth == 0 {
                        break;
                    }
                } else {
                    match c.bump() {
                        Some(ch) => body.push(ch),
                        None => break,
                    }
                }
            }
            cite(&mut f, &body, line);
        } else if !after_word
            && (c.starts("r\"") || c.starts("r#") || c.starts("br\"") || c.starts("br#"))
        {
            // A raw string: r"...", r#"..."#, br"...".
            if ch == 'b' {
                c.bump();
            }
            c.bump();
            let mut hashes = 0;
            while c.peek(0) == Some('#') {
                hashes += 1;
                c.bump();
            }
            if c.peek(0) != Some('"') {
                continue; // `r#ident`: a raw identifier.
            }
            c.bump();
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let mut body = String::new();
            while c.peek(0).is_some() && !c.starts(&close) {
                body.push(c.bump().unwrap());
            }
            for _ in 0..close.chars().count() {
                c.bump();
            }
            cite(&mut f, &body, line);
        } else if ch == '"' {
            c.bump();
            let mut body = String::new();
            while let Some(ch) = c.bump() {
                match ch {
                    '\\' => {
                        c.bump();
                        body.push(' ');
                    }
                    '"' => break,
                    _ => body.push(ch),
                }
            }
            cite(&mut f, &body, line);
        } else if ch == '\'' {
            // A character literal is skipped; a lifetime is code.
            if c.peek(1) == Some('\\') {
                c.bump();
                c.bump();
                while let Some(ch) = c.bump() {
                    if ch == '\'' {
                        break;
                    }
                }
            } else if c.peek(2) == Some('\'') {
                c.bump();
                c.bump();
                c.bump();
            } else {
                c.bump();
                item.push('\'');
            }
        } else if is_word(ch) && !after_word {
            let mut word = String::new();
            while let Some(ch) = c.peek(0).filter(|&ch| is_word(ch)) {
                word.push(ch);
                c.bump();
            }
            if word == "fn" {
                while c.peek(0).is_some_and(char::is_whitespace) {
                    c.bump();
                }
                let mut name = String::new();
                while let Some(ch) = c.peek(0).filter(|&ch| is_word(ch)) {
                    name.push(ch);
                    c.bump();
                }
                let ids = ids_of_fn_name(&name);
                let is_test = item
                    .split("#[")
                    .skip(1)
                    .any(|attribute| attribute.split(']').next().unwrap_or("").contains("test"));
                for id in ids {
                    f.cited.push((id.clone(), line));
                    if is_test {
                        f.tests.push((id, line));
                    }
                }
                item.clear();
            } else {
                item.push_str(&word);
                item.push(' ');
            }
        } else {
            c.bump();
            if matches!(ch, ';' | '{' | '}') {
                item.clear();
            } else {
                item.push(ch);
            }
        }
    }
    f
}

/// The level of a Lua long bracket that starts here (`[[` is 0, `[==[` 2).
fn long_bracket(c: &Cursor) -> Option<usize> {
    if c.peek(0) != Some('[') {
        return None;
    }
    let level = (1..).take_while(|&k| c.peek(k) == Some('=')).count();
    (c.peek(level + 1) == Some('[')).then_some(level)
}

/// Reads a long bracket's body (the cursor at its first `[`).
fn read_long(c: &mut Cursor, level: usize) -> String {
    for _ in 0..level + 2 {
        c.bump();
    }
    let close = format!("]{}]", "=".repeat(level));
    let mut body = String::new();
    while c.peek(0).is_some() && !c.starts(&close) {
        body.push(c.bump().unwrap());
    }
    for _ in 0..close.len() {
        c.bump();
    }
    body
}

fn scan_lua(text: &str, busted: bool) -> Findings {
    let mut f = Findings::default();
    let mut c = Cursor::new(text);
    // The code just before a string: `it(` or `describe(` makes it a test.
    let mut code = String::new();
    while let Some(ch) = c.peek(0) {
        let line = c.line;
        if c.starts("--") {
            c.bump();
            c.bump();
            let body = match long_bracket(&c) {
                Some(level) => read_long(&mut c, level),
                None => {
                    let mut body = String::new();
                    while let Some(ch) = c.peek(0).filter(|&ch| ch != '\n') {
                        body.push(ch);
                        c.bump();
                    }
                    body
                }
            };
            cite(&mut f, &body, line);
            continue;
        }
        let body = if let Some(level) = long_bracket(&c) {
            read_long(&mut c, level)
        } else if ch == '"' || ch == '\'' {
            c.bump();
            let mut body = String::new();
            while let Some(x) = c.bump() {
                match x {
                    '\\' => {
                        c.bump();
                        body.push(' ');
                    }
                    x if x == ch => break,
                    '\n' => break,
                    _ => body.push(x),
                }
            }
            body
        } else {
            c.bump();
            code.push(ch);
            continue;
        };
        let head = code.trim_end();
        let named = ["it(", "describe("].iter().any(|call| {
            head.strip_suffix(call)
                .is_some_and(|before| !before.ends_with(is_word) && !before.ends_with('.'))
        });
        if busted && named {
            for id in ids_of_description(&body) {
                f.cited.push((id.clone(), line));
                f.tests.push((id, line));
            }
        } else {
            cite(&mut f, &body, line);
        }
        code.clear();
    }
    f
}

/// Every source file looked at, with what it says.
fn sources() -> Vec<(String, Findings)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "lua") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for dir in SOURCES {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let this = root.join(file!());
    files
        .into_iter()
        .filter(|p| *p != this && !p.ends_with("tests/behaviour.rs"))
        .map(|path| {
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let findings = if name.ends_with(".rs") {
                scan_rust(&text)
            } else {
                scan_lua(&text, name.starts_with("spec/"))
            };
            (name, findings)
        })
        .collect()
}

#[test]
fn every_row_cited_is_in_the_document() {
    let (rows, twice) = document_rows();
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, findings) in sources() {
        for (id, line) in findings.cited {
            if !rows.contains_key(&id) {
                unknown
                    .entry(id)
                    .or_default()
                    .push(format!("{file}:{line}"));
            }
        }
    }
    let mut problems = twice;
    for (id, places) in &unknown {
        problems.push(format!(
            "{id} is cited but {DOCUMENT} has no such row: {}",
            places.join(", ")
        ));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_row_of_the_document_has_a_test() {
    let (rows, _) = document_rows();
    let tested: BTreeSet<String> = sources()
        .into_iter()
        .flat_map(|(_, findings)| findings.tests.into_iter().map(|(id, _)| id))
        .collect();
    let mut untested: Vec<(&String, &usize)> = rows
        .iter()
        .filter(|(id, _)| !tested.contains(*id))
        .collect();
    untested.sort_by_key(|(id, _)| (id.chars().next(), id[1..].parse::<u32>().ok()));
    let untested: Vec<String> = untested
        .into_iter()
        .map(|(id, line)| format!("{id} ({DOCUMENT}:{line})"))
        .collect();
    assert!(
        untested.is_empty(),
        "\n{} row(s) of {DOCUMENT} have no test named after them: {}\n",
        untested.len(),
        untested.join(", ")
    );
}

#[test]
fn the_readers_find_what_they_should() {
    assert_eq!(
        ids_in_prose("C3: see D1-D4, A8's, and 0xD5, DH1, H10a"),
        ["C3", "D1", "D4", "A8"]
    );
    assert_eq!(
        ids_of_fn_name("a10_a11_a12_the_target"),
        ["A10", "A11", "A12"]
    );
    assert_eq!(ids_of_fn_name("c2_a_deadline"), ["C2"]);
    assert!(ids_of_fn_name("life_cycle_x").is_empty());
    assert_eq!(
        ids_of_description("o1, o2: leave with a new id"),
        ["O1", "O2"]
    );
    assert!(ids_of_description("a request: h5").is_empty());
    let rust = scan_rust(
        "// B1 here\n#[tokio::test(flavor = \"x\")]\nasync fn d5_not_me() {}\nfn a8_helper() { let c = '\\u{C0}'; let s = \"M2\"; }\n",
    );
    let cited: Vec<_> = rust
        .cited
        .iter()
        .map(|(id, l)| format!("{id}@{l}"))
        .collect();
    assert_eq!(cited, ["B1@1", "D5@3", "A8@4", "M2@4"]);
    assert_eq!(rust.tests, [("D5".to_owned(), 3)]);
    let lua = scan_lua(
        "-- A2\nit(\"h4: bound\", function() local x = 'K9' end)\n--[[ L1 ]]\n",
        true,
    );
    let cited: Vec<_> = lua
        .cited
        .iter()
        .map(|(id, l)| format!("{id}@{l}"))
        .collect();
    assert_eq!(cited, ["A2@1", "H4@2", "K9@2", "L1@3"]);
    assert_eq!(lua.tests, [("H4".to_owned(), 2)]);
}
