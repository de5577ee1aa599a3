//! [`ActorSlot`]: a replaceable reference to a supervised actor. The root supervisor
//! writes the new reference after a restart; callers read the current one per call.
//!
//! A leaf module: it knows ractor and [`CacheError`], nothing of the node.

use crate::error::CacheError;
use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef, RpcReplyPort};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A replaceable reference to a supervised actor.
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

    /// True when the current reference is the actor with this id.
    pub fn is(&self, id: ActorId) -> bool {
        self.get().is_some_and(|a| a.get_id() == id)
    }

    /// Sends `msg` without waiting; `false` when the actor is not running.
    pub fn cast(&self, msg: M) -> bool {
        self.get().is_some_and(|a| a.cast(msg).is_ok())
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
