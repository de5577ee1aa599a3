//! One node's actor system as the HTTP layer sees it: [`NodeConfig`] to start it,
//! [`NodeHandle`] to talk to it. Every method of the handle is a mailbox call (or a read
//! of a snapshot an actor published); the handle holds no cache state of its own.
//!
//! Owns the request paths (coordinating a write or read over a key's owners). Does not
//! own listeners, auth or HTTP encoding.

use crate::drain::{DrainMsg, DrainReport};
use crate::error::CacheError;
use crate::hlc::Hlc;
use crate::membership::{initial_view, ClusterView, MemberInfo, MembershipMsg};
use crate::metrics::Metrics;
use crate::root::{RootArgs, RootMsg, RootSupervisor};
use crate::shards::Shards;
use crate::types::{now_ms, validate_key, Stored, Version, Write};
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, RpcReplyPort};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// What the actor system needs to know; built from the process configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// The dist address peers reach this node at.
    pub advertise: String,
    pub replication: usize,
    pub shards: usize,
    pub capacity_items: usize,
    pub capacity_bytes: Option<u64>,
    pub max_value_bytes: u64,
    pub tombstone_retention: Duration,
    pub sweep_interval: Duration,
}

/// A replaceable reference to a supervised actor: the supervisor writes the new
/// reference after a restart, callers read the current one per call.
pub struct ActorSlot<M: ractor::Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for ActorSlot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// The current reference, if the actor has started.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, actor: ActorRef<M>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(actor);
    }

    pub(crate) fn is(&self, id: ActorId) -> bool {
        self.get().is_some_and(|a| a.get_id() == id)
    }

    /// Calls the actor, mapping every messaging failure to [`CacheError::Internal`].
    pub async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
        timeout: Duration,
    ) -> Result<T, CacheError> {
        let actor = self
            .get()
            .ok_or_else(|| CacheError::Internal("actor not started".into()))?;
        match actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(CacheError::Internal("actor call timed out".into())),
            _ => Err(CacheError::Internal(
                "actor unavailable (restarting)".into(),
            )),
        }
    }
}

/// What a coordinated write reports back.
#[derive(Debug, Clone)]
pub struct WriteAck {
    pub owners: Vec<String>,
    pub version: Version,
}

/// The handle request handlers use.
#[derive(Clone)]
pub struct NodeHandle {
    pub config: Arc<NodeConfig>,
    pub metrics: Arc<Metrics>,
    pub shards: Shards,
    pub membership: ActorSlot<MembershipMsg>,
    pub drain: ActorSlot<DrainMsg>,
    pub hlc: Arc<Hlc>,
    view: watch::Receiver<Arc<ClusterView>>,
    draining: watch::Receiver<bool>,
    root: ActorRef<RootMsg>,
}

/// Starts the supervision tree. The returned join handle finishes when the root stops
/// (normally after [`NodeHandle::stop`], or on escalation).
pub async fn start(
    config: NodeConfig,
    metrics: Arc<Metrics>,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), CacheError> {
    let (view_tx, view_rx) = watch::channel(Arc::new(initial_view(
        &config.node_id,
        &config.advertise,
        config.replication,
    )));
    let (drain_tx, drain_rx) = watch::channel(false);
    let shards = Shards::default();
    let membership = ActorSlot::default();
    let drain = ActorSlot::default();
    let args = RootArgs {
        config: config.clone(),
        metrics: metrics.clone(),
        shards: shards.clone(),
        membership: membership.clone(),
        drain: drain.clone(),
        view: Arc::new(view_tx),
        draining: Arc::new(drain_tx),
    };
    let (root, join) = Actor::spawn(None, RootSupervisor, args)
        .await
        .map_err(|e| CacheError::Internal(format!("actor system failed to start: {e}")))?;
    let handle = NodeHandle {
        config: Arc::new(config),
        metrics,
        shards,
        membership,
        drain,
        hlc: Arc::new(Hlc::new()),
        view: view_rx,
        draining: drain_rx,
        root,
    };
    Ok((handle, join))
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

impl NodeHandle {
    /// The latest published membership and ring.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// True once a drain has started (one-way until restart).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Admission of a client write: refused with [`CacheError::Draining`] once a drain
    /// has started. Handlers call it when a request arrives, so a write whose body was
    /// still streaming when the drain began completes.
    pub fn admit_write(&self) -> Result<(), CacheError> {
        if self.is_draining() {
            Err(CacheError::Draining)
        } else {
            Ok(())
        }
    }

    /// A receiver that changes to `true` when the node starts draining.
    pub fn draining_watch(&self) -> watch::Receiver<bool> {
        self.draining.clone()
    }

    /// The owners of `key` under the current ring.
    pub fn owners(&self, key: &str) -> Vec<String> {
        self.view()
            .ring
            .owners(key)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Stores `value` under `key`, expiring `ttl` after now (absolute instant).
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<WriteAck, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        if value.len() as u64 > self.config.max_value_bytes {
            return Err(CacheError::PayloadTooLarge {
                size: value.len() as u64,
                limit: self.config.max_value_bytes,
            });
        }
        let now = now_ms();
        let expires_at_ms = ttl.map(|t| now.saturating_add(t.as_millis() as u64));
        self.write(key, Some(value), expires_at_ms, now).await
    }

    /// Deletes `key` by writing a versioned tombstone (idempotent).
    pub async fn delete(&self, key: &str) -> Result<WriteAck, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        self.write(key, None, None, now_ms()).await
    }

    async fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now: u64,
    ) -> Result<WriteAck, CacheError> {
        let version = Version {
            hlc: self.hlc.now(now),
            origin: crate::types::origin_of(&self.config.node_id),
        };
        let write = Write {
            version,
            value,
            expires_at_ms,
        };
        let owners = self.owners(key);
        self.shards.apply(key, write).await?;
        Ok(WriteAck { owners, version })
    }

    /// Reads `key`; [`CacheError::NotFound`] when missing, expired or deleted.
    pub async fn get(&self, key: &str) -> Result<Stored, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        self.shards.get(key).await?.ok_or(CacheError::NotFound)
    }

    /// The member list as the membership actor holds it.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, CacheError> {
        self.membership
            .call(MembershipMsg::Members, CONTROL_TIMEOUT)
            .await
    }

    /// Starts (or joins) the drain; returns once its steps are done.
    pub async fn drain(&self) -> Result<DrainReport, CacheError> {
        self.drain.call(DrainMsg::Drain, CONTROL_TIMEOUT).await
    }

    /// Stops the whole supervision tree and waits for it.
    pub async fn stop(&self) {
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(CONTROL_TIMEOUT))
            .await;
    }
}
