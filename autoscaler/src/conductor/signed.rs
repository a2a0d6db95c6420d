//! Who sent an agent message (issue 17, item 2): its MAC checked against its signer's key
//! before the body is read, the payload's VM held to the signer, and its sequence number
//! held above the last one the same VM sent of the same kind ([`Sequences`]), so a
//! message copied off the broker cannot be played again. Pool updates the conductor
//! sends are signed here too, with the splitter's key.

use std::collections::BTreeMap;

use lapin::message::Delivery;

use crate::messaging::{
    signing::{MessageSecrets, Signature},
    DropReason,
};

/// The signer of `delivery`, when its MAC is that signer's MAC of the exact bytes.
pub fn verify(delivery: &Delivery, secrets: &MessageSecrets) -> Result<String, DropReason> {
    let signature =
        Signature::of(delivery.properties.headers().as_ref()).ok_or(DropReason::Unsigned)?;
    match secrets.verify(&signature.signer, &delivery.data, &signature.mac) {
        true => Ok(signature.signer),
        false => Err(DropReason::BadMac(signature.signer)),
    }
}

/// Refused unless the message speaks for its signer's VM (`vm_id`, the payload's): a
/// VM's key signs for that VM alone.
pub fn held_to_signer(vm_id: &str, signer: &str) -> Result<(), DropReason> {
    match vm_id == signer {
        true => Ok(()),
        false => Err(DropReason::BadMac(signer.to_owned())),
    }
}

/// The last sequence number taken from each VM, per group and message kind (a kind
/// travels on one channel in order; kinds do not keep their order between them). Holds
/// only VMs the cloud lists in a group steered here ([`Sequences::retain_listed`]).
#[derive(Debug, Default)]
pub struct Sequences {
    last: BTreeMap<(String, String, &'static str), u64>,
}

impl Sequences {
    /// Takes `seq` from `vm` of `group` for messages of `kind`: refused when absent or not
    /// above the last one taken.
    pub fn take(
        &mut self,
        group: &str,
        vm: &str,
        kind: &'static str,
        seq: Option<u64>,
    ) -> Result<(), DropReason> {
        let seq = seq.ok_or(DropReason::NoSequence)?;
        let key = (group.to_owned(), vm.to_owned(), kind);
        match self.last.get(&key) {
            Some(&last) if seq <= last => Err(DropReason::Replayed { seq, last }),
            _ => {
                self.last.insert(key, seq);
                Ok(())
            }
        }
    }

    /// Keeps only the VMs of `group` that `listed` says the cloud lists there, after the
    /// group's listing: a walk over that group's entries alone (a conductor lists each of
    /// its groups every tick). A group no longer steered here: [`Self::forget_group`].
    pub fn retain_listed(&mut self, group: &str, listed: impl Fn(&str) -> bool) {
        let gone: Vec<_> = self
            .of_group(group)
            .filter(|(_, vm, _)| !listed(vm))
            .cloned()
            .collect();
        for key in gone {
            self.last.remove(&key);
        }
    }

    /// Forgets every VM of `group` (handed over, or destroyed).
    pub fn forget_group(&mut self, group: &str) {
        let keys: Vec<_> = self.of_group(group).cloned().collect();
        for key in keys {
            self.last.remove(&key);
        }
    }

    fn of_group<'a>(
        &'a self,
        group: &'a str,
    ) -> impl Iterator<Item = &'a (String, String, &'static str)> + 'a {
        let start = (group.to_owned(), String::new(), "");
        self.last
            .range(start..)
            .map(|(key, _)| key)
            .take_while(move |(g, _, _)| g == group)
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_number_is_taken_once_per_vm_and_kind() {
        let mut seqs = Sequences::default();
        assert_eq!(seqs.take("g", "w", "heartbeat", Some(5)), Ok(()));
        assert_eq!(
            seqs.take("g", "w", "heartbeat", Some(5)),
            Err(DropReason::Replayed { seq: 5, last: 5 })
        );
        assert_eq!(
            seqs.take("g", "w", "heartbeat", Some(4)),
            Err(DropReason::Replayed { seq: 4, last: 5 })
        );
        // Another kind, another VM: their own runs.
        assert_eq!(seqs.take("g", "w", "metrics", Some(4)), Ok(()));
        assert_eq!(seqs.take("g", "v", "heartbeat", Some(1)), Ok(()));
        assert_eq!(
            seqs.take("g", "w", "heartbeat", None),
            Err(DropReason::NoSequence)
        );
        assert_eq!(seqs.take("h", "x", "heartbeat", Some(1)), Ok(()));
        seqs.retain_listed("g", |vm| vm == "v");
        assert_eq!(seqs.len(), 2, "g's v, and h's x untouched");
        seqs.forget_group("h");
        assert_eq!(seqs.len(), 1);
    }
}
