//! The token store: access and session tokens with an expiry, and rotating refresh tokens grouped
//! in families.
//!
//! The store never generates tokens itself. Callers pass the new token strings in, which keeps
//! every method deterministic and lets the HTTP handlers draw randomness before taking the lock.

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

/// How many random bytes back one token (32 characters once encoded).
const TOKEN_BYTES: usize = 24;

/// Returns a fresh random token such as `at_3q2-…`, or the OS random source's error.
pub(crate) fn generate_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Which endpoint issued a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenKind {
    /// An access token from `POST /oauth/token`.
    OAuth,
    /// A session token from `POST /session/login`.
    Session,
}

/// The outcome of looking up a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The token exists and has not expired.
    Valid(TokenKind),
    /// The token exists but its lifetime is over, or it was expired by an admin call.
    Expired,
    /// The store never issued this token.
    Unknown,
}

/// Why a refresh token was refused; every variant maps to `invalid_grant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshError {
    /// The store never issued this refresh token.
    Unknown,
    /// The token was already rotated out; presenting it revoked its whole family.
    Reused,
    /// The token's family was revoked earlier by the reuse of another member.
    Revoked,
}

impl RefreshError {
    /// Returns the `error_description` sent to the client.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Unknown => "refresh token is unknown",
            Self::Reused => "refresh token was already used; the grant is revoked",
            Self::Revoked => "refresh token was revoked",
        }
    }
}

/// One access or session token.
#[derive(Debug)]
struct AccessEntry {
    kind: TokenKind,
    expires_at: Instant,
}

/// One refresh token: the family it belongs to and whether it was rotated out.
#[derive(Debug)]
struct RefreshEntry {
    family: usize,
    used: bool,
}

/// A chain of refresh tokens that descend from one password grant.
#[derive(Debug)]
struct Family {
    scope: String,
    revoked: bool,
}

/// All tokens the emulator issued, keyed by their string.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    families: Vec<Family>,
}

impl TokenStore {
    /// Records an access or session token that stops working at `expires_at`.
    pub(crate) fn insert_access(&mut self, token: String, kind: TokenKind, expires_at: Instant) {
        self.access.insert(token, AccessEntry { kind, expires_at });
    }

    /// Returns whether `token` is valid, expired or unknown at `now`.
    pub(crate) fn check_access(&self, token: &str, now: Instant) -> Lookup {
        match self.access.get(token) {
            None => Lookup::Unknown,
            Some(entry) if now >= entry.expires_at => Lookup::Expired,
            Some(entry) => Lookup::Valid(entry.kind),
        }
    }

    /// Starts a new refresh family whose first member is `refresh_token`.
    pub(crate) fn start_family(&mut self, refresh_token: String, scope: String) {
        let family = self.families.len();
        self.families.push(Family {
            scope,
            revoked: false,
        });
        self.refresh.insert(
            refresh_token,
            RefreshEntry {
                family,
                used: false,
            },
        );
    }

    /// Rotates `presented` out and records `next` as the family's current refresh token.
    ///
    /// Returns the family's scope. Fails when `presented` is unknown, already used (which also
    /// revokes the family) or belongs to a revoked family; `next` is then discarded.
    pub(crate) fn rotate(&mut self, presented: &str, next: String) -> Result<String, RefreshError> {
        let entry = self
            .refresh
            .get_mut(presented)
            .ok_or(RefreshError::Unknown)?;
        let family = self
            .families
            .get_mut(entry.family)
            .expect("a refresh entry always points at a family pushed before it");
        if entry.used {
            family.revoked = true;
            return Err(RefreshError::Reused);
        }
        if family.revoked {
            return Err(RefreshError::Revoked);
        }
        entry.used = true;
        let (index, scope) = (entry.family, family.scope.clone());
        self.refresh.insert(
            next,
            RefreshEntry {
                family: index,
                used: false,
            },
        );
        Ok(scope)
    }

    /// Revokes every refresh family and expires every access and session token at `now`, as a
    /// vendor does when a user withdraws consent: the next refresh fails with `invalid_grant`.
    pub(crate) fn revoke_all(&mut self, now: Instant) {
        for family in &mut self.families {
            family.revoked = true;
        }
        self.expire_all(now);
    }

    /// Keeps `presented` valid instead of rotating it (vendors that never rotate): returns the
    /// family's scope. Fails like [`TokenStore::rotate`] for an unknown or revoked token.
    pub(crate) fn keep(&self, presented: &str) -> Result<String, RefreshError> {
        let entry = self.refresh.get(presented).ok_or(RefreshError::Unknown)?;
        let family = &self.families[entry.family];
        if family.revoked {
            return Err(RefreshError::Revoked);
        }
        Ok(family.scope.clone())
    }

