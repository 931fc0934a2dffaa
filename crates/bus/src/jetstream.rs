//! The JetStream bus: a work-queue stream per stage (its subjects route each message to
//! exactly that stage), a durable pull consumer per stage with explicit acks, a dead-letter
//! stream and an event stream for completions. Bodies are MessagePack, envelopes are
//! headers, and the `Nats-Msg-Id` header makes the server drop a republished copy within the
//! duplicate window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use proto::subjects::{Namespace, subject_for};
use proto::{Envelope, Message, Outgoing, Stage, Wire};

use crate::{Bus, BusError, Delivery, Poison, Published, Subscription};
use settings::BusConfig;

/// How to prove who we are to NATS, and how to trust the server: flags, or the environment
/// variables the `nats` command-line tool reads. A URL may also carry `user:password@`.
/// One way of authenticating at a time; TLS combines with any of them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NatsAuth {
    /// NATS user name (with --nats-password)
    #[arg(long = "nats-user", env = "NATS_USER", value_name = "USER")]
    pub user: Option<String>,
    /// NATS password of --nats-user
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// NATS authentication token
    #[arg(
        long = "nats-token",
        env = "NATS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// NATS credentials file (a user JWT and its nkey seed, as `nsc` writes them)
    #[arg(long = "nats-creds", env = "NATS_CREDS", value_name = "FILE")]
    pub creds: Option<std::path::PathBuf>,
    /// File holding a NATS user nkey seed (`SU…`)
    #[arg(long = "nats-nkey", env = "NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to trust the NATS server's TLS certificate with; requires TLS
    #[arg(long = "nats-ca", env = "NATS_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for TLS client authentication (with --nats-key)
    #[arg(long = "nats-cert", env = "NATS_CERT", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --nats-cert
    #[arg(long = "nats-key", env = "NATS_KEY", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
}

