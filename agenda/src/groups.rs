//! Groups and memberships (the groups shard).
//!
//! Every change of a group's members rewrites the group's own record (its `revision`), and every
//! operation that acts on the member list reads that record through its transaction: so two
//! admins changing the same group at once cannot both act on the list as it was (one retries).

use serde::{Deserialize, Serialize};

use crate::Agenda;
use crate::error::AgendaError;
use crate::keys;
use crate::store::{ATTEMPTS_MAX, Env, Store, Tx, decode};

/// What a member may do in a group.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes part; may leave.
    Member,
    /// Also adds and removes members.
    Admin,
    /// Also makes and unmakes admins. Exactly one per group: the creator.
    Owner,
}

/// A group as stored at `gr/g/<group>/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Group {
    /// The group id: 3–32 of `a`–`z`, `0`–`9`, `-`.
    pub id: String,
    /// The name people see.
    pub name: String,
    /// Who made it (its owner).
    pub owner: String,
    /// When it was made.
    pub created_ms: i64,
    /// Counts the changes of its member list.
    pub revision: u64,
}

/// A membership as stored at `gr/g/<group>/member/<user>` and `gr/u/<user>/<group>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Membership {
    /// The member's role.
    pub role: Role,
}

/// A group with its members, as a member sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group: Group,
    /// Its members and their roles, by name.
    pub members: Vec<(String, Role)>,
}

/// One of a user's groups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MyGroup {
    /// The group id.
    pub id: String,
    /// The user's role in it.
    pub role: Role,
}

/// The longest group name.
pub const GROUP_NAME_CHARS_MAX: usize = 100;

/// The most members a group may have: an invitation to a group expands to every member, within
/// one event's limits.
pub const GROUP_MEMBERS_MAX: usize = 500;

impl<S: Store, E: Env> Agenda<S, E> {
    /// Creates a group owned by `caller`.
    pub async fn create_group(
        &self,
        caller: &str,
        id: &str,
        name: &str,
    ) -> Result<Group, AgendaError> {
        keys::check_name("group id", id)?;
        if name.trim().is_empty()
            || name.chars().count() > GROUP_NAME_CHARS_MAX
            || name.chars().any(char::is_control)
        {
            return Err(AgendaError::invalid(
                "group name",
                format!("1 to {GROUP_NAME_CHARS_MAX} characters, not blank"),
            ));
        }
        let group = Group {
            id: id.to_owned(),
            name: name.to_owned(),
            owner: caller.to_owned(),
            created_ms: self.env.now_ms(),
            revision: 1,
        };
        let mut tx = Tx::new(&self.store);
        if tx.get(keys::group(id)).await?.is_some() {
            return Err(AgendaError::AlreadyExists(format!("group {id}")));
        }
        tx.put_record(keys::group(id), &group);
        let owner = Membership { role: Role::Owner };
        tx.put_record(keys::member(id, caller), &owner);
        tx.put_record(keys::group_of(caller, id), &owner);
        match tx.commit().await? {
            Some(_) => Ok(group),
            None => Err(AgendaError::AlreadyExists(format!("group {id}"))),
        }
    }

    /// A group and its members; only members may look.
    pub async fn group(&self, caller: &str, id: &str) -> Result<GroupView, AgendaError> {
        keys::check_name("group id", id)?;
        let view = self.group_view(id).await?;
        if !view.members.iter().any(|(name, _)| name == caller) {
            return Err(AgendaError::NotFound(format!("group {id}")));
        }
        Ok(view)
    }

    async fn group_view(&self, id: &str) -> Result<GroupView, AgendaError> {
        let key = keys::group(id);
        let Some(found) = self.store.get(key.clone()).await? else {
            return Err(AgendaError::NotFound(format!("group {id}")));
        };
        let group: Group = decode(&key, &found.value)?;
        let mut members = Vec::new();
        for (key, versioned) in crate::store::scan_prefix(&self.store, &keys::members(id)).await? {
            let membership: Membership = decode(&key, &versioned.value)?;
            members.push((keys::last_part(&key), membership.role));
        }
        Ok(GroupView { group, members })
    }

    /// The members of a group, by name (for invitations to a whole group). The caller must be a
    /// member: one cannot invite a group one does not belong to.
    pub async fn group_members(&self, caller: &str, id: &str) -> Result<Vec<String>, AgendaError> {
        let view = self.group(caller, id).await?;
        Ok(view.members.into_iter().map(|(name, _)| name).collect())
    }

