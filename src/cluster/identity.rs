//! What a data dir remembers of the quorum it was formed in: this node's id and the voter
//! set, recorded on the first clustered start in `__spate_meta/quorum`, and checked on every
//! later start, so that a node never joins a quorum with another node's log or a log of
//! another quorum. The decision (`check`) is pure; `load` and `record` do the file I/O at
//! start-up, before any executor runs.
//!
//! ```text
//!   node-id=2
//!   voters=1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293
//! ```

use std::io::Write;
use std::path::Path;

use crate::model::quorum::QuorumVoters;
use crate::model::NodeId;

pub const QUORUM_FILE: &str = "quorum";

/// The recorded (or given) identity: node id and the canonical voters text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    pub voters: String,
}

impl Identity {
    pub fn new(node_id: NodeId, voters: &QuorumVoters) -> Identity {
        Identity { node_id, voters: voters.to_string() }
    }

    fn to_text(&self) -> String {
        format!("node-id={}\nvoters={}\n", self.node_id, self.voters)
    }

    fn parse(text: &str) -> Option<Identity> {
        let mut node_id = None;
        let mut voters = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("node-id", value)) => node_id = value.trim().parse::<i32>().ok(),
                Some(("voters", value)) => voters = Some(value.trim().to_string()),
                _ => {}
            }
        }
        Some(Identity { node_id: NodeId(node_id?), voters: voters? })
    }
}

/// What start-up must do about the data dir's identity.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to record or check (a single node on a single-node data dir, or the same
    /// identity as recorded).
    Proceed,
    /// A first clustered start: record the identity.
    Record,
}

/// Compares the identity recorded in `dir` with the one this start is given (None: a single
/// node). The error is one sentence naming both and the fix.
pub fn check(
    dir: &Path,
    recorded: Option<&Identity>,
    given: Option<&Identity>,
) -> Result<Decision, String> {
    let dir = dir.display();
    match (recorded, given) {
        (None, None) => Ok(Decision::Proceed),
        (None, Some(_)) => Ok(Decision::Record),
        (Some(recorded), None) => Err(format!(
            "data dir {dir} belongs to node {} of the quorum {}; start it with --node-id {} \
             --controller-quorum-voters {} or use another --data-dir",
            recorded.node_id, recorded.voters, recorded.node_id, recorded.voters
        )),
        (Some(recorded), Some(given)) if recorded.node_id != given.node_id => Err(format!(
            "data dir {dir} belongs to node {} but --node-id is {}; start it with --node-id {} \
             or give node {} another --data-dir",
            recorded.node_id, given.node_id, recorded.node_id, given.node_id
        )),
        (Some(recorded), Some(given)) if recorded.voters != given.voters => Err(format!(
            "data dir {dir} was formed with --controller-quorum-voters {} but this start gives \
             {}; start it with {} or use another --data-dir",
            recorded.voters, given.voters, recorded.voters
        )),
        (Some(_), Some(_)) => Ok(Decision::Proceed),
    }
}

/// Reads the recorded identity from the meta dir, if any.
pub fn load(meta_dir: &Path) -> Result<Option<Identity>, String> {
    let path = meta_dir.join(QUORUM_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Identity::parse(&text).map(Some).ok_or_else(|| {
            format!("{} is damaged; restore it or use another --data-dir", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {} ({e}); check the data dir", path.display())),
    }
}

/// Records `identity` durably: temporary file, fsync, rename, fsync of the directory.
pub fn record(meta_dir: &Path, identity: &Identity) -> std::io::Result<()> {
    let temporary = meta_dir.join(format!("{QUORUM_FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(identity.to_text().as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, meta_dir.join(QUORUM_FILE))?;
    std::fs::File::open(meta_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: i32, voters: &str) -> Identity {
        Identity::new(NodeId(id), &QuorumVoters::parse(voters).unwrap())
    }

    #[test]
    fn decisions() {
        let dir = Path::new("/d");
        let one = identity(1, "1@h:1,2@h:2,3@h:3");
        assert_eq!(check(dir, None, None), Ok(Decision::Proceed));
        assert_eq!(check(dir, None, Some(&one)), Ok(Decision::Record));
        assert_eq!(check(dir, Some(&one), Some(&one)), Ok(Decision::Proceed));
        let reordered = identity(1, "3@h:3,1@h:1,2@h:2");
        assert_eq!(check(dir, Some(&one), Some(&reordered)), Ok(Decision::Proceed));
        let error = check(dir, Some(&one), Some(&identity(2, "1@h:1,2@h:2,3@h:3"))).unwrap_err();
        assert!(error.contains("belongs to node 1 but --node-id is 2"), "{error}");
        assert!(error.contains("--node-id 1"), "{error}");
        let error = check(dir, Some(&one), Some(&identity(1, "1@h:1,2@h:2"))).unwrap_err();
        assert!(error.contains("1@h:1,2@h:2,3@h:3") && error.contains("gives 1@h:1,2@h:2"));
        let error = check(dir, Some(&one), None).unwrap_err();
        assert!(error.contains("--controller-quorum-voters 1@h:1,2@h:2,3@h:3"), "{error}");
    }

    #[test]
    fn the_record_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        let one = identity(3, "1@h:1,3@h:3");
        record(dir.path(), &one).unwrap();
        assert_eq!(load(dir.path()), Ok(Some(one)));
        std::fs::write(dir.path().join(QUORUM_FILE), "garbage").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("damaged"));
    }
}
