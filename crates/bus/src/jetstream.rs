//! The JetStream bus: one work-queue stream whose subjects route each message to exactly one
//! stage, a durable pull consumer per stage with explicit acks, a dead-letter stream and an
//! event stream for completions. Bodies are MessagePack, envelopes are headers, and the
//! `Nats-Msg-Id` header makes the server drop a republished copy within the duplicate window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use proto::subjects::{Namespace, subject_for};
use proto::{Envelope, Message, Stage};

use crate::{Bus, BusError, Delivery, Poison, Published, Subscription};
use settings::BusConfig;

/// Connection and stream settings, from the `bus` section of the configuration.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: jetstream::Context,
    ns: Namespace,
    cfg: BusConfig,
}

impl JetStreamBus {
    /// Connect to `url` and make sure the streams exist.
    /// Whether `url` (one server, or several separated by commas) can name NATS servers at
    /// all: a malformed URL is the user's input to fix, not a server that does not answer.
    pub fn check_url(url: &str) -> Result<(), String> {
        if url.trim().is_empty() {
            return Err("it is empty".into());
        }
        for server in url.split(',') {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("`{}`: {e}", server.trim()))?;
        }
        Ok(())
    }

    /// The servers `url` names (one, or several separated by commas: a cluster's nodes).
    pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
        Self::check_url(url)?;
        url.split(',')
            .map(|s| s.trim().parse().map_err(|e| format!("`{}`: {e}", s.trim())))
            .collect()
    }

    pub async fn connect(url: &str, ns: Namespace, cfg: BusConfig) -> Result<Self, BusError> {
        let addrs = Self::server_addrs(url).map_err(|e| BusError::Connect {
            url: url.to_owned(),
            reason: e,
        })?;
        let client = async_nats::ConnectOptions::new()
            .name("coval")
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .max_reconnects(Some(cfg.max_reconnects))
            .connect(addrs);
        // retry_on_initial_connect returns at once and connects in the background; insist on a
        // first connection within the timeout so an unreachable server is a clear error.
        let client = tokio::time::timeout(Duration::from_secs(cfg.connect_timeout_secs), async {
            let c = client.await?;
            c.flush()
                .await
                .map_err(|e| -> async_nats::Error { Box::new(e) })?;
            Ok::<_, async_nats::Error>(c)
        })
        .await
        .map_err(|_| BusError::Connect {
            url: url.to_owned(),
            reason: format!("no answer within {} s", cfg.connect_timeout_secs),
        })?
        .map_err(|e| BusError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(cfg.publish_timeout_secs));
        let bus = JetStreamBus {
            client,
            js,
            ns,
            cfg,
        };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn ensure_streams(&self) -> Result<(), BusError> {
        let setup = |what: String| {
            move |e: String| BusError::Setup {
                what: what.clone(),
                reason: e,
            }
        };
        let ns = &self.ns;
        // Work: each message is removed once its stage acks it. Unlimited size with discard
        // "new": when a limit is ever set, a full stream refuses work instead of silently
        // deleting unhandled messages.
        let work = stream::Config {
            name: ns.work_stream(),
            subjects: vec![ns.work_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.cfg.work_max_bytes,
            duplicate_window: self.cfg.duplicate_window(),
            num_replicas: self.cfg.replicas,
            ..Default::default()
        };
        self.create_or_update(work)
            .await
            .map_err(setup(ns.work_stream()))?;
        let dlq = stream::Config {
            name: ns.dead_letter_stream(),
            subjects: vec![ns.dead_letter_subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(self.cfg.dead_letter_max_age_hours * 3600),
            duplicate_window: self.cfg.duplicate_window(),
            num_replicas: self.cfg.replicas,
            ..Default::default()
        };
        self.create_or_update(dlq)
            .await
            .map_err(setup(ns.dead_letter_stream()))?;
        let events = stream::Config {
            name: ns.event_stream(),
            subjects: vec![ns.event_subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(self.cfg.event_max_age_hours * 3600),
            duplicate_window: self.cfg.duplicate_window(),
            num_replicas: self.cfg.replicas,
            ..Default::default()
        };
        self.create_or_update(events)
            .await
            .map_err(setup(ns.event_stream()))?;
        Ok(())
    }

    async fn create_or_update(&self, cfg: stream::Config) -> Result<(), String> {
        match self.js.get_stream(&cfg.name).await {
            Ok(_) => self
                .js
                .update_stream(cfg)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(_) => self
                .js
                .create_stream(cfg)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    async fn consumer(&self, stage: Stage) -> Result<consumer::PullConsumer, BusError> {
        let err = |e: String| BusError::Setup {
            what: format!("consumer `{}`", self.ns.consumer(stage)),
            reason: e,
        };
        let s = self
            .js
            .get_stream(self.ns.work_stream())
            .await
            .map_err(|e| err(e.to_string()))?;
        let name = self.ns.consumer(stage);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.ns.stage_filter(stage),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.cfg.ack_wait(),
            // The runtime dead-letters on its own at max_deliver; the server's limit is one
            // higher so the last delivery is always seen by a worker.
            max_deliver: i64::from(self.cfg.max_deliver) + 1,
            max_ack_pending: self.cfg.max_ack_pending,
            ..Default::default()
        };
        s.get_or_create_consumer(&name, config)
            .await
            .map_err(|e| err(e.to_string()))
    }
}

pub(crate) fn header_map(envelope: &Envelope) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in envelope.to_headers() {
        h.insert(k, v);
    }
    h
}

impl Bus for JetStreamBus {
    type Delivery = JetStreamDelivery;
    type Subscription = JetStreamSubscription;

    async fn publish(&self, envelope: &Envelope, message: Message) -> Result<Published, BusError> {
        let subject = subject_for(&self.ns, &message);
        let body = message.encode()?;
        let fail = |e: String| BusError::Publish {
            subject: subject.clone(),
            reason: e,
        };
        let ack = self
            .js
            .publish_with_headers(subject.clone(), header_map(envelope), body.into())
            .await
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Published {
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(&self, stage: Stage) -> Result<JetStreamSubscription, BusError> {
        let consumer = self.consumer(stage).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.cfg.concurrency.max(1))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| BusError::Receive {
                stage,
                reason: e.to_string(),
            })?;
        Ok(JetStreamSubscription { stage, messages })
    }
}

pub struct JetStreamSubscription {
    stage: Stage,
    messages: consumer::pull::Stream,
}

impl Subscription for JetStreamSubscription {
    type Delivery = JetStreamDelivery;

    async fn next(&mut self) -> Option<Result<JetStreamDelivery, BusError>> {
        let stage = self.stage;
        let m = self.messages.next().await?;
        Some(
            m.map(|message| JetStreamDelivery { stage, message })
                .map_err(|e| BusError::Receive {
                    stage,
                    reason: e.to_string(),
                }),
        )
    }
}

pub struct JetStreamDelivery {
    stage: Stage,
    message: jetstream::Message,
}

impl JetStreamDelivery {
    async fn settle(&self, kind: AckKind) -> Result<(), BusError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|e| BusError::Ack {
                stage: self.stage,
                reason: e.to_string(),
            })
    }
}

impl Delivery for JetStreamDelivery {
    fn open(&mut self) -> Result<(Envelope, Arc<Message>), Poison> {
        let headers = self.message.headers.as_ref().ok_or_else(|| Poison {
            reason: "message has no headers, so no envelope".into(),
        })?;
        let envelope =
            Envelope::from_headers(|n| headers.get(n).map(|v| v.as_str())).map_err(|e| Poison {
                reason: format!("bad envelope: {e}"),
            })?;
        let message = Message::decode(
            envelope.kind.as_str(),
            envelope.version,
            &self.message.payload,
        )
        .map_err(|e| Poison {
            reason: format!("bad body: {e}"),
        })?;
        if message.repair_id() != envelope.repair_id {
            return Err(Poison {
                reason: format!(
                    "envelope names repair {} but the body names {}",
                    envelope.repair_id,
                    message.repair_id()
                ),
            });
        }
        Ok((envelope, Arc::new(message)))
    }

    fn delivered(&self) -> u32 {
        self.message
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1)
    }

    fn subject(&self) -> String {
        self.message.subject.to_string()
    }

    fn raw(&self) -> (Vec<(String, String)>, Vec<u8>) {
        let headers = self
            .message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| {
                        vs.iter()
                            .map(move |v| (k.to_string(), v.as_str().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        (headers, self.message.payload.to_vec())
    }

    async fn ack(self) -> Result<(), BusError> {
        self.settle(AckKind::Ack).await
    }

    async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.settle(AckKind::Nak(Some(delay))).await
    }

    async fn term(self) -> Result<(), BusError> {
        self.settle(AckKind::Term).await
    }

    async fn progress(&self) -> Result<(), BusError> {
        self.settle(AckKind::Progress).await
    }
}

/// Decodes a message read from the event or dead-letter stream (not a work delivery).
fn decode_event(m: &jetstream::Message) -> Option<Message> {
    let headers = m.headers.as_ref()?;
    let envelope = Envelope::from_headers(|n| headers.get(n).map(|v| v.as_str())).ok()?;
    Message::decode(envelope.kind.as_str(), envelope.version, &m.payload).ok()
}

impl JetStreamBus {
    /// Everything published about `repair` from now on (or from the start of the event
    /// stream's memory with `from_start`): progress events, its completion, and its dead
    /// letters. Ends only when the caller drops it.
    pub async fn follow(
        &self,
        repair: proto::RepairId,
        from_start: bool,
    ) -> Result<impl futures::Stream<Item = Message> + Unpin + use<>, BusError> {
        let policy = if from_start {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::New
        };
        let open = |stream: String, filter: String, policy: consumer::DeliverPolicy| {
            let js = self.js.clone();
            async move {
                let err = |e: String| BusError::Setup {
                    what: format!("following {stream}"),
                    reason: e,
                };
                let s = js
                    .get_stream(&stream)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                let c = s
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject: filter,
                        deliver_policy: policy,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| err(e.to_string()))?;
                c.messages().await.map_err(|e| err(e.to_string()))
            }
        };
        let events = open(
            self.ns.event_stream(),
            self.ns.repair_events(&repair),
            policy,
        )
        .await?;
        let dead = open(
            self.ns.dead_letter_stream(),
            self.ns.dead_letter_subjects(),
            policy,
        )
        .await?;
        let decode = move |m: Result<jetstream::Message, _>| {
            let m = m.ok()?;
            decode_event(&m).filter(|msg| msg.repair_id() == repair)
        };
        let events = events.filter_map(move |m| futures::future::ready(decode(m)));
        let dead = dead.filter_map(move |m| futures::future::ready(decode(m)));
        Ok(futures::stream::select(events, dead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_urls_are_told_apart_from_unreachable_servers() {
        for good in [
            "nats://127.0.0.1:4222",
            "127.0.0.1",
            "nats://a:1,nats://b:2",
            "tls://h:4443",
        ] {
            assert!(JetStreamBus::check_url(good).is_ok(), "{good}");
        }
        for bad in ["", "nats://bad host:x", "nats://h:notaport", "http://[::1"] {
            assert!(JetStreamBus::check_url(bad).is_err(), "{bad}");
        }
    }
}
