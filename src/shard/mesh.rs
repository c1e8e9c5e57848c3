//! The cross-core mesh, typed per service. Each service that lives on every shard (the
//! partitions, the controller, the group and transaction coordinators) owns one `Mesh` of
//! its own request and response types, so `shard` knows none of them: a new service is a
//! new module with a new mesh, not an edit here.
//!
//! One request goes to each shard a client request touches (never one per partition);
//! answers come back on the same mesh, matched by id. A peer's requests are served in the
//! order it sent them, and `Service::serve` runs synchronously before the next one is taken,
//! so what a service does before it returns (a produce's admission) keeps that order.
//!
//! Lifecycle: `Mesh::new` once the shard joined the service's channel mesh; `serve_peers`
//! once the service exists and every shard is ready to be called; dropped at shutdown.
//! Concurrency: shard-local (`RefCell`s borrowed briefly, never across an `.await`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use futures::channel::oneshot;
use futures::future::join_all;
use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::model::ShardId;

/// The answer of a served request in the making.
pub type Answer<R> = Pin<Box<dyn Future<Output = R>>>;

/// What a service made of a request.
pub enum Served<R> {
    /// Answered already (no task is spawned for a post answered at once).
    Now(R),
    /// Answered when this completes.
    Later(Answer<R>),
}

/// A service that lives on every shard and is reached through its own mesh.
pub trait Service: Sized + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;

    /// This shard's end of the service's mesh.
    fn mesh(&self) -> &Mesh<Self>;

    /// Serves `request` from `from` (this shard or a peer). Called in arrival order, each
    /// call returning before the next message is taken.
    fn serve(self: &Rc<Self>, from: ShardId, request: Self::Request) -> Served<Self::Response>;
}

/// What travels between two shards of one service's mesh.
pub enum Envelope<Q, R> {
    /// `id` 0: a post, nobody waits for its answer.
    Request {
        from: ShardId,
        id: u64,
        body: Q,
    },
    Response {
        id: u64,
        body: R,
    },
}

type EnvelopeOf<S> = Envelope<<S as Service>::Request, <S as Service>::Response>;

/// One shard's end of a service's mesh.
pub struct Mesh<S: Service> {
    me: ShardId,
    shards: usize,
    senders: Senders<EnvelopeOf<S>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<S::Response>>>,
    next_id: Cell<u64>,
    /// The service this end serves; set by `serve_peers`.
    service: RefCell<Weak<S>>,
}

impl<S: Service> Mesh<S> {
    pub fn new(senders: Senders<EnvelopeOf<S>>) -> Mesh<S> {
        Mesh {
            me: ShardId(senders.peer_id() as u16),
            shards: senders.nr_consumers(),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            service: RefCell::new(Weak::new()),
        }
    }

    pub fn me(&self) -> ShardId {
        self.me
    }

    /// Serves requests from peers (one task per peer) and from this shard, with `service`.
    pub fn serve_peers(&self, service: &Rc<S>, mut receivers: Receivers<EnvelopeOf<S>>) {
        *self.service.borrow_mut() = Rc::downgrade(service);
        for (_, receiver) in receivers.streams() {
            let service = Rc::downgrade(service);
            glommio::spawn_local(async move {
                while let Some(envelope) = receiver.recv().await {
                    let Some(service) = service.upgrade() else { return };
                    Self::receive(&service, envelope);
                }
            })
            .detach();
        }
    }

    fn service(&self) -> Option<Rc<S>> {
        self.service.borrow().upgrade()
    }

    fn receive(service: &Rc<S>, envelope: EnvelopeOf<S>) {
        match envelope {
            Envelope::Request { from, id, body } => match service.serve(from, body) {
                Served::Now(_) if id == 0 => {}
                Served::Now(answer) => {
                    let service = service.clone();
                    glommio::spawn_local(async move {
                        service.mesh().answer(from, id, answer).await;
                    })
                    .detach();
                }
                Served::Later(answer) => {
                    let service = service.clone();
                    glommio::spawn_local(async move {
                        let answer = answer.await;
                        if id != 0 {
                            service.mesh().answer(from, id, answer).await;
                        }
                    })
                    .detach();
                }
            },
            Envelope::Response { id, body } => {
                let waiting = service.mesh().pending.borrow_mut().remove(&id);
                if let Some(tx) = waiting {
                    let _ = tx.send(body);
                }
            }
        }
    }

    async fn answer(&self, to: ShardId, id: u64, body: S::Response) {
        if self.senders.send_to(to.index(), Envelope::Response { id, body }).await.is_err() {
            tracing::debug!(to = to.0, "mesh answer not sent (shutting down?)");
        }
    }

    /// Sends a request to `target` (or serves it here) and waits for the answer; `None`
    /// once the mesh is closed (shutting down).
    pub fn call(
        &self,
        target: ShardId,
        request: S::Request,
    ) -> Pin<Box<dyn Future<Output = Option<S::Response>> + '_>> {
        if target == self.me {
            let Some(service) = self.service() else {
                return Box::pin(async { None });
            };
            return match service.serve(self.me, request) {
                Served::Now(answer) => Box::pin(async move { Some(answer) }),
                Served::Later(answer) => Box::pin(async move { Some(answer.await) }),
            };
        }
        let sent = self.send(target, request);
        Box::pin(async move { sent.await?.await.ok() })
    }

    /// Puts a request for another shard on the mesh and gives the receiver of its answer once
    /// it is queued: requests queued one after another are served in that order. `None` when
    /// the mesh is closed.
    pub fn send(
        &self,
        target: ShardId,
        request: S::Request,
    ) -> impl Future<Output = Option<oneshot::Receiver<S::Response>>> + '_ {
        assert!(target != self.me, "send is for peers; call serves here");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let envelope = Envelope::Request { from: self.me, id, body: request };
        async move {
            if self.senders.send_to(target.index(), envelope).await.is_err() {
                self.pending.borrow_mut().remove(&id);
                return None;
            }
            Some(rx)
        }
    }

    /// Sends a request nobody waits for (a notification). Served here at once if `target`
    /// is this shard.
    pub async fn post(&self, target: ShardId, request: S::Request) {
        if target == self.me {
            if let Some(service) = self.service() {
                if let Served::Later(answer) = service.serve(self.me, request) {
                    glommio::spawn_local(answer).detach();
                }
            }
            return;
        }
        let envelope = Envelope::Request { from: self.me, id: 0, body: request };
        if self.senders.send_to(target.index(), envelope).await.is_err() {
            tracing::debug!(target = target.0, "mesh post not sent (shutting down?)");
        }
    }

    /// Sends the same request to every shard and waits for all the answers (`None` for a
    /// shard that could not be reached).
    pub async fn broadcast(&self, make: impl Fn() -> S::Request) -> Vec<Option<S::Response>> {
        let calls = (0..self.shards).map(|s| self.call(ShardId(s as u16), make()));
        join_all(calls).await
    }
}
