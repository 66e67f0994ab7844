//! The names of a namespace's keys and channels. Each carries the hash tag `{ns}` so that all of
//! them share one slot and a script may touch them together.

pub(crate) struct Keys {
    /// ZSET of live members, scored by their expiry (ms, Redis clock).
    pub hosts: String,
    /// ZSET of members that left gracefully, kept one host timeout so that the others can tell a
    /// leave from a timeout.
    pub left: String,
    /// The namespace's generation: if it changes, Redis lost its data.
    pub generation: String,
    /// Pub/sub channel of leave notices.
    pub control: String,
    /// The broadcast stream.
    pub broadcast: String,
    /// Prefix of the per-member hash (`<prefix><member>`).
    pub member_prefix: String,
    /// The agent lease (`agent: { scope: 'cluster' }`): `<epoch> <host> <token>`, PX = lease.
    pub agent: String,
    /// The counter of agent epochs, raised by each acquisition of the lease.
    pub agent_epoch: String,
    inbox_prefix: String,
    claim_prefix: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        let base = format!("rc:{{{namespace}}}:");
        Keys {
            hosts: format!("{base}hosts"),
            left: format!("{base}left"),
            generation: format!("{base}gen"),
            control: format!("{base}ctl"),
            broadcast: format!("{base}bcast"),
            member_prefix: format!("{base}h:"),
            agent: format!("{base}agent"),
            agent_epoch: format!("{base}agent:epoch"),
            inbox_prefix: format!("{base}in:"),
            claim_prefix: format!("{base}claim:"),
        }
    }

    pub fn member_hash(&self, member: &str) -> String {
        format!("{}{member}", self.member_prefix)
    }

    pub fn inbox(&self, host: &str) -> String {
        format!("{}{host}", self.inbox_prefix)
    }

    /// The claim on a consume sent to another host (src/remote/claims.rs): `<call>` names it.
    pub fn claim(&self, call: &str) -> String {
        format!("{}{call}", self.claim_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_hash_tag() {
        let keys = Keys::new("shop");
        for name in [
            &keys.hosts,
            &keys.left,
            &keys.generation,
            &keys.control,
            &keys.broadcast,
            &keys.agent,
            &keys.agent_epoch,
            &keys.member_hash("web/01"),
            &keys.inbox("web"),
            &keys.claim("web/01/2/3"),
        ] {
            assert!(name.starts_with("rc:{shop}:"), "{name}");
        }
        assert_eq!(keys.inbox("web"), "rc:{shop}:in:web");
        assert_eq!(keys.member_hash("web/01"), "rc:{shop}:h:web/01");
    }
}
