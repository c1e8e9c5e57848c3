//! The controller quorum's voter set as the user writes it: Kafka's
//! `controller.quorum.voters` syntax, `id@host:port` separated by commas
//! (`1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293`). Pure: parsing and printing only,
//! names are resolved when a peer is dialled.

use std::fmt;

use super::NodeId;

/// Most voters a quorum may list. Kafka recommends 3 or 5; a Raft quorum larger than 9
/// only slows commits down.
pub const VOTERS_MAX: usize = 9;

/// One voter: its node id and the address of its controller listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Voter {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.id, self.host, self.port)
    }
}

/// The voter set, sorted by node id, ids unique and positive (Raft's id 0 means "none").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoters {
    voters: Vec<Voter>,
}

impl QuorumVoters {
    /// Parses `id@host:port,...`; the error is one sentence naming what is wrong.
    pub fn parse(text: &str) -> Result<QuorumVoters, String> {
        let mut voters = Vec::new();
        for part in text.split(',').map(str::trim) {
            let bad = || {
                format!(
                    "--controller-quorum-voters entry {part:?} must look like id@host:port \
                     (for example 1@127.0.0.1:9093)."
                )
            };
            let (id, address) = part.split_once('@').ok_or_else(bad)?;
            let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
            let id = id.trim().parse::<i32>().map_err(|_| bad())?;
            let port = port.parse::<u16>().map_err(|_| bad())?;
            if id <= 0 {
                return Err(format!(
                    "--controller-quorum-voters node id {id} must be positive (1 or more)."
                ));
            }
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            voters.push(Voter { id: NodeId(id), host, port });
        }
        voters.sort();
        if let Some(pair) = voters.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(format!(
                "--controller-quorum-voters lists node id {} twice; give each voter its own id.",
                pair[0].id
            ));
        }
        if voters.len() > VOTERS_MAX {
            return Err(format!(
                "--controller-quorum-voters lists {} voters; use at most {VOTERS_MAX}.",
                voters.len()
            ));
        }
        Ok(QuorumVoters { voters })
    }

    pub fn voters(&self) -> &[Voter] {
        &self.voters
    }

    pub fn get(&self, id: NodeId) -> Option<&Voter> {
        self.voters.iter().find(|voter| voter.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().map(|voter| voter.id)
    }
}

/// The canonical text (sorted by id), the form the data dir records.
impl fmt::Display for QuorumVoters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, voter) in self.voters.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{voter}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafkas_syntax_sorted() {
        let voters = QuorumVoters::parse("3@h3:9293, 1@127.0.0.1:9093,2@[::1]:9193").unwrap();
        let ids: Vec<i32> = voters.ids().map(|id| id.0).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(voters.get(NodeId(2)).unwrap().host, "::1");
        assert_eq!(voters.get(NodeId(3)).unwrap().port, 9293);
        assert_eq!(voters.to_string(), "1@127.0.0.1:9093,2@::1:9193,3@h3:9293");
        assert!(voters.get(NodeId(4)).is_none());
    }

    #[test]
    fn the_canonical_text_parses_back_to_the_same_set() {
        let voters = QuorumVoters::parse("2@b:2,1@a:1").unwrap();
        assert_eq!(QuorumVoters::parse(&voters.to_string()).unwrap(), voters);
    }

    #[test]
    fn bad_entries_give_one_sentence() {
        for bad in ["", "1", "1@host", "x@h:1", "1@h:x", "1@:9", "1@h:0", "0@h:1", "-1@h:1"] {
            let error = QuorumVoters::parse(bad).expect_err(bad);
            assert!(error.starts_with("--controller-quorum-voters"), "{error}");
            assert!(!error.contains('\n'));
        }
        let error = QuorumVoters::parse("1@a:1,1@b:2").unwrap_err();
        assert!(error.contains("twice"), "{error}");
        let many: Vec<String> = (1..=10).map(|i| format!("{i}@h:{i}")).collect();
        assert!(QuorumVoters::parse(&many.join(",")).unwrap_err().contains("at most"));
    }
}
