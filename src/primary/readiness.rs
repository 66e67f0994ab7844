//! When a worker counts as ready: the rule of `readiness` for app workers, and of the agent's
//! own `readiness` for the agent. A worker becomes ready once; what follows (a reload's swap, the
//! cluster coming up) is the supervision's.

use super::child_command::WorkerKind;
use super::options::{AgentReadiness, Readiness};

/// What a worker did that may make it ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Node's `online`: its main module is running.
    Online,
    /// Node's `listening`: a server of its listens.
    Listening,
    /// It said 'ready' (`rcluster.ready()`, `process.send('ready')`).
    SaidReady,
    /// The child runtime reports that the agent's main module has run.
    AgentStarted,
}

/// Whether `sign` makes a worker of `kind` ready. `agent`: the agent's readiness, if there is an
/// agent.
pub fn is_ready_by(
    sign: Sign,
    kind: WorkerKind,
    apps: Readiness,
    agent: Option<AgentReadiness>,
) -> bool {
    match (kind, sign) {
        // An agent may always say it is ready.
        (WorkerKind::Agent, Sign::SaidReady) => true,
        (WorkerKind::Agent, Sign::AgentStarted) => agent == Some(AgentReadiness::Started),
        (WorkerKind::Agent, _) => false,
        (WorkerKind::App, Sign::Online) => apps == Readiness::Online,
        (WorkerKind::App, Sign::Listening) => apps == Readiness::Listening,
        (WorkerKind::App, Sign::SaidReady) => apps == Readiness::Message,
        (WorkerKind::App, Sign::AgentStarted) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_workers_follow_readiness_and_the_agent_its_own() {
        use Sign::*;
        let app = |sign, readiness| is_ready_by(sign, WorkerKind::App, readiness, None);
        assert!(app(Listening, Readiness::Listening));
        assert!(!app(Online, Readiness::Listening));
        assert!(app(Online, Readiness::Online));
        assert!(!app(SaidReady, Readiness::Online));
        assert!(app(SaidReady, Readiness::Message));
        assert!(!app(AgentStarted, Readiness::Message));
        let agent = |sign, readiness| {
            is_ready_by(sign, WorkerKind::Agent, Readiness::Online, Some(readiness))
        };
        assert!(agent(AgentStarted, AgentReadiness::Started));
        assert!(!agent(AgentStarted, AgentReadiness::Message));
        assert!(agent(SaidReady, AgentReadiness::Started));
        assert!(agent(SaidReady, AgentReadiness::Message));
        assert!(!agent(Online, AgentReadiness::Started));
        assert!(!agent(Listening, AgentReadiness::Message));
    }
}
