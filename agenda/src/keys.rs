//! The key layout: where every agenda record lives, so that it routes to its shard (the default
//! map's first bytes: `ev/am/`, `ev/nz/`, `gr/`, `us/`; see ARCHITECTURE.md).
//!
//! | record | key | shard |
//! |---|---|---|
//! | account | `us/<user>/account` | users |
//! | session | `us/<user>/session/<sha-256 of the token, hex>` | users |
//! | iCalendar feed (its secret's SHA-256) | `us/<user>/feed` | users |
//! | group | `gr/g/<group>/info` | groups |
//! | membership | `gr/g/<group>/member/<user>` | groups |
//! | a user's groups | `gr/u/<user>/<group>` | groups |
//! | event | `ev/<b>/<owner>/e/<event>` | the owner's events shard |
//! | invitation | `ev/<b>/<attendee>/i/<event>` | the attendee's events shard |
//! | reply (the organizer's tally) | `ev/<b>/<organizer>/r/<event>/<attendee>` | the organizer's |
//! | outbox: an invitation to deliver | `ev/<b>/!o/i/<attendee>/<event>` | the organizer's |
//! | outbox: a reply to deliver | `ev/<b>/!o/r/<event>/<attendee>` | the attendee's |
//! | alerts (reminders) and what was sent | `ev/<b>/!a/<user>/<event>` | the user's |
//!
//! An event id is `<owner>.<16 hex digits>`: it names its organizer, so an id alone (in a URL,
//! in an invitation) says which shard holds the event.
//!
//! `<b>` is `am` for a name whose first character is `a`–`m`, else `nz` (the seed's rule: digits
//! go to n–z although they sort before `a`). Names and ids use `[a-z0-9-]` only, so `!o` and
//! `!a` (which sort before them) keep each events shard's outbox and its alerts in ranges of
//! their own, and no name can reach into another's records. An outbox key names its destination
//! record, so a newer version of the same delivery replaces an older one that was not delivered
//! yet.

use bytes::Bytes;

use crate::error::AgendaError;

/// The longest user name, group id or event id.
pub const NAME_BYTES_MAX: usize = 32;
/// The shortest user name or group id.
pub const NAME_BYTES_MIN: usize = 3;

/// Checks a user name or group id: 3–32 of `a`–`z`, `0`–`9`, `-`.
pub fn check_name(field: &'static str, name: &str) -> Result<(), AgendaError> {
    if !(NAME_BYTES_MIN..=NAME_BYTES_MAX).contains(&name.len()) {
        return Err(AgendaError::invalid(
            field,
            format!(
                "{NAME_BYTES_MIN} to {NAME_BYTES_MAX} characters, not {}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(AgendaError::invalid(
            field,
            format!("only a-z, 0-9 and '-' are allowed, not {bad:?}"),
        ));
    }
    Ok(())
}

/// A new event id: the owner's name, a dot, 16 hex digits.
pub fn event_id(owner: &str, random: &[u8; 32]) -> String {
    format!("{owner}.{}", crate::store::hex(&random[..8]))
}

/// The owner an event id names, if it is an event id (ids are made by the layer, but come back
/// in requests).
pub fn event_owner(id: &str) -> Result<&str, AgendaError> {
    let invalid = || AgendaError::invalid("event id", format!("{id:?} is not an event id"));
    let (owner, random) = id.split_once('.').ok_or_else(invalid)?;
    check_name("user", owner).map_err(|_| invalid())?;
    let hex = random.len() == 16
        && random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(invalid());
    }
    Ok(owner)
}

/// The events bucket of a user: `am` or `nz`.
pub fn bucket(user: &str) -> &'static str {
    match user.as_bytes().first() {
        Some(b'a'..=b'm') => "am",
        _ => "nz",
    }
}

fn key(text: String) -> Bytes {
    Bytes::from(text)
}

/// `us/<user>/account`.
pub fn account(user: &str) -> Bytes {
    key(format!("us/{user}/account"))
}

/// `us/<user>/session/`: every session of a user.
pub fn sessions(user: &str) -> Bytes {
    key(format!("us/{user}/session/"))
}

/// `us/<user>/session/<token hash>`.
pub fn session(user: &str, token_hash_hex: &str) -> Bytes {
    key(format!("us/{user}/session/{token_hash_hex}"))
}

/// `us/<user>/feed`: the user's iCalendar feed (see [`crate::ical`]).
pub fn feed(user: &str) -> Bytes {
    key(format!("us/{user}/feed"))
}

/// `gr/g/<group>/info`.
pub fn group(group: &str) -> Bytes {
    key(format!("gr/g/{group}/info"))
}

/// `gr/g/<group>/member/`: every membership of a group.
pub fn members(group: &str) -> Bytes {
    key(format!("gr/g/{group}/member/"))
}

/// `gr/g/<group>/member/<user>`.
pub fn member(group: &str, user: &str) -> Bytes {
    key(format!("gr/g/{group}/member/{user}"))
}

/// `gr/u/<user>/`: the groups of a user.
pub fn groups_of(user: &str) -> Bytes {
    key(format!("gr/u/{user}/"))
}

/// `gr/u/<user>/<group>`.
pub fn group_of(user: &str, group: &str) -> Bytes {
    key(format!("gr/u/{user}/{group}"))
}

/// `ev/<b>/<user>/`: a user's calendar: the events they own, their invitations, the replies to
/// their events.
pub fn calendar(user: &str) -> Bytes {
    key(format!("ev/{}/{user}/", bucket(user)))
}

/// `gr/g/<group>/`: a group's record and memberships.
pub fn group_records(group: &str) -> Bytes {
    key(format!("gr/g/{group}/"))
}

