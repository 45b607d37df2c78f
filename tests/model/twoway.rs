//! Messages both ways (M1-M5) and the requests that the service starts
//! (O1-O5), in the model: whom the target talks with and under which
//! names, and what it has asked and not yet had answered.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use client_proxy::core::{
    Condition, DropReason, ErrorType, Kind, Stanza, StanzaError, Time, Verdict,
};
use proptest::prelude::*;

use super::contract::{is_opaque_token, name_hash, rendezvous, travels_verbatim, RESOURCEPART_MAX};
use super::events::{requester, Addr, Forgery, MessageType, REQUESTERS};
use super::reference::{jid, Model};
use super::{bare, resource_of, Run, P, T};

/// A token that no requester or peer has.
const NOBODY: &str = "@0000";

/// A request of the service's in flight, under the resource that asked and
/// the id it gave.
#[derive(Clone, Debug)]
pub struct Out {
    pub u: String,
    /// The id P gave it towards U.
    pub new_id: String,
    /// P/enc(U) as the target wrote it.
    pub addr: String,
    /// It named U as the core names U as a requester: U itself, or U's
    /// token as a requester (not as a peer).
    pub as_requester: bool,
    pub deadline: Time,
}

/// Someone the target exchanges messages with, as the core keeps them: a
/// peer is forgotten, lazily, when a message to or from anyone finds it
/// quiet for a timeout.
#[derive(Debug)]
pub struct Peer {
    /// Its token, once the core has shown it (for a U that is no resource).
    pub token: Option<String>,
    pub touched: Time,
    /// The resource that last sent it a message (M2), and when.
    pub last: Option<(String, Time)>,
}

#[derive(Default)]
pub struct TwoWay {
    pub outbound: HashMap<(String, String), Out>,
    /// Requests of the service's accepted, and those that ended.
    pub accepted: u64,
    pub settled: u64,
    /// For each U that is no resource and is held as a requester (a
    /// request from it or to it in flight): its token, once shown.
    pub tokens: HashMap<String, Option<String>>,
    pub peers: HashMap<String, Peer>,
    /// The last token of each peer forgotten.
    pub stale: HashMap<String, String>,
    /// (U, new id) of the last requests of the service's that ended.
    pub done: Vec<(String, String)>,
}

fn error(ty: ErrorType, condition: Condition) -> Verdict {
    Verdict::Reply(StanzaError(ty, condition))
}

fn enc_of(address: &str) -> Option<&str> {
    address.strip_prefix(P)?.strip_prefix('/')
}

impl TwoWay {
    /// The one ending of a request of the service's.
    fn finish(&mut self, key: &(String, String)) -> Result<Out, TestCaseError> {
        let out = self.outbound.remove(key);
        prop_assert!(out.is_some(), "{key:?} ended twice, or was never asked");
        let out = out.unwrap();
        self.settled += 1;
        self.done.push((out.u.clone(), out.new_id.clone()));
        if self.done.len() > 8 {
            self.done.remove(0);
        }
        Ok(out)
    }

    /// The core's touch of peer `u` at `now` (M1, M2): first it forgets
    /// those quiet for a timeout (the one in force now).
    fn touch(&mut self, u: &str, now: Time, timeout: Duration) -> &mut Peer {
        let stale = &mut self.stale;
        self.peers.retain(|jid, p| {
            let keep = now.saturating_since(p.touched) < timeout;
            if let (false, Some(t)) = (keep, &p.token) {
                stale.insert(jid.clone(), t.clone());
            }
            keep
        });
        let peer = self.peers.entry(u.to_string()).or_insert(Peer {
            token: None,
            touched: now,
            last: None,
        });
        peer.touched = now;
        peer
    }
}

impl Model {
    /// The next time after now at which something timed falls due: a
    /// request's deadline (C2, O3), the end of M3's window, or the time a
    /// quiet peer may be forgotten.
    pub fn next_deadline(&self) -> Option<Time> {
        let windows = (self.two.peers.values())
            .flat_map(|p| p.last.iter().map(|l| l.1).chain([p.touched]))
            .map(|at| at.saturating_add(self.setup.timeout()));
        (self.flights.values().map(|f| f.deadline))
            .chain(self.two.outbound.values().map(|o| o.deadline))
            .chain(windows)
            .filter(|&t| t > self.now)
            .min()
    }

    /// Requests in flight, both ways: what `client_proxy_max_in_flight`
    /// counts.
    pub fn in_flight(&self) -> u32 {
        (self.flights.len() + self.two.outbound.len()) as u32
    }

