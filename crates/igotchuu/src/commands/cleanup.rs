//! `igotchuu cleanup`: removes what crashed runs left (the snapshots the journal names, the
//! markers of runs that never recorded how they ended, restic's stale locks) and lists it. The
//! same stage every backup runs first (session::recovery), run on its own; not recorded as a run.

use super::{fail, load_plan, root, Global};
use crate::events::Events;
use crate::session::pipeline;
use crate::{exit, stop};

/// `igotchuu cleanup`: returns the exit code.
pub fn main(g: &Global) -> i32 {
    let plan = match load_plan(g) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let held = match root::hold(&plan, None) {
        Ok(h) => h,
        Err(code) => return code,
    };
    let run_id = format!("{}-{}", plan.timestamp, std::process::id());
    let rt = match root::enter() {
        Ok(rt) => rt,
        Err(msg) => return fail(msg),
    };
    rt.block_on(async {
        let mut events = Events::new();
        events.subscribe(root::log_listener(run_id, g.verbose));
        let (stop_handle, mut stop) = stop::channel();
        if let Err(e) = stop::install_signal_handlers(stop_handle.clone()) {
            root::signal_handlers_failed(&mut events, e);
            return exit::IGOTCHUU_FAILED;
        }
        pipeline::cleanup(&plan, &held.state, &mut events, &mut stop).await
    })
}
