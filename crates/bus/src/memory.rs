//! The in-process bus of the embedded mode: one queue per stage, the same message types and
//! envelopes as on JetStream, no serialisation on the way. Like JetStream it drops a message
//! whose id it has already seen within its duplicate window, and a Nak redelivers after the
//! delay with the delivery count raised. Nothing survives the process: the embedded mode's
//! unit of failure is the whole process.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::{Envelope, Message, MessageId, Stage};
use tokio::sync::mpsc;

use crate::{Bus, BusError, Delivery, Poison, Published, Subscription};

type Item = (Envelope, Arc<Message>, u32);

struct Queue {
    tx: mpsc::UnboundedSender<Item>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>>,
}

/// Hashes message ids by their own bits: a ULID's low 80 bits are random (or a SHA-256
/// digest for derived ids), so they need no further mixing. SipHash's cost showed in the
/// profile of an in-process hop (the window is a set of 100,000 ids, touched twice per hop).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not taken by `MessageId` (a `u128`); kept correct for any other key: FNV-1a.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        // The random low bits, folded with the timestamp so equal low bits still differ.
        self.0 ^= (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    }
}

type IdSet = HashSet<MessageId, std::hash::BuildHasherDefault<IdHasher>>;

struct Dedup {
    seen: IdSet,
    order: VecDeque<MessageId>,
    window: usize,
}

struct Inner {
    ns: proto::subjects::Namespace,
    queues: HashMap<Stage, Queue>,
    events: Queue,
    dedup: Mutex<Dedup>,
}

/// Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(100_000)
    }
}

fn queue() -> Queue {
    let (tx, rx) = mpsc::unbounded_channel();
    Queue {
        tx,
        rx: Arc::new(tokio::sync::Mutex::new(rx)),
    }
}

impl MemoryBus {
    /// `dedup_window`: how many recent message ids are remembered to drop duplicates.
    pub fn new(dedup_window: usize) -> Self {
        let queues = Stage::WORKERS.into_iter().map(|s| (s, queue())).collect();
        MemoryBus {
            inner: Arc::new(Inner {
                ns: proto::subjects::Namespace::default(),
                queues,
                events: queue(),
                dedup: Mutex::new(Dedup {
                    seen: IdSet::default(),
                    order: VecDeque::new(),
                    window: dedup_window.max(1),
                }),
            }),
        }
    }

    /// Completions and dead letters: everything no stage consumes.
    pub async fn next_event(&self) -> Option<(Envelope, Arc<Message>)> {
        let mut rx = self.inner.events.rx.lock().await;
        rx.recv().await.map(|(e, m, _)| (e, m))
    }

    fn first_sighting(&self, id: MessageId) -> bool {
        let mut d = self.inner.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if !d.seen.insert(id) {
            return false;
        }
        d.order.push_back(id);
        if d.order.len() > d.window
            && let Some(old) = d.order.pop_front()
        {
            d.seen.remove(&old);
        }
        true
    }

    fn send(
        &self,
        envelope: Envelope,
        message: Arc<Message>,
        delivered: u32,
    ) -> Result<(), BusError> {
        let q = match message.route() {
            Some(stage) if !matches!(*message, Message::DeadLetter(_)) => {
                self.inner.queues.get(&stage).ok_or(BusError::Closed)?
            }
            _ => &self.inner.events,
        };
        q.tx.send((envelope, message, delivered))
            .map_err(|_| BusError::Closed)
    }
}

impl Bus for MemoryBus {
    type Delivery = MemoryDelivery;
    type Subscription = MemorySubscription;

    async fn publish(&self, envelope: &Envelope, message: Message) -> Result<Published, BusError> {
        self.publish_shared(envelope, Arc::new(message)).await
    }

    async fn publish_shared(
        &self,
        envelope: &Envelope,
        message: Arc<Message>,
    ) -> Result<Published, BusError> {
        if !self.first_sighting(envelope.message_id) {
            return Ok(Published { duplicate: true });
        }
        self.send(envelope.clone(), message, 1)?;
        Ok(Published { duplicate: false })
    }

