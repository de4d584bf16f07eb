//! Schedules: whether each site is armed and disarmed when it should be.
//!
//! | module | what |
//! |---|---|
//! | [`plan`] | a site's windows, holidays, exceptions and extensions as instants in its time zone; which lateness holds at an instant; the next edge (pure) |
//! | [`store`] | plans from the database; raising and restoring schedule alarms ([`store::reconcile`]); operators' extensions |
//! | [`timer`] | every site at its next edge in the timer structure supervision uses; the look at due sites |
//!
//! Schedules are per **site**, not per area: the armed state meldkamer tracks is the site's
//! (`sites.armed_state`, set by every opening and closing report of any of its accounts and
//! areas), which is what the ARC phones about and what the schedule of a shop or an office
//! describes. A site with areas on different hours is checked against its last report: a
//! report from any area counts for the site. (Per-area schedules would need an armed state
//! per area first.)

pub mod plan;
pub mod store;
pub mod timer;
