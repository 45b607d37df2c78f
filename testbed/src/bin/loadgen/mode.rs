//! Where a phase's requests go: straight to the implementing client, to
//! the fixture's component, to one of the spawned server's components with
//! a choice of resource of its own, or to the standalone component binary.

/// Where a phase's requests go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// Straight to a resource of the default implementing client.
    Direct,
    /// To the default component (`--proxy`).
    Proxied,
    /// To the spawned server's component with this choice of resource.
    Balanced(Strategy),
    /// To the standalone component binary (`client-proxy-component`) on
    /// the spawned server's component port, [`COMPONENT`].
    Component,
}

/// The external component's domain: as long as the strategies'
/// components, so the stanzas are the same size.
pub(crate) const COMPONENT: &str = "proxy-cmp.localhost";
/// Its target account.
pub(crate) const COMPONENT_SERVICE: &str = "svc-cmp@localhost";
/// Its `component_secret`.
pub(crate) const COMPONENT_SECRET: &str = "loadgen-component-secret";

impl Mode {
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "direct" => Mode::Direct,
            "proxied" => Mode::Proxied,
            "random" => Mode::Balanced(Strategy::Random),
            "round_robin" => Mode::Balanced(Strategy::RoundRobin),
            "least_in_flight" | "lif" => Mode::Balanced(Strategy::LeastInFlight),
            "sticky" => Mode::Balanced(Strategy::Sticky),
            "component" => Mode::Component,
            other => {
                return Err(format!(
                    "takes direct, proxied, random, round_robin, least_in_flight, \
                     sticky and component, not {other:?}"
                ))
            }
        })
    }

    /// Its name in the phase table (at most 8 characters).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
            Mode::Balanced(Strategy::Random) => "random",
            Mode::Balanced(Strategy::RoundRobin) => "rrobin",
            Mode::Balanced(Strategy::LeastInFlight) => "lif",
            Mode::Balanced(Strategy::Sticky) => "sticky",
            Mode::Component => "compnt",
        }
    }

    /// Its name in titles.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Mode::Balanced(Strategy::RoundRobin) => "round_robin",
            Mode::Balanced(Strategy::LeastInFlight) => "least_in_flight",
            Mode::Component => "component",
            other => other.name(),
        }
    }
}

/// A component's choice of resource (docs/behaviour.md, D3, D4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Random,
    RoundRobin,
    LeastInFlight,
    /// `client_proxy_sticky = "requester"` (the balance stays random).
    Sticky,
}

impl Strategy {
    /// Three letters, in its component's and its target account's names.
    fn code(self) -> &'static str {
        match self {
            Strategy::Random => "rnd",
            Strategy::RoundRobin => "rrb",
            Strategy::LeastInFlight => "lif",
            Strategy::Sticky => "stk",
        }
    }

    pub(crate) fn component(self) -> String {
        format!("proxy-{}.localhost", self.code())
    }

    pub(crate) fn service(self) -> String {
        format!("svc-{}@localhost", self.code())
    }

    /// The option under its `Component` block, besides `target_address`.
    pub(crate) fn option(self) -> &'static str {
        match self {
            Strategy::Random => "client_proxy_balance = \"random\"",
            Strategy::RoundRobin => "client_proxy_balance = \"round_robin\"",
            Strategy::LeastInFlight => "client_proxy_balance = \"least_in_flight\"",
            Strategy::Sticky => "client_proxy_sticky = \"requester\"",
        }
    }
}