    /// Makes every access and session token issued so far expired at `now`.
    ///
    /// Refresh tokens are untouched, so clients can still recover through a refresh.
    pub(crate) fn expire_all(&mut self, now: Instant) {
        for entry in self.access.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn revoking_all_fails_every_refresh_and_access() {
        let mut store = store_with_family();
        let now = Instant::now();
        store.insert_access(
            "at_1".into(),
            TokenKind::OAuth,
            now + Duration::from_mins(1),
        );
        assert_eq!(store.keep("rt_1"), Ok("read".to_owned()));
        store.revoke_all(now);
        assert_eq!(
            store.rotate("rt_1", "rt_2".into()),
            Err(RefreshError::Revoked)
        );
        assert_eq!(store.keep("rt_1"), Err(RefreshError::Revoked));
        assert_eq!(store.check_access("at_1", now), Lookup::Expired);
    }

    fn store_with_family() -> TokenStore {
        let mut store = TokenStore::default();
        store.start_family("rt_1".to_owned(), "read".to_owned());
        store
    }

    #[test]
    fn generated_tokens_are_prefixed_url_safe_and_distinct() {
        let first = generate_token("at_").unwrap();
        let second = generate_token("at_").unwrap();
        assert!(first.starts_with("at_"));
        assert_eq!(first.len(), 3 + 32);
        assert!(
            first[3..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(first, second);
    }

    #[test]
    fn rotation_issues_a_chain() {
        let mut store = store_with_family();
        assert_eq!(
            store.rotate("rt_1", "rt_2".to_owned()),
            Ok("read".to_owned())
        );
        assert_eq!(
            store.rotate("rt_2", "rt_3".to_owned()),
            Ok("read".to_owned())
        );
        assert_eq!(
            store.rotate("rt_3", "rt_4".to_owned()),
            Ok("read".to_owned())
        );
    }

    #[test]
    fn reuse_revokes_the_whole_family() {
        let mut store = store_with_family();
        store.rotate("rt_1", "rt_2".to_owned()).unwrap();
        store.rotate("rt_2", "rt_3".to_owned()).unwrap();
        assert_eq!(
            store.rotate("rt_1", "rt_x".to_owned()),
            Err(RefreshError::Reused)
        );
        // The current member of the chain stops working too, and the discarded token never existed.
        assert_eq!(
            store.rotate("rt_3", "rt_4".to_owned()),
            Err(RefreshError::Revoked)
        );
        assert_eq!(
            store.rotate("rt_x", "rt_5".to_owned()),
            Err(RefreshError::Unknown)
        );
    }

    #[test]
    fn reuse_leaves_other_families_alone() {
        let mut store = store_with_family();
        store.start_family("rt_other".to_owned(), "write".to_owned());
        store.rotate("rt_1", "rt_2".to_owned()).unwrap();
        assert_eq!(
            store.rotate("rt_1", "rt_x".to_owned()),
            Err(RefreshError::Reused)
        );
        assert_eq!(
            store.rotate("rt_other", "rt_o2".to_owned()),
            Ok("write".to_owned())
        );
    }

    #[test]
    fn unknown_refresh_token_is_refused() {
        let mut store = TokenStore::default();
        assert_eq!(
            store.rotate("rt_nope", "rt_2".to_owned()),
            Err(RefreshError::Unknown)
        );
    }

    #[test]
    fn access_tokens_expire_with_time() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        store.insert_access(
            "at_1".to_owned(),
            TokenKind::OAuth,
            now + Duration::from_mins(1),
        );
        assert_eq!(
            store.check_access("at_1", now),
            Lookup::Valid(TokenKind::OAuth)
        );
        assert_eq!(
            store.check_access("at_1", now + Duration::from_mins(1)),
            Lookup::Expired
        );
        assert_eq!(store.check_access("at_2", now), Lookup::Unknown);
    }

    #[test]
    fn expire_all_expires_access_and_session_but_not_refresh() {
        let mut store = store_with_family();
        let now = Instant::now();
        let later = now + Duration::from_hours(1);
        store.insert_access("at_1".to_owned(), TokenKind::OAuth, later);
        store.insert_access("st_1".to_owned(), TokenKind::Session, later);
        store.expire_all(now);
        assert_eq!(store.check_access("at_1", now), Lookup::Expired);
        assert_eq!(store.check_access("st_1", now), Lookup::Expired);
        assert!(store.rotate("rt_1", "rt_2".to_owned()).is_ok());
        // Tokens issued after the call live their normal lifetime.
        store.insert_access("at_2".to_owned(), TokenKind::OAuth, later);
        assert_eq!(
            store.check_access("at_2", now),
            Lookup::Valid(TokenKind::OAuth)
        );
    }
}