impl NatsAuth {
    /// `options` with these credentials; an error (bad input: a missing file, a password
    /// without a user, two ways of authenticating) says which flag to fix.
    pub async fn apply(
        &self,
        mut o: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        let ways: Vec<&str> = [
            (self.user.is_some(), "--nats-user"),
            (self.token.is_some(), "--nats-token"),
            (self.creds.is_some(), "--nats-creds"),
            (self.nkey.is_some(), "--nats-nkey"),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| name)
        .collect();
        if ways.len() > 1 {
            return Err(format!(
                "{} are given (as flags or NATS_* variables): pass one way of authenticating",
                ways.join(" and ")
            ));
        }
        let readable = |p: &std::path::Path, flag: &str| -> Result<(), String> {
            std::fs::metadata(p)
                .map(|_| ())
                .map_err(|e| format!("{flag} {}: {e}", p.display()))
        };
        match (&self.user, &self.password) {
            (Some(u), p) => {
                o = o.user_and_password(u.clone(), p.clone().unwrap_or_default());
            }
            (None, Some(_)) => {
                return Err("--nats-password (NATS_PASSWORD) needs --nats-user (NATS_USER)".into());
            }
            (None, None) => {}
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let Some(c) = &self.creds {
            readable(c, "--nats-creds")?;
            o = o
                .credentials_file(c)
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", c.display()))?;
        }
        if let Some(k) = &self.nkey {
            let seed = std::fs::read_to_string(k)
                .map_err(|e| format!("--nats-nkey {}: {e}", k.display()))?;
            let seed = seed
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("SU"))
                .ok_or_else(|| {
                    format!(
                        "--nats-nkey {}: no user nkey seed (a line starting with SU) in it",
                        k.display()
                    )
                })?;
            o = o.nkey(seed.to_owned());
        }
        if let Some(ca) = &self.ca {
            readable(ca, "--nats-ca")?;
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                readable(c, "--nats-cert")?;
                readable(k, "--nats-key")?;
                o = o
                    .add_client_certificate(c.clone(), k.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => return Err("--nats-cert and --nats-key (NATS_CERT, NATS_KEY) go together".into()),
        }
        Ok(o)
    }
}

/// Who connects: a worker makes sure the streams exist with the configured settings; a
/// client (`submit`, `watch`, `status`) creates them only when they are missing, so a
/// publish-only identity that may not change streams can submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Client,
}

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
        Self::connect_with(url, ns, cfg, &NatsAuth::default(), Role::Worker).await
    }

    /// [`connect`](Self::connect) with credentials, as a worker or as a client.
    pub async fn connect_with(
        url: &str,
        ns: Namespace,
        cfg: BusConfig,
        auth: &NatsAuth,
        role: Role,
    ) -> Result<Self, BusError> {
        // The server's last complaint (a refused password, a TLS failure), so a connection
        // that never comes up says why instead of only timing out.
        let complaint: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let heard = complaint.clone();
        let options = async_nats::ConnectOptions::new().event_callback(move |event| {
            let heard = heard.clone();
            async move {
                match event {
                    async_nats::Event::ServerError(e) => {
                        *heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                    async_nats::Event::ClientError(e) => {
                        *heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                    _ => {}
                }
            }
        });
        let options = auth.apply(options).await.map_err(BusError::Auth)?;
        let addrs = Self::server_addrs(url).map_err(|e| BusError::Connect {
            url: url.to_owned(),
            reason: e,
        })?;
        let client = options
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
            reason: match complaint.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(c) => format!(
                    "not connected within {} s; the server said: {c}",
                    cfg.connect_timeout_secs
                ),
                None => format!("no answer within {} s", cfg.connect_timeout_secs),
            },
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
        let present = role == Role::Client && bus.streams_present().await;
        if !present {
            match role {
                // A worker waits out a cluster that cannot create streams yet (no quorum, a
                // leader election); a command line fails at once and says why.
                Role::Worker => {
                    let never = tokio_util::sync::CancellationToken::new();
                    crate::retry_setup(&bus.cfg, &never, "the streams", || bus.ensure_streams())
                        .await?;
                }
                Role::Client => bus.ensure_streams().await?,
            }
        }
        Ok(bus)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Copies kept of each stream and bucket (`bus.replicas`).
    pub fn replicas(&self) -> usize {
        self.cfg.replicas
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Whether the streams a client uses exist already: the first stage's work stream (where
    /// it submits) and the event stream (where it follows a repair).
    async fn streams_present(&self) -> bool {
        self.js
            .get_stream(self.ns.work_stream(Stage::Triage))
            .await
            .is_ok()
            && self.js.get_stream(self.ns.event_stream()).await.is_ok()
    }

    async fn ensure_streams(&self) -> Result<(), BusError> {
        let setup = |what: String| move |e: Failed| e.setup(&what);
        let ns = &self.ns;
        // Its subjects overlap the per-stage streams': it must let go of them first.
        self.retire_legacy_work()
            .await
            .map_err(setup(ns.legacy_work_stream()))?;
        // Work: each message is removed once its stage acks it. Unlimited size with discard
        // "new": when a limit is ever set, a full stream refuses work instead of silently
        // deleting unhandled messages.
        for stage in Stage::WORKERS {
            let work = stream::Config {
                name: ns.work_stream(stage),
                subjects: vec![ns.stage_filter(stage)],
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
                .map_err(setup(ns.work_stream(stage)))?;
        }
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

    /// The single work stream of earlier releases, if there is one, stops capturing new work
    /// (its subjects move to one nothing publishes on) and is deleted once empty. Until
    /// then each stage's subscription also pulls the stage's messages left in it, with the
    /// stage's durable consumer there, so an upgrade loses and repeats nothing.
    async fn retire_legacy_work(&self) -> Result<(), Failed> {
        let name = self.ns.legacy_work_stream();
        let Ok(legacy) = self.js.get_stream(&name).await else {
            return Ok(());
        };
        let info = legacy.cached_info();
        let retired = vec![self.ns.retired_work_subject()];
        if info.config.subjects != retired {
            let mut config = info.config.clone();
            config.subjects = retired;
            self.js.update_stream(config).await.map_err(failed)?;
            tracing::info!(
                stream = %name,
                messages = info.state.messages,
                "retired the single work stream of an earlier release: new work goes to a stream per stage; the messages left in it are still handled"
            );
        }
        if info.state.messages == 0 {
            delete_retired(&self.js, &name).await;
        }
        Ok(())
    }

    async fn create_or_update(&self, cfg: stream::Config) -> Result<(), Failed> {
        match self.js.get_stream(&cfg.name).await {
            Ok(_) => self.js.update_stream(cfg).await.map(|_| ()).map_err(failed),
            // Not there, or the server did not say: creating says which.
            Err(_) => self.js.create_stream(cfg).await.map(|_| ()).map_err(failed),
        }
    }

    async fn consumer(&self, stage: Stage) -> Result<consumer::PullConsumer, BusError> {
        let what = format!("consumer `{}`", self.ns.consumer(stage));
        let err = |e: Failed| e.setup(&what);
        let s = self
            .js
            .get_stream(self.ns.work_stream(stage))
            .await
            .map_err(|e| err(failed(e)))?;
        let name = self.ns.consumer(stage);
        s.get_or_create_consumer(&name, self.consumer_config(stage))
            .await
            .map_err(|e| err(failed(e)))
    }

    /// `stage`'s durable consumer: explicit acks, redelivery after the ack wait.
    fn consumer_config(&self, stage: Stage) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.ns.consumer(stage)),
            filter_subject: self.ns.stage_filter(stage),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.cfg.ack_wait(),
            // The runtime dead-letters on its own at max_deliver; the server's limit is one
            // higher so the last delivery is always seen by a worker.
            max_deliver: i64::from(self.cfg.max_deliver) + 1,
            max_ack_pending: self.cfg.max_ack_pending,
            ..Default::default()
        }
    }
}

/// A failed JetStream API request: what went wrong, and whether it may pass on its own.
struct Failed {
    reason: String,
    transient: bool,
}

impl Failed {
    fn setup(self, what: &str) -> BusError {
        BusError::Setup {
            what: what.to_owned(),
            reason: self.reason,
            transient: self.transient,
        }
    }
}

fn failed<E: MayPass + std::fmt::Display>(e: E) -> Failed {
    Failed {
        transient: e.may_pass(),
        reason: e.to_string(),
    }
}

/// Errors of the JetStream API that may pass when asked again: no answer in time, or a
/// cluster electing a leader or short of the peers the replicas need (a node restarting).
trait MayPass {
    fn may_pass(&self) -> bool;
}

fn cluster_busy(e: &jetstream::Error) -> bool {
    use jetstream::ErrorCode as C;
    [
        C::CLUSTER_INCOMPLETE,
        C::CLUSTER_NO_PEERS,
        C::CLUSTER_NOT_ACTIVE,
        C::CLUSTER_NOT_ASSIGNED,
        C::CLUSTER_NOT_AVAILABLE,
        C::CLUSTER_NOT_LEADER,
        C::INSUFFICIENT_RESOURCES,
    ]
    .contains(&e.error_code())
}

impl MayPass for jetstream::context::GetStreamError {
    fn may_pass(&self) -> bool {
        use jetstream::context::GetStreamErrorKind as K;
        match self.kind() {
            K::Request => true,
            K::JetStream(e) => cluster_busy(&e),
            _ => false,
        }
    }
}

impl MayPass for jetstream::context::CreateStreamError {
    fn may_pass(&self) -> bool {
        use jetstream::context::CreateStreamErrorKind as K;
        match self.kind() {
            K::TimedOut | K::JetStreamUnavailable | K::Response => true,
            K::JetStream(e) => cluster_busy(&e),
            _ => false,
        }
    }
}

impl MayPass for jetstream::stream::ConsumerError {
    fn may_pass(&self) -> bool {
        use jetstream::stream::ConsumerErrorKind as K;
        match self.kind() {
            K::TimedOut | K::Request => true,
            K::JetStream(e) => cluster_busy(&e),
            _ => false,
        }
    }
}

/// What a stage's consumer holds, as the server counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLoad {
    /// Messages in the queue not yet delivered to any worker.
    pub pending: u64,
    /// Messages delivered to a worker and not yet acknowledged (in hand, or of a worker that
    /// died and whose ack wait has not run out).
    pub ack_pending: u64,
    /// Pull requests waiting for messages: idle workers.
    pub waiting: u64,
}