    /// The groups `user` belongs to, with their role.
    pub async fn my_groups(&self, user: &str) -> Result<Vec<MyGroup>, AgendaError> {
        let mut groups = Vec::new();
        for (key, versioned) in
            crate::store::scan_prefix(&self.store, &keys::groups_of(user)).await?
        {
            let membership: Membership = decode(&key, &versioned.value)?;
            groups.push(MyGroup {
                id: keys::last_part(&key),
                role: membership.role,
            });
        }
        Ok(groups)
    }

    /// Adds `user` to a group (or changes their role). Owners and admins add members; only the
    /// owner makes or unmakes admins; nobody makes a second owner.
    pub async fn add_member(
        &self,
        caller: &str,
        id: &str,
        user: &str,
        role: Role,
    ) -> Result<GroupView, AgendaError> {
        keys::check_name("group id", id)?;
        keys::check_name("user", user)?;
        if role == Role::Owner {
            return Err(AgendaError::invalid(
                "role",
                "a group has one owner, its creator",
            ));
        }
        // The user must exist (a read of the users shard: accounts are never deleted).
        self.account(user).await?;
        self.change_members(caller, id, |caller_role, members| {
            let current = members
                .iter()
                .find(|(name, _)| name == user)
                .map(|(_, r)| *r);
            let allowed = match (caller_role, current, role) {
                (Role::Owner, Some(Role::Owner), _) => false,
                (Role::Owner, _, _) => true,
                (Role::Admin, None | Some(Role::Member), Role::Member) => true,
                _ => false,
            };
            if !allowed {
                return Err(AgendaError::Forbidden(format!(
                    "a {caller_role:?} may not make {user} a {role:?} of {id}"
                )));
            }
            if current.is_none() && members.len() >= GROUP_MEMBERS_MAX {
                return Err(AgendaError::invalid(
                    "group",
                    format!("at most {GROUP_MEMBERS_MAX} members"),
                ));
            }
            Ok((user.to_owned(), Some(role)))
        })
        .await
    }

    /// Removes `user` from a group: a member leaves by naming themself; owners remove anyone but
    /// themselves, admins remove members. The owner cannot leave.
    pub async fn remove_member(
        &self,
        caller: &str,
        id: &str,
        user: &str,
    ) -> Result<GroupView, AgendaError> {
        keys::check_name("group id", id)?;
        keys::check_name("user", user)?;
        self.change_members(caller, id, |caller_role, members| {
            let Some(current) = members
                .iter()
                .find(|(name, _)| name == user)
                .map(|(_, r)| *r)
            else {
                return Err(AgendaError::NotFound(format!("{user} in group {id}")));
            };
            let allowed = match current {
                Role::Owner => false,
                _ if user == caller => true,
                Role::Admin => caller_role == Role::Owner,
                Role::Member => caller_role >= Role::Admin,
            };
            if !allowed {
                return Err(AgendaError::Forbidden(format!(
                    "a {caller_role:?} may not remove the {current:?} {user} from {id}"
                )));
            }
            Ok((user.to_owned(), None))
        })
        .await
    }

    /// Reads the group and its members in one transaction, asks `decide` what to change (a user
    /// and their new role, or none to remove), and commits if the group did not change meanwhile.
    async fn change_members(
        &self,
        caller: &str,
        id: &str,
        decide: impl Fn(Role, &[(String, Role)]) -> Result<(String, Option<Role>), AgendaError>,
    ) -> Result<GroupView, AgendaError> {
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let Some(mut group) = tx.get_record::<Group>(keys::group(id)).await? else {
                return Err(AgendaError::NotFound(format!("group {id}")));
            };
            let mut members = Vec::new();
            for (key, versioned) in tx.scan_prefix(&keys::members(id)).await? {
                let membership: Membership = decode(&key, &versioned.value)?;
                members.push((keys::last_part(&key), membership.role));
            }
            let Some(caller_role) = members.iter().find(|(name, _)| name == caller).map(|m| m.1)
            else {
                return Err(AgendaError::NotFound(format!("group {id}")));
            };
            let (user, role) = decide(caller_role, &members)?;
            group.revision += 1;
            tx.put_record(keys::group(id), &group);
            members.retain(|(name, _)| *name != user);
            match role {
                Some(role) => {
                    tx.put_record(keys::member(id, &user), &Membership { role });
                    tx.put_record(keys::group_of(&user, id), &Membership { role });
                    members.push((user, role));
                    members.sort();
                }
                None => {
                    tx.delete(keys::member(id, &user));
                    tx.delete(keys::group_of(&user, id));
                }
            }
            if tx.commit().await?.is_some() {
                return Ok(GroupView { group, members });
            }
        }
        Err(AgendaError::Contended(format!("group {id}")))
    }
}
