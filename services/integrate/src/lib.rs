//! The integration stage: the end of every repair. Writes `final.patch`, `decision.md`,
//! `repair_report.md` and `report.json` under `repairs/repair-<id>/`, stores a new iteration
//! (the project with the patch applied, its parent the repaired one), records the outcome in
//! history, and publishes `RepairCompleted`. It owns the ledger of repairs and iterations.

pub mod handler;
pub mod report;
