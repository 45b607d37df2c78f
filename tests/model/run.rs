//! One case of the model test: an event at a time, to the core and to the
//! reference model, with what the core did checked against what the model
//! allows.

use super::*;

impl Run {
    pub(super) fn new(setup: Setup, seed: u64) -> Run {
        let now = Time::from_micros(1);
        Run {
            proxy: Proxy::new(config(&setup), seed).unwrap(),
            model: Model::new(setup, now),
            logged: Vec::new(),
        }
    }

    pub(super) fn attempts(&self) -> u32 {
        self.model.setup.attempts
    }

    /// Calls into the core at the model's `now`; whatever the event, the
    /// verdict may forward from the target only what A8, M2 and O1 allow.
    pub(super) fn handle(
        &mut self,
        s: Stanza<'_>,
        payload: Option<Payload>,
    ) -> Result<Verdict, TestCaseError> {
        self.model.readmit();
        let verdict = self.proxy.handle(s, self.model.now, || payload);
        self.guard(&s, &verdict)?;
        Ok(verdict)
    }

    /// The actions the last call queued; log lines are kept for
    /// [`check_logs`](Self::check_logs).
    pub(super) fn actions(&mut self) -> Vec<Action<Payload>> {
        let mut actions = Vec::new();
        while let Some(action) = self.proxy.poll_action() {
            match action {
                Action::Log(report) => self.logged.push(report),
                a => actions.push(a),
            }
        }
        actions
    }

    /// The reports of a step are those the model expects: ejections (D6,
    /// D7) and readmissions (D8) with their lengths and reasons, filtered
    /// resources (D1). No other report may be of those kinds; reports of
    /// anything else (presence, settled requests, refusals) are the
    /// operator's and not checked here.
    pub(super) fn check_logs(&mut self) -> Result<(), TestCaseError> {
        let mut logs = std::mem::take(&mut self.logged);
        let expected = std::mem::take(&mut self.model.logs);
        for report in &expected {
            let at = logs.iter().position(|r| r == report);
            prop_assert!(at.is_some(), "not reported: {report:?}; reported: {logs:?}");
            logs.remove(at.unwrap());
        }
        logs.retain(|r| {
            matches!(
                r,
                Report::Ejected { .. } | Report::Readmitted { .. } | Report::Filtered { .. }
            )
        });
        prop_assert!(logs.is_empty(), "unexpected reports: {logs:?}");
        Ok(())
    }

    pub(super) fn step(&mut self, event: Event) -> Result<(), TestCaseError> {
        match event {
            Event::Online {
                resource,
                priority,
                show,
            } => {
                let r = resource_name(resource);
                let from = jid(&r);
                let s = Stanza::presence(None, &from, P).with_show(show, priority.into());
                prop_assert_eq!(self.handle(s, None)?, Verdict::Done);
                self.model.online(&r, priority, show);
                let actions = self.actions();
                self.send_waiting(actions)?;
            }
            Event::Reconnect { millis } => {
                self.model.now = self.model.now.saturating_add(Duration::from_millis(millis));
                self.reconnect()?;
            }
            Event::Offline { resource } => {
                let r = resource_name(resource);
                let from = jid(&r);
                let s = Stanza::presence(Some("unavailable"), &from, P);
                prop_assert_eq!(self.handle(s, None)?, Verdict::Done);
                self.model.online.remove(&r);
                let affected = self.held_by(|f| f.resource == r);
                let actions = self.actions();
                self.settle_lost(|asker| asker == r, affected, actions)?;
            }
            Event::AllOffline { how } => {
                let s = match how {
                    0 => Stanza::presence(Some("unavailable"), T, P),
                    1 => Stanza::presence(Some("error"), T, P),
                    _ => {
                        self.model.logs.push(Report::Unsubscribed {
                            target: T.to_string(),
                            host: P.to_string(),
                        });
                        Stanza::presence(Some("unsubscribed"), T, P)
                    }
                };
                prop_assert_eq!(self.handle(s, None)?, Verdict::Done);
                self.model.online.clear();
                let affected = self.held_by(|_| true);
                let actions = self.actions();
                self.settle_lost(|_| true, affected, actions)?;
            }
            Event::Request {
                requester: n,
                id,
                get,
                room,
                body,
            } => self.request(&requester(n), &format!("i{id}"), get, room, body)?,
            Event::Reply {
                resource,
                requester: n,
                id,
                answer,
            } => {
                let r = resource_name(resource);
                self.reply(&r, &requester(n), &format!("i{id}"), answer)?;
            }
            Event::Genuine { pick, answer } => {
                let mut keys: Vec<_> = (self.model.flights.iter())
                    .filter(|(_, f)| !f.waiting())
                    .map(|(k, _)| k.clone())
                    .collect();
                if keys.is_empty() {
                    return Ok(());
                }
                keys.sort();
                let (u, id) = keys[pick as usize % keys.len()].clone();
                let r = self.model.flights[&(u.clone(), id.clone())]
                    .resource
                    .clone();
                self.reply(&r, &u, &id, answer)?;
            }
            Event::Advance { millis } => {
                let later = Duration::from_millis(millis.into());
                self.advance(later)?;
            }
            Event::Readmission { jitter, decay } => {
                let now = self.model.now;
                let ends = self.model.records.values().map(|rec| rec.until());
                let target = if decay {
                    ends.max()
                        .map(|t| t.saturating_add(Duration::from_secs(600)))
                } else {
                    ends.filter(|&t| t > now).min()
                };
                let target = target.unwrap_or(now).as_micros() as i64 + i64::from(jitter) * 1000;
                let later = (target - now.as_micros() as i64).max(0) as u64;
                self.advance(Duration::from_micros(later))?;
            }
            Event::Deadline { jitter } => {
                let now = self.model.now.as_micros() as i64;
                let Some(due) = self.model.next_deadline() else {
                    return Ok(());
                };
                let later = due.as_micros() as i64 + i64::from(jitter) * 1000 - now;
                self.advance(Duration::from_micros(later.max(0) as u64))?;
            }
            Event::Reload(new) => self.reload(*new)?,
            Event::Message {
                requester: n,
                ty,
                to_resource,
            } => self.message(&requester(n), ty, to_resource)?,
            Event::TargetMessage { resource, to, ty } => {
                self.target_message(&resource_name(resource), to, ty)?
            }
            Event::Ask {
                resource,
                to,
                id,
                get,
            } => self.ask(&resource_name(resource), to, &format!("o{id}"), get)?,
            Event::AskAnswer { pick, how, error } => self.ask_answer(pick, how, error)?,
        }
        self.model.tidy();
        self.check_logs()?;
        self.check()
    }

