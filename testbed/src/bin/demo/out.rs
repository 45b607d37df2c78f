//! What a person reads: headings, short lines, quoted log and console
//! output, and a verdict per promise. Colours and a progress line only on
//! a terminal, so that the text piped to a file or a test is plain.

use std::io::{IsTerminal, Write};

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";
/// Back to the start of the line, and clear it.
const CLEAR_LINE: &str = "\r\x1b[2K";

pub struct Out {
    tty: bool,
    /// A progress line is on screen, to be cleared before the next line.
    progress: bool,
}

impl Out {
    pub fn new() -> Out {
        Out {
            tty: std::io::stdout().is_terminal(),
            progress: false,
        }
    }

    fn styled(&self, style: &str, text: &str) -> String {
        if self.tty {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn print(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.progress {
            let _ = write!(stdout, "{CLEAR_LINE}");
            self.progress = false;
        }
        let _ = writeln!(stdout, "{text}");
    }

    /// Text at the left margin.
    pub fn para(&mut self, text: &str) {
        self.print(text);
    }

    pub fn blank(&mut self) {
        self.print("");
    }

    /// A step's heading.
    pub fn heading(&mut self, number: usize, text: &str) {
        let heading = self.styled(BOLD, &format!("{number}. {text}"));
        self.print("");
        self.print(&heading);
    }

    /// A line of the step's story.
    pub fn line(&mut self, text: &str) {
        self.print(&format!("   {text}"));
    }

    /// Lines that a program wrote (a log line, the console's answer),
    /// indented and marked off from the story.
    pub fn quote(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // Prosody's log separates its fields with tabs.
            let line = self.styled(DIM, &format!("| {}", line.replace('\t', "  ")));
            self.print(&format!("     {line}"));
        }
    }

    /// Whether a promise held.
    pub fn verdict(&mut self, held: bool, text: &str) {
        let mark = if held {
            self.styled(GREEN, "✓")
        } else {
            self.styled(RED, "✗ broken:")
        };
        self.print(&format!("   {mark} {text}"));
    }

    /// What is going on right now, on one line that the next output
    /// replaces; nothing unless stdout is a terminal.
    pub fn progress(&mut self, text: &str) {
        if !self.tty {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "{CLEAR_LINE}   {}", self.styled(DIM, text));
        let _ = stdout.flush();
        self.progress = true;
    }
}