impl ConsumerLoad {
    /// Some worker is bound to the stage: one waits for work (a pull request is open) or
    /// holds messages. A busy worker has no pull open while all its slots are taken, so
    /// waiting pulls alone would call it absent.
    pub fn has_workers(&self) -> bool {
        self.waiting > 0 || self.ack_pending > 0
    }
}

impl JetStreamBus {
    /// The load of `stage`'s consumer; `None` when the stream or the consumer does not exist
    /// (no worker of the stage ever started) or the server does not answer.
    pub async fn consumer_load(&self, stage: Stage) -> Option<ConsumerLoad> {
        let stream = self.js.get_stream(self.ns.work_stream(stage)).await.ok()?;
        let info = stream.consumer_info(self.ns.consumer(stage)).await.ok()?;
        Some(ConsumerLoad {
            pending: info.num_pending,
            ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(0),
            waiting: u64::try_from(info.num_waiting).unwrap_or(0),
        })
    }
}

impl JetStreamBus {
    /// The key-value bucket of CI submissions (see [`Namespace::submission_bucket`]),
    /// created when missing; records live as long as dead letters
    /// (`bus.dead_letter_max_age_hours`), long past any duplicate window.
    pub async fn submissions(&self) -> Result<jetstream::kv::Store, BusError> {
        let name = self.ns.submission_bucket();
        if let Ok(kv) = self.js.get_key_value(&name).await {
            return Ok(kv);
        }
        self.js
            .create_key_value(jetstream::kv::Config {
                bucket: name.clone(),
                description: "coval submissions by de-duplication key".into(),
                history: 1,
                max_age: Duration::from_secs(self.cfg.dead_letter_max_age_hours * 3600),
                storage: stream::StorageType::File,
                num_replicas: self.cfg.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Setup {
                what: format!("bucket {name}"),
                reason: e.to_string(),
                transient: false,
            })
    }
}

/// The headers a message is sent with. The names are the envelope's constants, used as they
/// are (a name given as `&str` is copied, and checked, at each use).
fn header_map(headers: Vec<(&'static str, String)>) -> HeaderMap {
    headers
        .into_iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from(v)))
        .collect()
}

