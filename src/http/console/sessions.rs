//! The console's sessions, for DPOs and auditors signed in from a browser:
//! who is signed in behind which cookie, until when, and the token every
//! form must carry back (CSRF).
//!
//! A session is a random 256-bit token in a cookie; the gateway keeps only
//! its SHA-256, so a copy of the table signs nobody in. Sessions live in
//! this process's memory: a restart signs everyone out, and replicas behind
//! one address need sticky sessions (`docs/console.md`). The table is
//! bounded, and so is the list of sign-ins under way.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::Principal;

/// The session cookie. `__Host-`: the browser keeps it only if it is
/// `Secure`, for this host alone and for path `/`.
pub const SESSION_COOKIE: &str = "__Host-rgw-console";
/// The cookie that ties a sign-in under way to the browser that started it.
/// `SameSite=Lax`, unlike the session's `Strict`: it must come back on the
/// identity provider's redirect, a navigation from another site.
pub const SIGN_IN_COOKIE: &str = "__Host-rgw-console-sign-in";

/// At most this many sessions at once: then no one else signs in until
/// some end (no one's session is cut short for another's).
const MAX_SESSIONS: usize = 10_000;
/// At most this many sessions per person: a sign-in beyond ends that person's oldest.
const MAX_SESSIONS_PER_PERSON: usize = 5;
/// At most this many sign-ins under way: then no new one starts until some end.
const MAX_PENDING_SIGN_INS: usize = 1_000;
/// A sign-in must come back from the identity provider within this.
pub const SIGN_IN_WITHIN: Duration = Duration::minutes(10);

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Unused this long, a session ends.
    pub idle: Duration,
    /// However busy, a session ends this long after sign-in.
    pub longest: Duration,
}

/// A signed-in DPO or auditor.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    /// Every form of this session carries it back.
    pub csrf_token: String,
    last_seen: DateTime<Utc>,
    /// The earlier of sign-in plus the longest session and the end of what
    /// signed the person in (the access token's expiry).
    ends: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the CSRF token.
        f.debug_struct("Session").field("principal", &self.principal).field("ends", &self.ends).finish_non_exhaustive()
    }
}

impl Session {
    fn is_live(&self, now: DateTime<Utc>, limits: SessionLimits) -> bool {
        now < self.ends && now < self.last_seen + limits.idle
    }
}

/// A sign-in sent to the identity provider and not back yet; known by its
/// `state` parameter.
#[derive(Debug)]
pub struct PendingSignIn<T> {
    pub started: DateTime<Utc>,
    /// What the callback needs: the PKCE verifier, the nonce.
    pub secrets: T,
}

/// Sessions and sign-ins under way. `T` is what a sign-in keeps until its callback.
pub struct Sessions<T> {
    limits: SessionLimits,
    random: SystemRandom,
    by_token_hash: Mutex<HashMap<Vec<u8>, Session>>,
    pending: Mutex<HashMap<String, PendingSignIn<T>>>,
}

impl<T> std::fmt::Debug for Sessions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

