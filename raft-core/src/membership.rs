//! Applying one membership change to a membership.

use crate::message::{ConfChange, ConfState, NodeId};

/// Applies `change` to `membership`. Changes that make no sense (demoting a voter, removing the
/// last voter) leave it as it is; the leader refuses to propose them in the first place.
pub(crate) fn apply(membership: &mut ConfState, change: ConfChange) {
    match change {
        ConfChange::AddVoter(id) => {
            remove(&mut membership.learners, id);
            insert(&mut membership.voters, id);
        }
        ConfChange::AddLearner(id) if !membership.is_voter(id) => {
            insert(&mut membership.learners, id);
        }
        ConfChange::AddLearner(_) => {}
        ConfChange::RemoveNode(id) if membership.voters != [id] => {
            remove(&mut membership.voters, id);
            remove(&mut membership.learners, id);
        }
        ConfChange::RemoveNode(_) => {}
    }
}

fn insert(list: &mut Vec<NodeId>, id: NodeId) {
    if let Err(position) = list.binary_search(&id) {
        list.insert(position, id);
    }
}

fn remove(list: &mut Vec<NodeId>, id: NodeId) {
    list.retain(|member| *member != id);
}

#[cfg(test)]
mod tests {
    use super::apply;
    use crate::message::{ConfChange, ConfState};

    #[test]
    fn changes_apply_one_server_at_a_time_and_refuse_nonsense() {
        let mut membership = ConfState::with_voters(&[1, 2]);
        apply(&mut membership, ConfChange::AddLearner(3));
        assert_eq!(
            (membership.voters.as_slice(), membership.learners.as_slice()),
            (&[1, 2][..], &[3][..])
        );
        apply(&mut membership, ConfChange::AddVoter(3));
        assert_eq!(
            (membership.voters.as_slice(), membership.learners.as_slice()),
            (&[1, 2, 3][..], &[][..])
        );
        apply(&mut membership, ConfChange::AddLearner(1));
        assert!(membership.is_voter(1), "no demotion");
        apply(&mut membership, ConfChange::RemoveNode(1));
        apply(&mut membership, ConfChange::RemoveNode(2));
        apply(&mut membership, ConfChange::RemoveNode(3));
        assert_eq!(membership.voters, [3], "the last voter stays");
    }

    /// A voter named as a learner stays a voter only: it is not listed as a learner besides
    /// (a membership whose learners and voters overlap is invalid).
    #[test]
    fn adding_a_voter_as_a_learner_changes_nothing() {
        let mut membership = ConfState::with_voters(&[1, 2]);
        apply(&mut membership, ConfChange::AddLearner(2));
        assert_eq!(membership, ConfState::with_voters(&[1, 2]));
        assert!(membership.is_valid());
    }
}
