//! The fault-injection suite, short form (the long one: `cargo bench -p coval-tests --bench
//! faults`): 200 repairs through fast workers while workers are SIGKILLed, SIGSTOPped beyond
//! the ack wait, all restarted at once, and the nats-server restarted; each repair completes
//! exactly once. `COVAL_FAULT_SEED=N` replays a schedule.

use std::time::Duration;

use anyhow::Result;
use coval_tests::faults::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_repairs_complete_exactly_once_through_kills_stops_and_restarts() -> Result<()>
{
    let seed = Options::seed_from_env();
    println!("fault seed: {seed} (COVAL_FAULT_SEED={seed} replays this schedule)");
    let o = Options {
        repairs: 200,
        copies: 2,
        kills: 6,
        stops: 2,
        server_restarts: 1,
        full_restarts: 1,
        seed,
        settle_within: Duration::from_secs(40),
        testkit: env!("CARGO_BIN_EXE_testkit").into(),
    };
    let report = faults::run(&o).await?;
    println!("{}", report.summary());
    assert_eq!(
        (
            report.kills,
            report.stops,
            report.server_restarts,
            report.full_restarts
        ),
        (o.kills, o.stops, o.server_restarts, o.full_restarts),
        "not every scheduled fault was injected"
    );
    Ok(())
}
