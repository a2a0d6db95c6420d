//! Stage 6, the lifecycle: a starting group is ready once its splitter is up and heard
//! and runs the group's pool (with a web VM when the template has a minimum); a stopping
//! group moves on to deleting once the splitter has stopped listening (acknowledged),
//! is gone, or `drain_timeout` has passed; a deleting group deletes every VM and is gone
//! once none is left and no boot is in flight.

use super::{elapsed, url, Action, Group, Phase, Tick};
use crate::{
    cloud::VmStatus,
    notification::{Notification, TemplateReady},
    payload::Role,
};

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    match group.phase {
        Phase::Starting => ready_when_serving(group, tick),
        Phase::Stopping => {
            let since = *group.stopping_since.get_or_insert(tick.now);
            let splitter_live = !tick.live(Role::Splitter, &group.in_flight).is_empty();
            let stopped = group.pool.acked >= group.pool.generation;
            let waited = elapsed(tick.now, since) >= group.settings.drain_timeout;
            if stopped || !splitter_live || waited {
                group.phase = Phase::Deleting;
            }
        }
        Phase::Ready | Phase::Deleting | Phase::Gone => {}
    }
    if group.phase == Phase::Deleting {
        delete_everything(group, tick);
    }
}

fn ready_when_serving(group: &mut Group, tick: &mut Tick) {
    let splitter_up = tick
        .live(Role::Splitter, &group.in_flight)
        .iter()
        .any(|vm| vm.status == VmStatus::Active && group.heartbeat_fresh(vm, tick.obs, tick.now));
    let ready = splitter_up
        && group.pool.acked >= group.pool.generation
        && (group.template.min_vms() == 0 || !group.pool.members.is_empty());
    if ready {
        group.phase = Phase::Ready;
        tick.actions
            .push(Action::Notify(Notification::TemplateReady(TemplateReady {
                template: group.name().to_owned(),
                url: url(tick.obs),
                web_vms: group.pool.members.len(),
            })));
    }
}

fn delete_everything(group: &mut Group, tick: &mut Tick) {
    let obs = tick.obs;
    for vm in &obs.vms {
        if !group.in_flight.deletes.contains(&vm.id) && !tick.failed.contains(&vm.id) {
            group.delete(vm, tick);
        }
    }
    let boots = group.in_flight.web_boots + group.in_flight.splitter_boots;
    if obs.vms.is_empty() && boots == 0 {
        group.phase = Phase::Gone;
        tick.actions.push(Action::Forget);
    }
}