    /// U is held as a requester: a request from it or to it is in flight.
    pub fn held(&self, u: &str) -> bool {
        self.flights.keys().any(|(v, _)| v == u) || self.two.outbound.values().any(|o| o.u == u)
    }

    /// Forgets the tokens of requesters no longer held: the core's go with
    /// their last request.
    pub fn tidy(&mut self) {
        let gone: Vec<String> = (self.two.tokens.keys())
            .filter(|u| !self.held(u))
            .cloned()
            .collect();
        for u in gone {
            self.two.tokens.remove(&u);
        }
    }

    /// The core showed the target `enc` as enc(U) of requester `u`: U
    /// itself where it fits, else a token, the same while U is held.
    pub fn shown(&mut self, u: &str, enc: &str) -> Result<(), TestCaseError> {
        if travels_verbatim(u) {
            prop_assert_eq!(enc, u, "enc(U) is U verbatim");
            self.saw_verbatim(u);
            return Ok(());
        }
        prop_assert!(is_opaque_token(enc), "{} shown as {}, not a token", u, enc);
        self.saw_token(u);
        match self.two.tokens.get_mut(u) {
            Some(Some(t)) => prop_assert_eq!(&**t, enc, "the token of a requester changed"),
            Some(slot) => *slot = Some(enc.to_string()),
            None => {
                self.two.tokens.insert(u.to_string(), Some(enc.to_string()));
            }
        }
        Ok(())
    }

    fn saw_verbatim(&self, u: &str) {
        if u.len() == RESOURCEPART_MAX {
            self.saw("JAT: 1023 bytes, verbatim");
        }
        if !u.is_ascii() {
            self.saw("JAT: not ASCII, verbatim");
        }
    }

    fn saw_token(&self, u: &str) {
        self.saw(if u.len() > RESOURCEPART_MAX {
            "JAT: over 1023 bytes, a token"
        } else {
            "JAT: changed by resourceprep, a token"
        });
    }

    /// The same for a peer (M1, M3): U itself or its token as a peer.
    fn peer_shown(&mut self, u: &str, enc: &str) -> Result<(), TestCaseError> {
        if travels_verbatim(u) {
            prop_assert_eq!(enc, u, "enc(U) is U verbatim");
            return Ok(());
        }
        prop_assert!(is_opaque_token(enc), "{} shown as {}, not a token", u, enc);
        let peer = self.two.peers.get_mut(u).expect("a peer");
        match &peer.token {
            Some(t) => prop_assert_eq!(&**t, enc, "the token of a peer changed"),
            None => peer.token = Some(enc.to_string()),
        }
        Ok(())
    }

    /// What the target writes for `to`: P, or P/ and U or a token, live
    /// or stale, that it was shown.
    pub fn address(&self, to: Addr) -> String {
        let Addr::Enc { requester: n, via } = to else {
            return P.to_string();
        };
        let u = requester(n);
        let token = match via {
            0 => (self.two.tokens.get(&u).cloned().flatten())
                .or_else(|| self.encoded.get(&u).cloned()),
            1 => (self.two.peers.get(&u).and_then(|p| p.token.clone()))
                .or_else(|| self.two.stale.get(&u).cloned()),
            _ => None,
        };
        let enc = match token {
            _ if via == 2 => NOBODY.to_string(),
            _ if travels_verbatim(&u) => u,
            Some(t) => t,
            None => NOBODY.to_string(),
        };
        format!("{P}/{enc}")
    }

    /// Whom the core reads P/`enc` as: a JID as it is, or a token of a
    /// requester held or of a peer not forgotten.
    pub fn decode(&self, enc: &str) -> Option<String> {
        if !enc.starts_with('@') {
            return (!enc.is_empty()).then(|| enc.to_string());
        }
        let two = &self.two;
        (two.tokens.iter())
            .find(|(_, t)| t.as_deref() == Some(enc))
            .or_else(|| {
                (two.peers.iter())
                    .map(|(u, p)| (u, &p.token))
                    .find(|(_, t)| t.as_deref() == Some(enc))
            })
            .map(|(u, _)| u.clone())
    }

    /// O5: the requests of the service's that the resources `lost` asked
    /// are forgotten, with no answer.
    pub fn forget_asked_by(&mut self, lost: impl Fn(&str) -> bool) -> Result<(), TestCaseError> {
        let keys: Vec<_> = (self.two.outbound.keys())
            .filter(|(r, _)| lost(r))
            .cloned()
            .collect();
        for key in keys {
            self.two.finish(&key)?;
            self.saw("O5: forgotten with its resource");
        }
        Ok(())
    }
}

