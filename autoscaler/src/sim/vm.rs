//! A web VM: a k-server FIFO queue (Tomcat's worker threads and its accept queue), and
//! where it is in its life.

use std::collections::VecDeque;

/// One request on its way through the site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub id: u64,
    /// When the client sent it, seconds.
    pub sent: f64,
    /// The load phase it belongs to (closed loop: the client's phase).
    pub phase: u32,
    /// A closed-loop client sends its next request when this one is answered.
    pub closed: bool,
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VmState {
    /// Asked for, not yet taking requests.
    Booting,
    /// In the splitter's pool.
    Active,
    /// Out of the pool; the requests it has finish, then it is deleted.
    Draining,
    /// Deleted.
    Gone,
}

/// A VM and its queue.
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    /// Seconds since the run began (negative for the VMs there from the start).
    pub created_at: f64,
    pub deleted_at: Option<f64>,
    pub state: VmState,
    /// Requests it serves at once (Tomcat `maxThreads`).
    pub threads: u32,
    pub in_service: Vec<Request>,
    pub queue: VecDeque<Request>,
    /// Since when it has failed (crashed, or its heartbeats stopped), unknown to the
    /// conductor until it notices.
    pub failed_at: Option<f64>,
    /// Crashed: serves nothing more.
    pub crashed: bool,
}

impl Vm {
    pub fn new(name: String, created_at: f64, state: VmState, threads: u32) -> Vm {
        Vm {
            name,
            created_at,
            deleted_at: None,
            state,
            threads: threads.max(1),
            in_service: Vec::with_capacity(threads as usize),
            queue: VecDeque::new(),
            failed_at: None,
            crashed: false,
        }
    }

    /// Requests on it: in service and waiting (what jkstatus calls busy, and more).
    pub fn busy(&self) -> u32 {
        (self.in_service.len() + self.queue.len()) as u32
    }

    /// Takes `request`; returns it when a thread starts on it now (the caller schedules
    /// its end), `None` when it waits.
    pub fn admit(&mut self, request: Request) -> Option<Request> {
        if self.in_service.len() < self.threads as usize {
            self.in_service.push(request);
            Some(request)
        } else {
            self.queue.push_back(request);
            None
        }
    }

    /// Request `id` is done; returns it and the next request a thread starts on, if any.
    pub fn complete(&mut self, id: u64) -> Option<(Request, Option<Request>)> {
        let i = self.in_service.iter().position(|r| r.id == id)?;
        let done = self.in_service.swap_remove(i);
        let next = self.queue.pop_front();
        if let Some(next) = next {
            self.in_service.push(next);
        }
        Some((done, next))
    }

    /// Everything on it, for a crash or a deletion: those requests fail.
    pub fn take_all(&mut self) -> Vec<Request> {
        let mut all: Vec<Request> = self.in_service.drain(..).collect();
        all.extend(self.queue.drain(..));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> Request {
        Request {
            id,
            sent: 0.0,
            phase: 0,
            closed: true,
        }
    }

    #[test]
    fn k_servers_then_first_in_first_out() {
        let mut vm = Vm::new("web-1".into(), 0.0, VmState::Active, 2);
        assert!(vm.admit(request(1)).is_some());
        assert!(vm.admit(request(2)).is_some());
        assert!(vm.admit(request(3)).is_none());
        assert!(vm.admit(request(4)).is_none());
        assert_eq!(vm.busy(), 4);
        let (done, next) = vm.complete(2).unwrap();
        assert_eq!((done.id, next.map(|r| r.id)), (2, Some(3)));
        assert!(vm.complete(2).is_none(), "already done");
        assert_eq!(vm.take_all().len(), 3);
        assert_eq!(vm.busy(), 0);
    }
}