/// The envelope of a received message.
fn envelope_of(headers: &HeaderMap) -> Result<Envelope, proto::EnvelopeError> {
    Envelope::from_headers(|n| {
        headers
            .get(HeaderName::from_static(n))
            .map(HeaderValue::as_str)
    })
}

impl Bus for JetStreamBus {
    type Delivery = JetStreamDelivery;
    type Subscription = JetStreamSubscription;

    async fn publish(&self, envelope: &Envelope, message: Message) -> Result<Published, BusError> {
        self.publish_ref(envelope, &message).await
    }

    async fn publish_shared(
        &self,
        envelope: &Envelope,
        message: Arc<Message>,
    ) -> Result<Published, BusError> {
        self.publish_ref(envelope, &message).await
    }

    async fn publish_output(&self, output: Outgoing) -> Result<Published, BusError> {
        let subject = subject_for(&self.ns, &output.message);
        self.send(subject, output.into_wire()?).await
    }

    async fn subscribe(&self, stage: Stage) -> Result<JetStreamSubscription, BusError> {
        self.subscribe_stage(stage).await
    }
}

impl JetStreamBus {
    async fn publish_ref(
        &self,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<Published, BusError> {
        let subject = subject_for(&self.ns, message);
        self.send(subject, Wire::of(envelope, message)?).await
    }

    /// Send a message's wire form and wait for the server to store it.
    async fn send(&self, subject: String, wire: Wire) -> Result<Published, BusError> {
        let fail = |e: String| BusError::Publish {
            subject: subject.clone(),
            reason: e,
        };
        let ack = self
            .js
            .publish_with_headers(subject.clone(), header_map(wire.headers), wire.body.into())
            .await
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Published {
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe_stage(&self, stage: Stage) -> Result<JetStreamSubscription, BusError> {
        let consumer = self.consumer(stage).await?;
        let messages = self.pull(&consumer).await.map_err(|e| BusError::Receive {
            stage,
            reason: e.to_string(),
        })?;
        Ok(JetStreamSubscription {
            stage,
            messages,
            retired: self.retired_messages(stage).await,
        })
    }

    async fn pull(
        &self,
        consumer: &consumer::PullConsumer,
    ) -> Result<consumer::pull::Stream, consumer::StreamError> {
        consumer
            .stream()
            .max_messages_per_batch(self.cfg.concurrency.max(1))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
    }

    /// The stage's messages left in the retired work stream of an earlier release, through
    /// the stage's durable consumer there (made if no worker of the stage ever ran); `None`
    /// when there is no such stream.
    async fn retired_messages(&self, stage: Stage) -> Option<Retired> {
        let name = self.ns.legacy_work_stream();
        let legacy = self.js.get_stream(&name).await.ok()?;
        let consumer = legacy
            .get_or_create_consumer(&self.ns.consumer(stage), self.consumer_config(stage))
            .await
            .ok()?;
        tracing::info!(%stage, stream = %name, "also handling this stage's messages left in the retired work stream");
        Some(Retired {
            messages: self.pull(&consumer).await.ok()?,
            js: self.js.clone(),
            name,
            check: tokio::time::interval(LEGACY_CHECK),
        })
    }
}

/// A subscription's pull from the retired work stream, until that stream is empty.
struct Retired {
    messages: consumer::pull::Stream,
    js: jetstream::Context,
    name: String,
    check: tokio::time::Interval,
}

impl Retired {
    /// Whether the stream is empty or gone (deleted by another worker once empty); any
    /// other error may pass.
    async fn drained(&self) -> bool {
        match self.js.get_stream(&self.name).await {
            Ok(s) => s.cached_info().state.messages == 0,
            Err(e) => matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ),
        }
    }
}

/// How often a subscription still draining the retired work stream checks whether it is
/// empty (and then deletes it).
const LEGACY_CHECK: Duration = Duration::from_secs(10);

/// Deletes the retired work stream; another worker may have done it first.
async fn delete_retired(js: &jetstream::Context, name: &str) {
    if js.delete_stream(name).await.is_ok() {
        tracing::info!(stream = %name, "deleted the retired work stream: it is empty");
    }
}

pub struct JetStreamSubscription {
    stage: Stage,
    messages: consumer::pull::Stream,
    /// The stage's messages left in the retired work stream, until it is empty.
    retired: Option<Retired>,
}

impl Subscription for JetStreamSubscription {
    type Delivery = JetStreamDelivery;

    async fn next(&mut self) -> Option<Result<JetStreamDelivery, BusError>> {
        let stage = self.stage;
        let m = loop {
            let Some(retired) = self.retired.as_mut() else {
                break self.messages.next().await?;
            };
            tokio::select! {
                m = self.messages.next() => break m?,
                m = retired.messages.next() => match m {
                    Some(Ok(m)) => break Ok(m),
                    // A missed heartbeat while a server restarts: the pull goes on.
                    Some(Err(e)) => tracing::debug!(%stage, error = %e, "pulling from the retired work stream"),
                    None => self.retired = None,
                },
                _ = retired.check.tick() => {
                    if retired.drained().await {
                        delete_retired(&retired.js, &retired.name).await;
                        self.retired = None;
                    }
                }
            }
        };
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
        let envelope = envelope_of(headers).map_err(|e| Poison {
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
    let envelope = envelope_of(headers).ok()?;
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
                let what = format!("following {stream}");
                let err = |e: Failed| e.setup(&what);
                let s = js.get_stream(&stream).await.map_err(|e| err(failed(e)))?;
                let c = s
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject: filter,
                        deliver_policy: policy,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| err(failed(e)))?;
                c.messages().await.map_err(|e| {
                    err(Failed {
                        reason: e.to_string(),
                        transient: true,
                    })
                })
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
