//! Log lines to stderr, each with its level: as text, or with
//! `log_format = "json"` as one JSON object a line (journald and log
//! shippers read the fields, among them the core's events' data).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use client_proxy::core::Event;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

static MIN: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_level(level: Level) {
    MIN.store(level as u8, Ordering::Relaxed);
}

/// JSON lines (`true`) or text.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN.load(Ordering::Relaxed)
}

pub fn log(level: Level, message: &str) {
    if enabled(level) {
        eprintln!("{}", line(level, message, None));
    }
}

/// One of the core's events.
pub fn event(event: &Event) {
    let level = from_core(event.level());
    if enabled(level) {
        eprintln!("{}", line(level, &event.to_string(), Some(event)));
    }
}

fn line(level: Level, message: &str, event: Option<&Event>) -> String {
    if !JSON.load(Ordering::Relaxed) {
        return format!("{}: {message}", level.as_str());
    }
    let mut object = Map::new();
    object.insert("level".into(), level.as_str().into());
    object.insert("message".into(), message.into());
    if let Some(event) = event {
        object.insert("event".into(), event.name().into());
        for (name, value) in event.fields() {
            object.insert(name.into(), Value::String(value));
        }
    }
    Value::Object(object).to_string()
}

/// The core's levels.
pub fn from_core(level: client_proxy::core::Level) -> Level {
    match level {
        client_proxy::core::Level::Debug => Level::Debug,
        client_proxy::core::Level::Info => Level::Info,
        client_proxy::core::Level::Warn => Level::Warn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client_proxy::core::EjectReason;

    #[test]
    fn an_event_is_a_json_object_with_its_fields_or_a_text_line() {
        let ejected = Event::Ejected {
            jid: "svc@example/a".into(),
            seconds: 30,
            reason: EjectReason::NotMe,
        };
        let text = line(Level::Warn, &ejected.to_string(), Some(&ejected));
        assert!(
            text.starts_with("warn: Ejected svc@example/a for 30 s"),
            "{text}"
        );
        JSON.store(true, Ordering::Relaxed);
        let json: Value = serde_json::from_str(&line(Level::Warn, "w\"x", Some(&ejected))).unwrap();
        JSON.store(false, Ordering::Relaxed);
        assert_eq!(json["event"], "ejected");
        assert_eq!(json["jid"], "svc@example/a");
        assert_eq!(json["seconds"], "30");
        assert_eq!(json["reason"], "not_me");
        assert_eq!(json["message"], "w\"x");
    }
}
