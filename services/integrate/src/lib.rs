//! The integration stage: the end of every repair. Writes `final.patch`, `decision.md`,
//! `repair_report.md` and `report.json` under `repairs/repair-<id>/`, stores a new iteration
//! (the project with the patch applied, its parent the repaired one), records the outcome in
//! history, hands the report files to remote clients through the report bucket (distributed
//! mode), and publishes `RepairCompleted`. It owns the ledger of repairs and iterations, and
//! `iteration` is how a tree becomes an iteration on disk (`coval repair` imports with it).

pub mod handler;
pub mod iteration;
pub mod report;