/// `ev/<b>/<owner>/e/`: every event a user owns.
pub fn events(owner: &str) -> Bytes {
    key(format!("ev/{}/{owner}/e/", bucket(owner)))
}

/// `ev/<b>/<owner>/e/<event>` for an event id checked by [`event_owner`].
pub fn event(event: &str) -> Bytes {
    let owner = owner_of(event);
    key(format!("ev/{}/{owner}/e/{event}", bucket(owner)))
}

fn owner_of(event: &str) -> &str {
    event.split_once('.').map_or(event, |(owner, _)| owner)
}

/// `ev/<b>/<attendee>/i/`: every invitation a user received.
pub fn invitations(attendee: &str) -> Bytes {
    key(format!("ev/{}/{attendee}/i/", bucket(attendee)))
}

/// `ev/<b>/<attendee>/i/<event>`.
pub fn invitation(attendee: &str, event: &str) -> Bytes {
    key(format!("ev/{}/{attendee}/i/{event}", bucket(attendee)))
}

/// `ev/<b>/<organizer>/r/<event>/`: every reply to an event.
pub fn replies(event: &str) -> Bytes {
    let organizer = owner_of(event);
    key(format!("ev/{}/{organizer}/r/{event}/", bucket(organizer)))
}

/// `ev/<b>/<organizer>/r/<event>/<attendee>`.
pub fn reply(event: &str, attendee: &str) -> Bytes {
    let organizer = owner_of(event);
    key(format!(
        "ev/{}/{organizer}/r/{event}/{attendee}",
        bucket(organizer)
    ))
}

/// `ev/<b>/!o/`: the outbox of one events shard (`b` is `am` or `nz`).
pub fn outbox(bucket: &str) -> Bytes {
    key(format!("ev/{bucket}/!o/"))
}

/// The outbox record that delivers an invitation to `attendee` (kept in the organizer's shard).
pub fn outbox_invitation(attendee: &str, event: &str) -> Bytes {
    key(format!(
        "ev/{}/!o/i/{attendee}/{event}",
        bucket(owner_of(event))
    ))
}

/// The outbox record that delivers `attendee`'s reply (kept in the attendee's shard).
pub fn outbox_reply(event: &str, attendee: &str) -> Bytes {
    key(format!("ev/{}/!o/r/{event}/{attendee}", bucket(attendee)))
}

/// `ev/<b>/!a/`: the alerts (reminders) of one events shard, for its scheduler to scan.
pub fn alerts_all(bucket: &str) -> Bytes {
    key(format!("ev/{bucket}/!a/"))
}

/// `ev/<b>/!a/<user>/`: a user's alerts (in the user's events shard).
pub fn alerts_of(user: &str) -> Bytes {
    key(format!("ev/{}/!a/{user}/", bucket(user)))
}

/// `ev/<b>/!a/<user>/<event>`: a user's alerts before each occurrence of one event, and what
/// was sent.
pub fn alerts(user: &str, event: &str) -> Bytes {
    key(format!("ev/{}/!a/{user}/{event}", bucket(user)))
}

/// The last `/`-separated part of a key.
pub fn last_part(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    text.rsplit('/').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::shard_of;

    #[test]
    fn names_are_lowercase_letters_digits_and_dashes() {
        assert!(check_name("user", "alice").is_ok());
        assert!(check_name("user", "b0b-2").is_ok());
        assert!(check_name("user", "al").is_err());
        assert!(check_name("user", &"a".repeat(33)).is_err());
        assert!(check_name("user", "Alice").is_err());
        assert!(check_name("user", "al/ce").is_err());
        assert!(check_name("user", "al!ce").is_err());
    }

    #[test]
    fn every_record_routes_to_its_shard() {
        assert_eq!(shard_of(&account("alice")), 4);
        assert_eq!(shard_of(&session("zed", "ab")), 4);
        assert_eq!(shard_of(&feed("alice")), 4);
        assert_eq!(shard_of(&feed("zed")), 4);
        assert_eq!(shard_of(&group("team")), 3);
        assert_eq!(shard_of(&group_of("alice", "team")), 3);
        assert_eq!(shard_of(&event("alice.0000000000000001")), 1);
        assert_eq!(shard_of(&event("mike.0000000000000001")), 1);
        assert_eq!(shard_of(&event("nora.0000000000000001")), 2);
        // A digit sorts before 'a' but goes to n-z, by the seed's rule.
        assert_eq!(shard_of(&event("0ops.0000000000000001")), 2);
        assert_eq!(shard_of(&invitation("bob", "nora.0000000000000001")), 1);
        assert_eq!(
            shard_of(&outbox_invitation("nora", "bob.0000000000000001")),
            1
        );
        assert_eq!(shard_of(&outbox_reply("bob.0000000000000001", "nora")), 2);
        assert_eq!(shard_of(&reply("bob.0000000000000001", "nora")), 1);
    }

    #[test]
    fn the_outbox_is_apart_from_every_user() {
        let outbox = outbox("am");
        for user in ["aaa", "000", "a-b", "mzz"] {
            assert!(!event(&format!("{user}.0000000000000001")).starts_with(&outbox));
        }
        assert!(outbox_invitation("nora", "alice.0000000000000001").starts_with(&outbox));
    }

    #[test]
    fn an_event_id_names_its_owner() {
        let id = event_id("alice", &[7; 32]);
        assert_eq!(id, "alice.0707070707070707");
        assert_eq!(event_owner(&id), Ok("alice"));
        for bad in [
            "alice",
            "alice.",
            "al.0707070707070707",
            "alice.07070707070707",
            "alice.070707070707070g",
            "Alice.0707070707070707",
            "alice.0707070707070707/x",
        ] {
            assert!(event_owner(bad).is_err(), "{bad}");
        }
    }
}
