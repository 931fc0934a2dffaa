//! A three-node JetStream cluster from `deploy/nats/cluster.conf` on loopback ports: streams
//! and buckets get the configured replicas, repairs complete while the work stream's leader
//! is killed and restarted, and workers started while the cluster has no quorum wait for it
//! instead of exiting.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bus::jetstream::JetStreamBus;
use coval_tests::fleet::{self, Fleet};
use coval_tests::{NatsCluster, SyncMode, request, test_bus_config};
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use store::projects::Bucket;

fn r3() -> settings::BusConfig {
    settings::BusConfig {
        replicas: 3,
        max_reconnects: 1000,
        ..test_bus_config()
    }
}

#[tokio::test]
async fn streams_and_buckets_are_created_with_the_configured_replicas() -> Result<()> {
    let cluster = NatsCluster::start(SyncMode::Always)?;
    cluster.wait_jetstream(Duration::from_secs(30)).await?;
    let ns = Namespace::new("rep")?;
    let bus = JetStreamBus::connect(&cluster.url, ns.clone(), r3()).await?;
    let bucket = Bucket::open_replicated(bus.context(), &ns.snapshot_bucket(), 3).await?;
    let mut names: Vec<String> = Stage::WORKERS.map(|s| ns.work_stream(s)).into();
    names.extend([ns.dead_letter_stream(), ns.event_stream()]);
    names.push(format!("OBJ_{}", bucket.name()));
    for name in names {
        let mut s = bus.context().get_stream(&name).await?;
        let info = s.info().await?;
        ensure!(
            info.config.num_replicas == 3,
            "{name}: {} replicas configured",
            info.config.num_replicas
        );
        let cl = info.cluster.as_ref().context("no cluster info")?;
        // The leader plus two followers, each on another node.
        ensure!(
            cl.leader.is_some() && cl.replicas.len() == 2,
            "{name}: leader {:?}, followers {:?}",
            cl.leader,
            cl.replicas.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[tokio::test]
async fn repairs_complete_while_the_work_streams_leader_is_killed_and_restarted() -> Result<()> {
    let mut cluster = NatsCluster::start(SyncMode::Always)?;
    cluster.wait_jetstream(Duration::from_secs(30)).await?;
    let ns_name = "clu";
    let ns = Namespace::new(ns_name)?;
    // The client creates the R3 streams first; workers find them.
    let bus = JetStreamBus::connect(&cluster.url, ns.clone(), r3()).await?;
    let mut fleet = Fleet::new(env!("CARGO_BIN_EXE_testkit").as_ref())?;
    let mut integrate = 0;
    for stage in Stage::WORKERS {
        let slot = fleet.add(
            stage,
            &cluster.url,
            ns_name,
            &["--replicas", "3", "--max-deliver", "20", "--slow-ms", "20"],
        )?;
        if stage == Stage::Integrate {
            integrate = slot;
        }
    }
    fleet.wait_ready(Duration::from_secs(30)).await?;

    let repairs: Vec<RepairId> = (0..40).map(|_| RepairId::new()).collect();
    for r in &repairs[..20] {
        fleet::publish_retrying(
            &bus,
            &Envelope::origin(Kind::RepairRequested, *r),
            Message::RepairRequested(request(*r)),
        )
        .await?;
    }
    // Kill the node that leads the first stage's work stream (every repair passes through
    // it) while those repairs are in flight.
    let leader = {
        let mut s = bus
            .context()
            .get_stream(ns.work_stream(Stage::Triage))
            .await?;
        let info = s.info().await?;
        info.cluster
            .clone()
            .and_then(|c| c.leader)
            .context("the work stream has no leader")?
    };
    let victim = leader
        .strip_prefix("nats-")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .with_context(|| format!("leader {leader:?} is not a node of the cluster"))?;
    cluster.kill(victim)?;
    for r in &repairs[20..] {
        fleet::publish_retrying(
            &bus,
            &Envelope::origin(Kind::RepairRequested, *r),
            Message::RepairRequested(request(*r)),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(victim)?;

    // Generous: every message is fsynced on three nodes, and under the test command's other
    // work (image builds, compiles) a disk's fsyncs can take a second each.
    let events = fleet::completion_events(&bus, &repairs, Duration::from_secs(240)).await?;
    let done = events.len();
    let exited = fleet.exited();
    fleet.stop_all().await?;
    fleet::check_exactly_once(&events, &fleet.slots[integrate].store, &repairs).with_context(
        || {
            format!(
                "{done} of {} completed; killed {leader}\n{exited}\n{}",
                repairs.len(),
                cluster.logs()
            )
        },
    )?;
    // The restarted node caught up: it serves the stream again as leader or follower.
    let mut s = bus
        .context()
        .get_stream(ns.work_stream(Stage::Triage))
        .await?;
    let info = s.info().await?;
    let cl = info.cluster.clone().context("cluster info")?;
    ensure!(
        cl.leader.as_deref() == Some(leader.as_str())
            || cl.replicas.iter().any(|r| r.name == leader),
        "{leader} is not back in the stream's replica set"
    );
    Ok(())
}

#[tokio::test]
async fn workers_started_while_the_cluster_has_no_quorum_wait_and_then_serve() -> Result<()> {
    let mut cluster = NatsCluster::start(SyncMode::Always)?;
    cluster.wait_jetstream(Duration::from_secs(30)).await?;
    let ns_name = "quo";
    let ns = Namespace::new(ns_name)?;
    let bus = JetStreamBus::connect(&cluster.url, ns.clone(), r3()).await?;
    // One node of three: no meta leader, no stream quorum; stream and consumer requests
    // time out or are refused as "cluster not available".
    cluster.kill(1)?;
    cluster.kill(2)?;
    let mut fleet = Fleet::new(env!("CARGO_BIN_EXE_testkit").as_ref())?;
    let mut integrate = 0;
    for stage in Stage::WORKERS {
        let slot = fleet.add(stage, &cluster.url, ns_name, &["--replicas", "3"])?;
        if stage == Stage::Integrate {
            integrate = slot;
        }
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let exited = fleet.exited();
    ensure!(
        exited.is_empty(),
        "workers gave up without quorum:\n{exited}"
    );
    let early: usize = fleet
        .heard
        .lock()
        .map(|h| h.ready.values().sum())
        .unwrap_or(0);
    ensure!(
        early == 0,
        "{early} workers said ready before their consumer could exist"
    );
    cluster.restart(1)?;
    cluster.restart(2)?;
    if let Err(e) = fleet.wait_ready(Duration::from_secs(50)).await {
        return Err(e.context(format!("{}\n{}", fleet.exited(), cluster.logs())));
    }

    let repairs: Vec<RepairId> = (0..5).map(|_| RepairId::new()).collect();
    for r in &repairs {
        fleet::publish_retrying(
            &bus,
            &Envelope::origin(Kind::RepairRequested, *r),
            Message::RepairRequested(request(*r)),
        )
        .await?;
    }
    let events = fleet::completion_events(&bus, &repairs, Duration::from_secs(60)).await?;
    let exited = fleet.exited();
    fleet.stop_all().await?;
    fleet::check_exactly_once(&events, &fleet.slots[integrate].store, &repairs)
        .with_context(|| format!("{exited}\n{}", cluster.logs()))
}