    async fn subscribe(&self, stage: Stage) -> Result<MemorySubscription, BusError> {
        let q = self.inner.queues.get(&stage).ok_or(BusError::Closed)?;
        Ok(MemorySubscription {
            stage,
            rx: q.rx.clone(),
            bus: self.clone(),
        })
    }
}

pub struct MemorySubscription {
    stage: Stage,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>>,
    bus: MemoryBus,
}

impl Subscription for MemorySubscription {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Option<Result<MemoryDelivery, BusError>> {
        let (envelope, message, delivered) = self.rx.lock().await.recv().await?;
        Some(Ok(MemoryDelivery {
            stage: self.stage,
            envelope,
            message: Some(message),
            delivered,
            bus: self.bus.clone(),
        }))
    }
}

pub struct MemoryDelivery {
    stage: Stage,
    envelope: Envelope,
    message: Option<Arc<Message>>,
    delivered: u32,
    bus: MemoryBus,
}

impl Delivery for MemoryDelivery {
    fn open(&mut self) -> Result<(Envelope, Arc<Message>), Poison> {
        // The body stays available for a Nak: share rather than take.
        match &self.message {
            Some(m) => Ok((self.envelope.clone(), m.clone())),
            None => Err(Poison {
                reason: "message already consumed".into(),
            }),
        }
    }

    fn delivered(&self) -> u32 {
        self.delivered
    }

    fn subject(&self) -> String {
        match &self.message {
            Some(m) => proto::subjects::subject_for(&self.bus.inner.ns, m),
            None => self.bus.inner.ns.stage_filter(self.stage),
        }
    }

    fn raw(&self) -> (Vec<(String, String)>, Vec<u8>) {
        let headers = self
            .envelope
            .to_headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let body = self
            .message
            .as_ref()
            .and_then(|m| m.encode().ok())
            .unwrap_or_default();
        (headers, body)
    }

    async fn ack(self) -> Result<(), BusError> {
        Ok(())
    }

    async fn nak(mut self, delay: Duration) -> Result<(), BusError> {
        let Some(message) = self.message.take() else {
            return Ok(());
        };
        let bus = self.bus.clone();
        let envelope = self.envelope.clone();
        let delivered = self.delivered + 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = bus.send(envelope, message, delivered);
        });
        Ok(())
    }

    async fn term(self) -> Result<(), BusError> {
        Ok(())
    }

    async fn progress(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duplicate_window_drops_repeats_and_forgets_the_oldest_id() {
        let bus = MemoryBus::new(2);
        let cause = MessageId::new();
        // Derived ids share the cause's timestamp and differ only in their digest bits.
        let ids: Vec<MessageId> = (0..3)
            .map(|i| MessageId::derive(&cause, Stage::Triage, i))
            .collect();
        assert!(bus.first_sighting(ids[0]));
        assert!(!bus.first_sighting(ids[0]));
        assert!(bus.first_sighting(ids[1]));
        assert!(!bus.first_sighting(ids[1]));
        assert!(!bus.first_sighting(ids[0]));
        // A third id pushes the first out of a window of two: it is new again.
        assert!(bus.first_sighting(ids[2]));
        assert!(bus.first_sighting(ids[0]));
        assert!(!bus.first_sighting(ids[2]));
    }

    #[test]
    fn ids_that_differ_in_any_part_hash_apart() {
        use std::hash::BuildHasher;
        let h = std::hash::BuildHasherDefault::<IdHasher>::default();
        let a = MessageId::new();
        let b = MessageId::derive(&a, Stage::Triage, 0);
        let c = MessageId::derive(&a, Stage::Triage, 1);
        let hashes = [h.hash_one(a), h.hash_one(b), h.hash_one(c)];
        assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2]);
        assert_eq!(
            h.hash_one(b),
            h.hash_one(MessageId::derive(&a, Stage::Triage, 0))
        );
    }
}