impl Run {
    /// Nothing from the target reaches anyone but the target through P
    /// except an answer to a request in flight at that very resource (A8),
    /// a message (M2) or a request (O1) where the options allow them; and
    /// nothing from anyone else goes anywhere but to the target. Checked
    /// on every verdict, before the model takes the step.
    pub(super) fn guard(&self, s: &Stanza<'_>, v: &Verdict) -> Result<(), TestCaseError> {
        let Verdict::Forward { from, to, rtt, id } = v else {
            return Ok(());
        };
        let to_t = to.starts_with(&format!("{T}/"));
        if bare(s.from) != T {
            prop_assert!(to_t, "{} reached {} through P: {:?}", s.from, to, v);
            return Ok(());
        }
        let m = &self.model;
        let r = s.from.strip_prefix(&format!("{T}/")).unwrap_or_default();
        let to_enc = enc_of(s.to).is_some();
        let allowed = &**from == P
            && match (s.kind, s.ty) {
                (Some(Kind::Iq), Some("result" | "error")) => {
                    let key = (to.to_string(), s.id.unwrap_or_default().to_string());
                    let at_r = m.flights.get(&key).is_some_and(|f| f.resource == r);
                    at_r && rtt.is_some() && id.is_none()
                }
                (Some(Kind::Message), None | Some("chat" | "normal" | "headline")) => {
                    m.setup.messages && to_enc && rtt.is_none() && id.is_none()
                }
                (Some(Kind::Iq), Some("get" | "set")) => {
                    m.setup.outbound && m.online.contains_key(r) && to_enc && id.is_some()
                }
                _ => false,
            };
        prop_assert!(
            allowed,
            "from {} to {}: {:?} is none of A8, M2, O1",
            s.from,
            s.to,
            v
        );
        Ok(())
    }

    /// M1, M3, M4, B6: a message from `u` to P, or P/x.
    pub(super) fn message(
        &mut self,
        u: &str,
        ty: MessageType,
        to_resource: bool,
    ) -> Result<(), TestCaseError> {
        let to = if to_resource {
            format!("{P}/x")
        } else {
            P.into()
        };
        let verdict = self.handle(Stanza::message(ty.attr(), u, &to), None)?;
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        let m = &mut self.model;
        let now = m.now;
        if ty == MessageType::Error {
            if !m.setup.messages {
                prop_assert_eq!(verdict, Verdict::Drop(DropReason::Unanswerable));
                return Ok(());
            }
            let back = (m.two.peers.get(u).and_then(|p| p.last.clone()))
                .filter(|(_, at)| now.saturating_since(*at) < m.setup.timeout());
            let Some((r, _)) = back else {
                prop_assert_eq!(verdict, Verdict::Drop(DropReason::Unmatched), "M3");
                return Ok(());
            };
            let Verdict::Forward {
                from,
                to,
                rtt: None,
                id: None,
            } = verdict
            else {
                return Err(TestCaseError::fail(format!("M3 to {r}: {verdict:?}")));
            };
            prop_assert_eq!(&*to, r.as_str(), "M3: back to the resource that wrote");
            m.peer_shown(u, enc_of(&from).unwrap_or_default())?;
            m.saw("M3: back to the resource that wrote");
            return Ok(());
        }
        let best = rendezvous(name_hash(bare(u)), &m.candidates(&[])).map(str::to_string);
        let refusal = if !m.setup.messages {
            Some(error(ErrorType::Cancel, Condition::FeatureNotImplemented))
        } else if ty == MessageType::Groupchat {
            Some(error(ErrorType::Cancel, Condition::BadRequest))
        } else if best.is_none() {
            m.saw("M1: no resource");
            Some(error(ErrorType::Cancel, Condition::ServiceUnavailable))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            prop_assert_eq!(verdict, refusal, "message from {}", u);
            return Ok(());
        }
        let Verdict::Forward {
            from,
            to,
            rtt: None,
            id: None,
        } = verdict
        else {
            return Err(TestCaseError::fail(format!("M1 from {u}: {verdict:?}")));
        };
        let (r, best) = (resource_of(&to)?, best.unwrap());
        // M1: rendezvous on U's bare JID among the eligible (D1), or the
        // ejected where no other is left (D9).
        prop_assert_eq!(&r, &best, "M1: the highest score for {}", bare(u));
        m.saw(if m.ejected(&r) {
            "M1: chosen while ejected (D9)"
        } else {
            "M1: to the conversation's resource"
        });
        let timeout = m.setup.timeout();
        m.two.touch(u, now, timeout);
        m.peer_shown(u, enc_of(&from).unwrap_or_default())
    }