impl<T> Sessions<T> {
    pub fn new(limits: SessionLimits) -> Self {
        Self { limits, random: SystemRandom::new(), by_token_hash: Mutex::new(HashMap::new()), pending: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// A fresh random token: 256 bits, base64url.
    pub fn random_token(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a session for `principal` and returns its cookie value.
    /// `credential_ends`: when what signed the person in stops being valid.
    pub fn open(&self, principal: Principal, now: DateTime<Utc>, credential_ends: Option<DateTime<Utc>>) -> Option<String> {
        let token = self.random_token()?;
        let csrf_token = self.random_token()?;
        let longest = now + self.limits.longest;
        let ends = credential_ends.map_or(longest, |end| end.min(longest));
        let session = Session { principal, csrf_token, last_seen: now, ends };
        let mut sessions = self.by_token_hash.lock().ok()?;
        sessions.retain(|_, s| s.is_live(now, self.limits));
        let same_person = |s: &Session| s.principal.org == session.principal.org && s.principal.subject == session.principal.subject;
        if sessions.values().filter(|s| same_person(s)).count() >= MAX_SESSIONS_PER_PERSON {
            let oldest = sessions.iter().filter(|(_, s)| same_person(s)).min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        sessions.insert(token_hash(&token), session);
        Some(token)
    }

    /// The live session behind `token`, marked as used now; an ended one is forgotten.
    pub fn touch(&self, token: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut sessions = self.by_token_hash.lock().ok()?;
        let key = token_hash(token);
        let live = sessions.get(&key).is_some_and(|s| s.is_live(now, self.limits));
        if !live {
            sessions.remove(&key);
            return None;
        }
        let session = sessions.get_mut(&key)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session behind `token`, if any.
    pub fn close(&self, token: &str) {
        if let Ok(mut sessions) = self.by_token_hash.lock() {
            sessions.remove(&token_hash(token));
        }
    }

    /// Keeps a sign-in under way; `state` comes back with the identity
    /// provider's redirect. `false` when too many are under way: the sign-ins
    /// already started are never pushed out by new ones.
    pub fn begin_sign_in(&self, state: String, secrets: T, now: DateTime<Utc>) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        pending.retain(|_, p| now < p.started + SIGN_IN_WITHIN);
        if pending.len() >= MAX_PENDING_SIGN_INS {
            return false;
        }
        pending.insert(state, PendingSignIn { started: now, secrets });
        true
    }

    /// Whether another sign-in may start now.
    pub fn has_room_for_sign_in(&self, now: DateTime<Utc>) -> bool {
        self.pending.lock().is_ok_and(|mut pending| {
            pending.retain(|_, p| now < p.started + SIGN_IN_WITHIN);
            pending.len() < MAX_PENDING_SIGN_INS
        })
    }

    /// The sign-in `state` names, taken (a `state` is good once), if it is recent enough.
    pub fn finish_sign_in(&self, state: &str, now: DateTime<Utc>) -> Option<T> {
        let pending = self.pending.lock().ok()?.remove(state)?;
        (now < pending.started + SIGN_IN_WITHIN).then_some(pending.secrets)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4).
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Whether two secrets are the same, compared as digests: the time taken
/// tells nothing about either.
pub fn same_secret(one: &str, other: &str) -> bool {
    token_hash(one) == token_hash(other)
}

/// Whether `sent` is the session's CSRF token. The two are compared as
/// digests, so the time taken tells nothing about the token.
pub fn csrf_matches(session: &Session, sent: &str) -> bool {
    same_secret(&session.csrf_token, sent)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::{AuthMethod, Role};

    fn dpo() -> Principal {
        Principal {
            org: crate::domain::OrgId::parse("ita-nrm").unwrap(),
            subject: "dpo-1".to_owned(),
            roles: BTreeSet::from([Role::Dpo]),
            method: AuthMethod::BearerToken,
        }
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn sessions() -> Sessions<u8> {
        Sessions::new(SessionLimits { idle: Duration::minutes(30), longest: Duration::hours(8) })
    }

    #[test]
    fn a_session_ends_when_idle_at_its_longest_or_with_its_credential() {
        let sessions = sessions();
        let token = sessions.open(dpo(), at(0), None).unwrap();
        assert!(sessions.touch(&token, at(29)).is_some());
        assert!(sessions.touch(&token, at(58)).is_some(), "each use restarts the idle time");
        assert!(sessions.touch(&token, at(89)).is_none(), "31 minutes unused");
        assert!(sessions.touch(&token, at(90)).is_none(), "an ended session is forgotten");

        let busy = sessions.open(dpo(), at(0), None).unwrap();
        for quarter in 1..32 {
            assert!(sessions.touch(&busy, at(quarter * 15)).is_some());
        }
        assert!(sessions.touch(&busy, at(8 * 60)).is_none(), "eight hours after sign-in, however busy");

        let short = sessions.open(dpo(), at(0), Some(at(5))).unwrap();
        assert!(sessions.touch(&short, at(4)).is_some());
        assert!(sessions.touch(&short, at(5)).is_none(), "the access token that signed in expired");
    }

    #[test]
    fn tokens_are_unguessable_and_each_session_has_its_own() {
        let sessions = sessions();
        let one = sessions.open(dpo(), at(0), None).unwrap();
        let two = sessions.open(dpo(), at(0), None).unwrap();
        assert_ne!(one, two);
        assert_eq!(URL_SAFE_NO_PAD.decode(&one).unwrap().len(), 32);
        let (first, second) = (sessions.touch(&one, at(1)).unwrap(), sessions.touch(&two, at(1)).unwrap());
        assert_ne!(first.csrf_token, second.csrf_token);
        assert!(csrf_matches(&first, &first.csrf_token));
        assert!(!csrf_matches(&first, &second.csrf_token));
        assert!(!csrf_matches(&first, ""));
        assert!(sessions.touch("not-a-token", at(1)).is_none());
        sessions.close(&one);
        assert!(sessions.touch(&one, at(2)).is_none());
        assert!(sessions.touch(&two, at(2)).is_some());
    }

    #[test]
    fn one_person_cannot_crowd_others_out() {
        let sessions = sessions();
        let other = sessions.open(Principal { subject: "dpo-2".to_owned(), ..dpo() }, at(0), None).unwrap();
        let first = sessions.open(dpo(), at(0), None).unwrap();
        for minute in 1..=MAX_SESSIONS_PER_PERSON as i64 {
            assert!(sessions.open(dpo(), at(minute), None).is_some());
        }
        assert!(sessions.touch(&first, at(10)).is_none(), "a sign-in beyond the cap ends that person's oldest session");
        assert!(sessions.touch(&other, at(10)).is_some(), "and no one else's");
    }

    #[test]
    fn sign_ins_under_way_are_never_pushed_out() {
        let sessions = sessions();
        for n in 0..MAX_PENDING_SIGN_INS {
            assert!(sessions.begin_sign_in(format!("state-{n}"), 0, at(0)));
        }
        assert!(!sessions.begin_sign_in("one-too-many".to_owned(), 0, at(1)));
        assert_eq!(sessions.finish_sign_in("state-0", at(2)), Some(0));
        assert!(sessions.begin_sign_in("after-one-ended".to_owned(), 0, at(11)), "the old ones lapsed");
    }

    #[test]
    fn a_sign_in_is_finished_once_and_only_soon() {
        let sessions = sessions();
        sessions.begin_sign_in("state-1".to_owned(), 1, at(0));
        sessions.begin_sign_in("state-2".to_owned(), 2, at(0));
        assert_eq!(sessions.finish_sign_in("state-1", at(9)), Some(1));
        assert_eq!(sessions.finish_sign_in("state-1", at(9)), None, "a state is good once");
        assert_eq!(sessions.finish_sign_in("state-2", at(10)), None, "ten minutes is too late");
        assert_eq!(sessions.finish_sign_in("unknown", at(1)), None);
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append(axum::http::header::COOKIE, "a=1; __Host-rgw-console-sign-in=s; __Host-rgw-console=t".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("t"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), Some("s"));
        assert_eq!(cookie(&headers, "rgw-console"), None);
    }
}