    pub(super) fn held_by(&self, which: impl Fn(&Flight) -> bool) -> HashSet<Key> {
        self.model
            .flights
            .iter()
            .filter(|(_, f)| which(f))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A reload: the core takes the new options, and the model follows
    /// what a reload promises. A new timeout applies to requests accepted
    /// from now on; a request keeps the sticky key and the kept payload it
    /// was accepted with; everything else (filters, drain values, attempts,
    /// balance, limits, ejection threshold) applies at once.
    pub(super) fn reload(&mut self, mut new: Setup) -> Result<(), TestCaseError> {
        let old = &self.model.setup;
        (new.messages, new.outbound) = (old.messages, old.outbound);
        let in_flight = !self.model.flights.is_empty();
        if in_flight && new.timeout != old.timeout {
            self.model.saw("Reload: a new timeout, requests in flight");
        }
        if in_flight && new.attempts != old.attempts {
            self.model.saw("Reload: new attempts, requests in flight");
        }
        let states: Vec<_> = (self.model.online.keys())
            .map(|r| self.model.state(r))
            .collect();
        self.proxy.reconfigure(config(&new)).unwrap();
        self.model.setup = new;
        let changed = (self.model.online.keys())
            .zip(states)
            .any(|(r, before)| self.model.state(r) != before);
        if changed {
            self.model.saw("Reload: a resource's state changed");
        }
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        Ok(())
    }

    /// B1-B4, H4, H5: a request from `u`, with a sticky key from `room`
    /// and a payload of `body` (bytes, depth).
    pub(super) fn request(
        &mut self,
        u: &str,
        id: &str,
        get: bool,
        room: Option<u8>,
        body: (u32, u32),
    ) -> Result<(), TestCaseError> {
        let ty = if get { "get" } else { "set" };
        let key = (u.to_string(), id.to_string());
        let room = room.map(|n| ROOMS[n as usize]);
        let (bytes, depth) = body;
        let mut s = Stanza::iq(ty, u, P, id).with_body(Body::new(bytes as usize, depth));
        s.key = room;
        let verdict = self.handle(s, Some(key.clone()))?;
        let actions = self.actions();
        prop_assert!(actions.is_empty(), "{:?}", actions);
        let m = &mut self.model;
        let keep = m.setup.attempts > 1;
        let expected_error = if depth > m.setup.max_depth {
            m.saw("H5: too deep");
            Some((ErrorType::Modify, Condition::PolicyViolation))
        } else if m.flights.contains_key(&key) {
            Some((ErrorType::Cancel, Condition::Conflict))
        // B4 counts U's own requests only, not the service's to U (O4).
        } else if m.in_flight() >= m.setup.max_in_flight || m.per_bare(u) >= m.setup.per_requester {
            Some((ErrorType::Wait, Condition::ResourceConstraint))
        } else if keep && m.kept_bytes() + u64::from(bytes) > u64::from(m.setup.max_bytes) {
            m.saw("H4: over the bytes kept for retries");
            Some((ErrorType::Wait, Condition::ResourceConstraint))
        } else if m.none_would_serve() {
            Some((ErrorType::Cancel, Condition::ServiceUnavailable))
        } else {
            None
        };
        match (verdict, expected_error) {
            (Verdict::Reply(StanzaError(t, c)), Some((et, ec))) => {
                prop_assert_eq!((t, c), (et, ec));
                if c == Condition::ServiceUnavailable {
                    m.saw("B2: refused");
                }
            }
            (
                Verdict::Forward {
                    from,
                    to,
                    rtt: None,
                    id: None,
                },
                None,
            ) => {
                let r = resource_of(&to)?;
                let sticky = m.key_of(u, room);
                m.check_choice(&r, sticky, &[])?;
                let enc = from.strip_prefix(&format!("{P}/")).unwrap().to_string();
                m.shown(u, &enc)?;
                m.encoded.insert(u.to_string(), enc);
                *m.generation.entry(key.clone()).or_default() += 1;
                let deadline = m.now.saturating_add(m.setup.timeout());
                m.flights.insert(
                    key,
                    Flight {
                        resource: r.clone(),
                        get,
                        key: sticky,
                        kept: keep.then_some(u64::from(bytes)),
                        deadline,
                        sends: 1,
                        tried: vec![r],
                        not_me: Vec::new(),
                        relinked: 0,
                    },
                );
            }
            (v, e) => prop_assert!(false, "request {u}/{id}: got {v:?}, expected {e:?}"),
        }
        Ok(())
    }

    /// A reply from `r`: genuine if it is the resource the request is at now
    /// (A8, C1, C3, D5, D6), dropped otherwise (A9).
    pub(super) fn reply(
        &mut self,
        r: &str,
        u: &str,
        id: &str,
        answer: Answer,
    ) -> Result<(), TestCaseError> {
        let from = jid(r);
        let enc = self
            .model
            .encoded
            .get(u)
            .cloned()
            .unwrap_or_else(|| u.to_string());
        let to = format!("{P}/{enc}");
        let s = match answer {
            Answer::Result => Stanza::iq("result", &from, &to, id),
            Answer::Error(None) => Stanza::iq("error", &from, &to, id),
            Answer::Error(Some(c)) | Answer::NotMe(c) => {
                Stanza::iq("error", &from, &to, id).with_condition(c)
            }
            Answer::Bounce => {
                Stanza::iq("error", &from, &to, id).with_condition("recipient-unavailable")
            }
        };
        let verdict = self.handle(s, None)?;
        let key = (u.to_string(), id.to_string());
        let genuine = self
            .model
            .flights
            .get(&key)
            .is_some_and(|f| f.resource == r);
        let forwarded = |v: &Verdict| matches!(v, Verdict::Forward { from, to, rtt: Some(_), id: None } if (&**from, &**to) == (P, u));
        if !genuine {
            prop_assert_eq!(
                verdict,
                Verdict::Pass(DropReason::Unmatched),
                "a reply that matches nothing: {} {} {}",
                r,
                u,
                id
            );
            let actions = self.actions();
            prop_assert!(actions.is_empty(), "{:?}", actions);
            return Ok(());
        }
        match answer {
            Answer::Result | Answer::Error(_) => {
                prop_assert!(forwarded(&verdict), "{answer:?}: {verdict:?}");
                self.model.answered(r, true);
                let flight = self.model.answer(u, id)?;
                if let Answer::Result = answer {
                    // D6: each one that said "not me" to what r served.
                    for n in &flight.not_me {
                        self.model.eject(n, EjectReason::NotMe);
                    }
                }
                let actions = self.actions();
                prop_assert!(actions.is_empty(), "{:?}", actions);
            }
            Answer::NotMe(_) => {
                self.model.answered(r, false);
                let actions = self.actions();
                let f = &self.model.flights[&key];
                let again =
                    self.model.may_send_again(f) && !self.model.candidates(&f.tried).is_empty();
                if again {
                    prop_assert_eq!(&verdict, &Verdict::Done);
                    let [Action::Resend { payload, from, to }] = &actions[..] else {
                        return Err(TestCaseError::fail(format!(
                            "not me, with a candidate left: {actions:?}"
                        )));
                    };
                    prop_assert_eq!(payload, &key);
                    prop_assert_eq!(from, &format!("{P}/{enc}"));
                    let to = resource_of(to)?;
                    self.model.check_choice(&to, f.key, &f.tried)?;
                    if !f.get {
                        self.model.saw("D5: a set sent again");
                    }
                    self.model.resend(&key, &to, true);
                } else {
                    // A8: the last "not me" is the answer.
                    prop_assert!(forwarded(&verdict), "not me, no retry: {verdict:?}");
                    prop_assert!(actions.is_empty(), "{:?}", actions);
                    self.model.saw("A8: the last not-me forwarded");
                    self.model.answer(u, id)?;
                }
            }
            Answer::Bounce => {
                prop_assert_eq!(verdict, Verdict::Done);
                self.model.lost(r);
                let actions = self.actions();
                self.settle_lost(|_| false, HashSet::from([key]), actions)?;
            }
        }
        Ok(())
    }
}
