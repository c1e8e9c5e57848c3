//! The typed mesh between shards, on real glommio executors: a toy service on two shards
//! answers calls from its own shard and from the peer, serves a peer's requests in the order
//! they were sent (what produce admission relies on), answers posts with nothing, and
//! broadcasts reach every shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use spate::model::ShardId;
use spate::shard::mesh::{Envelope, Mesh, Served, Service};

/// Records what it served, in order; answers with its shard and the request.
struct Recorder {
    mesh: Mesh<Recorder>,
    served: RefCell<Vec<(u16, u32)>>,
}

#[derive(Debug)]
enum Ask {
    /// Answered at once.
    Echo(u32),
    /// Answered after a yield, so answers can overtake each other.
    Slow(u32),
}

impl Service for Recorder {
    type Request = Ask;
    type Response = (u16, u32);

    fn mesh(&self) -> &Mesh<Recorder> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, from: ShardId, request: Ask) -> Served<(u16, u32)> {
        let me = self.mesh.me().0;
        match request {
            Ask::Echo(n) => {
                self.served.borrow_mut().push((from.0, n));
                Served::Now((me, n))
            }
            Ask::Slow(n) => {
                // Served (admitted) now, in arrival order; answered later.
                self.served.borrow_mut().push((from.0, n));
                Served::Later(Box::pin(async move {
                    glommio::timer::sleep(std::time::Duration::from_millis(u64::from(n % 3))).await;
                    (me, n)
                }))
            }
        }
    }
}

type Builder = MeshBuilder<Envelope<Ask, (u16, u32)>, glommio::channels::channel_mesh::Full>;

#[test]
fn calls_posts_and_broadcasts_between_two_shards_keep_a_peers_order() {
    let builders: Vec<Builder> = vec![MeshBuilder::full(2, 64); 2];
    let builders = Arc::new(Mutex::new(builders));
    let results = Arc::new(Mutex::new(Vec::new()));
    let out = results.clone();
    let pool = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(2))
        .on_all_shards(move || {
            let builder = builders.lock().expect("lock").pop().expect("a builder per shard");
            let out = out.clone();
            async move {
                let (senders, receivers) = builder.join().await.expect("join");
                let service =
                    Rc::new(Recorder { mesh: Mesh::new(senders), served: RefCell::new(vec![]) });
                service.mesh.serve_peers(&service, receivers);
                let me = service.mesh.me();
                let peer = ShardId(1 - me.0);
                // Here: served without the mesh.
                assert_eq!(service.mesh.call(me, Ask::Echo(7)).await, Some((me.0, 7)));
                // The peer: 100 slow requests queued in order, answered in any order, served
                // in the order sent.
                let mut answers = Vec::new();
                for n in 0..100 {
                    answers.push(service.mesh.send(peer, Ask::Slow(n)).await.expect("queued"));
                }
                for (n, answer) in answers.into_iter().enumerate() {
                    assert_eq!(answer.await.expect("answered"), (peer.0, n as u32));
                }
                service.mesh.post(peer, Ask::Echo(1000)).await;
                let all = service.mesh.broadcast(|| Ask::Echo(2000)).await;
                assert_eq!(all, vec![Some((0, 2000)), Some((1, 2000))]);
                // Let the peer finish sending before this shard's service goes away.
                glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                let served = service.served.borrow().clone();
                out.lock().expect("lock").push((me.0, served));
            }
        })
        .expect("pool");
    pool.join_all();
    let results = results.lock().expect("lock");
    assert_eq!(results.len(), 2, "both shards finished");
    for (me, served) in results.iter() {
        let peer = 1 - me;
        let from_peer: Vec<u32> =
            served.iter().filter(|(from, _)| *from == peer).map(|(_, n)| *n).collect();
        let slow: Vec<u32> = from_peer.iter().copied().filter(|n| *n < 100).collect();
        assert_eq!(slow, (0..100).collect::<Vec<_>>(), "shard {me} served the peer in order");
        assert!(from_peer.contains(&1000), "shard {me} got the post");
        assert!(from_peer.contains(&2000), "shard {me} got the peer's broadcast");
        assert!(served.contains(&(*me, 7)) && served.contains(&(*me, 2000)));
    }
}
