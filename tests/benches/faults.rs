//! The fault-injection suite, long form: more repairs and many more faults than the test
//! (`it::faults`), with the counts of faults injected and survived.
//!
//!   cargo bench -p coval-tests --bench faults [-- --repairs N --kills N --stops N
//!       --server-restarts N --full-restarts N --copies N]
//!
//! `COVAL_FAULT_SEED=N` replays a schedule (the seed is printed first).

use std::time::Duration;

use anyhow::Result;
use coval_tests::bench_arg as arg;
use coval_tests::faults::{self, Options};

#[tokio::main]
async fn main() -> Result<()> {
    let seed = Options::seed_from_env();
    println!("fault seed: {seed} (COVAL_FAULT_SEED={seed} replays this schedule)");
    let o = Options {
        repairs: arg("--repairs", 2000),
        copies: arg("--copies", 2),
        kills: arg("--kills", 40),
        stops: arg("--stops", 8),
        server_restarts: arg("--server-restarts", 4),
        full_restarts: arg("--full-restarts", 3),
        seed,
        settle_within: Duration::from_secs(180),
        testkit: env!("CARGO_BIN_EXE_testkit").into(),
    };
    let report = faults::run(&o).await?;
    println!("{}", report.summary());
    Ok(())
}