    /// M2, M4, A11: a message from the target's resource `r`.
    pub(super) fn target_message(
        &mut self,
        r: &str,
        to: Addr,
        ty: MessageType,
    ) -> Result<(), TestCaseError> {
        let (from, to) = (jid(r), self.model.address(to));
        let verdict = self.handle(Stanza::message(ty.attr(), &from, &to), None)?;
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        let m = &mut self.model;
        let enc = enc_of(&to);
        let expected = if ty == MessageType::Error {
            Verdict::Drop(DropReason::Unanswerable)
        } else if !m.setup.messages {
            error(ErrorType::Cancel, Condition::FeatureNotImplemented)
        } else if ty == MessageType::Groupchat || enc.is_none() {
            m.saw("M4: bad request");
            error(ErrorType::Cancel, Condition::BadRequest)
        } else if let Some(u) = enc.and_then(|enc| m.decode(enc)) {
            m.saw(if travels_verbatim(&u) {
                "M2: to U"
            } else {
                "M2: to a token"
            });
            let now = m.now;
            let timeout = m.setup.timeout();
            m.two.touch(&u, now, timeout).last = Some((from.clone(), now));
            Verdict::Forward {
                from: Rc::from(P),
                to: Rc::from(u),
                rtt: None,
                id: None,
            }
        } else {
            m.saw("M2: nobody");
            error(ErrorType::Cancel, Condition::ItemNotFound)
        };
        prop_assert_eq!(verdict, expected, "message from {} to {}", from, to);
        Ok(())
    }

    /// O1, O4, A10, A12: a request of the service's, from `r`.
    pub(super) fn ask(
        &mut self,
        r: &str,
        to: Addr,
        id: &str,
        get: bool,
    ) -> Result<(), TestCaseError> {
        let (from, to) = (jid(r), self.model.address(to));
        let ty = if get { "get" } else { "set" };
        let verdict = self.handle(Stanza::iq(ty, &from, &to, id), None)?;
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        let m = &mut self.model;
        let u = enc_of(&to).and_then(|enc| m.decode(enc));
        let key = (r.to_string(), id.to_string());
        let refusal = if enc_of(&to).is_none() {
            Some((ErrorType::Cancel, Condition::BadRequest))
        } else if !m.setup.outbound {
            Some((ErrorType::Cancel, Condition::FeatureNotImplemented))
        } else if !m.online.contains_key(r) {
            Some((ErrorType::Cancel, Condition::ServiceUnavailable))
        } else if u.is_none() {
            Some((ErrorType::Cancel, Condition::ItemNotFound))
        } else if m.two.outbound.contains_key(&key) {
            m.saw("O4: conflict");
            Some((ErrorType::Cancel, Condition::Conflict))
        } else if m.in_flight() >= m.setup.max_in_flight {
            m.saw("O4: over the limit");
            Some((ErrorType::Wait, Condition::ResourceConstraint))
        } else {
            None
        };
        if let Some((ty, condition)) = refusal {
            prop_assert_eq!(verdict, error(ty, condition), "{} asks {}", from, to);
            return Ok(());
        }
        let Verdict::Forward {
            from: via,
            to: asked,
            rtt: None,
            id: Some(new_id),
        } = verdict
        else {
            return Err(TestCaseError::fail(format!("O1 {to}: {verdict:?}")));
        };
        let u = u.unwrap();
        prop_assert_eq!(
            (&*via, &*asked),
            (P, u.as_str()),
            "O1: to exactly U, from P"
        );
        let in_use = m.flights.keys().any(|(_, i)| **i == *new_id)
            || m.two.outbound.values().any(|o| *o.new_id == *new_id);
        prop_assert!(!in_use && &*new_id != id, "O1: id {new_id} is not new");
        let token = m.two.tokens.get(&u).cloned().flatten();
        let as_requester = travels_verbatim(&u) || token.as_deref() == enc_of(&to);
        if !travels_verbatim(&u) {
            m.two.tokens.entry(u.clone()).or_insert(None);
        }
        m.saw(if travels_verbatim(&u) {
            "O1: asked U"
        } else {
            "O1: asked a token"
        });
        let out = Out {
            u,
            new_id: new_id.to_string(),
            addr: to,
            as_requester,
            deadline: m.now.saturating_add(m.setup.timeout()),
        };
        m.two.outbound.insert(key, out);
        m.two.accepted += 1;
        Ok(())
    }

