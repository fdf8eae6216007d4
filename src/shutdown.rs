//! Stopping: one signal each stage watches. The pipeline holds a [`Trigger`] per phase (the
//! ingress stops first, then the detector drains); every task of the phase holds a clone of its
//! [`Shutdown`].

use tokio::sync::watch;

/// Asks the tasks holding its [`Shutdown`] to stop.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Whether, and when, to stop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and the signal it sets.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stopping is asked (at once if it was, or if its trigger is gone).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_stop() {
        let (trigger, mut a) = channel();
        let mut b = a.clone();
        assert!(!a.is_stopping());
        let waiting = tokio::spawn(async move { b.stopped().await });
        trigger.stop();
        waiting.await.unwrap();
        a.stopped().await;
        assert!(a.is_stopping());
    }
}