    /// O2, B5: an answer from a requester to P, genuine or not.
    pub(super) fn ask_answer(
        &mut self,
        pick: u8,
        how: Forgery,
        error: bool,
    ) -> Result<(), TestCaseError> {
        let two = &self.model.two;
        let mut keys: Vec<_> = two.outbound.keys().cloned().collect();
        keys.sort();
        let key = (!keys.is_empty()).then(|| keys[pick as usize % keys.len()].clone());
        let (mut to, mut dropped) = (P.to_string(), DropReason::Unanswerable);
        let mut own: Vec<_> = self.model.flights.keys().cloned().collect();
        own.sort();
        let (sender, id) = match (how, &key) {
            (Forgery::Stale, _) if !two.done.is_empty() => {
                two.done[pick as usize % two.done.len()].clone()
            }
            (Forgery::OwnRequest, _) if !own.is_empty() => own[pick as usize % own.len()].clone(),
            (Forgery::OwnRequest, _) => return Ok(()),
            (_, None) | (Forgery::Stale, _) => return Ok(()),
            (_, Some(k)) => {
                let o = &two.outbound[k];
                match how {
                    Forgery::OriginalId => (o.u.clone(), k.1.clone()),
                    Forgery::OtherSender(n) => {
                        let v = requester(n);
                        let v = if v == o.u {
                            requester((n + 1) % REQUESTERS)
                        } else {
                            v
                        };
                        (v, o.new_id.clone())
                    }
                    Forgery::MadeUp => (o.u.clone(), "cp0123456789abcdef".to_string()),
                    Forgery::FromTarget => {
                        (to, dropped) = (o.addr.clone(), DropReason::Unmatched);
                        (jid(&k.0), o.new_id.clone())
                    }
                    _ => (o.u.clone(), o.new_id.clone()),
                }
            }
        };
        let ty = if error { "error" } else { "result" };
        let verdict = self.handle(Stanza::iq(ty, &sender, &to, &id), None)?;
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        if how != Forgery::Genuine {
            // B5: not the answer to anything of the service's; A9 from T.
            prop_assert_eq!(verdict, Verdict::Pass(dropped), "{:?}", how);
            self.model.saw("O2/B5: not the answer, passed on");
            return Ok(());
        }
        let key = key.unwrap();
        let Verdict::Forward {
            from,
            to,
            rtt: Some(_),
            id: Some(original),
        } = verdict
        else {
            return Err(TestCaseError::fail(format!(
                "O2 from {sender}: {verdict:?}"
            )));
        };
        let asker = jid(&key.0);
        prop_assert_eq!(
            (&*to, &*original),
            (asker.as_str(), key.1.as_str()),
            "O2: back to the one that asked, under its id"
        );
        let out = self.model.two.finish(&key)?;
        self.asked_from(&out, &from)?;
        self.model.saw("O2: answered");
        Ok(())
    }

    /// O3, C4: an error to the resource that asked, from P/enc(U), under
    /// its id; `due` for a timeout, which may come only at the deadline.
    pub(super) fn asked_error(
        &mut self,
        from: &str,
        to: &str,
        id: &str,
        error: StanzaError,
        expected: StanzaError,
        due: bool,
    ) -> Result<(), TestCaseError> {
        let key = (resource_of(to)?, id.to_string());
        let out = self.model.two.finish(&key)?;
        prop_assert_eq!(error, expected, "to {:?}", key);
        let now = self.model.now;
        prop_assert!(!due || out.deadline <= now, "O3: {:?} timed out early", key);
        self.asked_from(&out, from)?;
        self.model.saw(if due {
            "O3: timed out"
        } else {
            "C4: asked, answered on unload"
        });
        Ok(())
    }

    /// An answer to a request of the service's comes from P/enc(U).
    fn asked_from(&mut self, out: &Out, from: &str) -> Result<(), TestCaseError> {
        let enc = enc_of(from);
        prop_assert!(enc.is_some(), "from {}, not P/enc(U)", from);
        if out.as_requester {
            self.model.shown(&out.u, enc.unwrap())?;
        }
        // O2, O3, C4: from the very address the target sent its request to,
        // whichever name of U it used (an error-reply is "from the address
        // it was sent to"; an IQ client matches a response by `from` and id).
        prop_assert_eq!(from, &out.addr, "O2/O3: not from the address asked");
        Ok(())
    }
}
