//! What a member gateway sends the federation coordinator (its directory
//! entry, as `referral-gateway init` writes it), and how the coordinator
//! puts it into the directory: a new edition with that member's part
//! replaced.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Directory, DirectoryDocument, DirectoryError, GatewayEntry, MemberStatus, OrganisationEntry};
use crate::domain::{CountryCode, OrgId};

/// One member's part of the directory: its gateway and, if given, every
/// organisation its gateway serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub gateway: GatewayEntry,
    /// The organisations of the gateway's country. Given (even empty), they
    /// replace that country's organisations in the directory; left out, the
    /// directory's stay as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisations: Option<Vec<OrganisationEntry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("organisation {organisation} is of {its}, not of the member's country {member}: each member lists its own organisations")]
    ForeignOrganisation { organisation: OrgId, its: CountryCode, member: CountryCode },
    #[error("the directory's serial cannot be raised further")]
    SerialExhausted,
    #[error("the entry would remove organisations of {country} from the directory ({}); list them in the entry, or allow the removal", removed.join(", "))]
    WouldRemove { country: CountryCode, removed: Vec<String> },
    #[error("the directory with this member would not be valid: {0}")]
    Invalid(#[from] DirectoryError),
}

/// What [`add_member`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub country: CountryCode,
    /// It replaced an entry of the same country.
    pub replaced: bool,
    /// The organisations of its country in the new edition.
    pub organisations: usize,
    /// Organisations of its country the entry took out of the directory.
    pub removed: Vec<OrgId>,
    /// The status the coordinator set, kept where the entry said otherwise
    /// (a suspended member that sends its entry again stays suspended).
    pub kept_status: Option<MemberStatus>,
    pub serial: u64,
}

/// Whether an entry may take organisations of its country out of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Refused,
    Allowed,
}

/// The next edition of `directory` (a new one, edition 1, if `None`), with
/// `entry`'s gateway in place of any of the same country and, if the entry
/// lists organisations, those in place of that country's. The result is
/// checked as a gateway would check it.
/// The member's status is the coordinator's to set: an entry replacing
/// another keeps the status in the directory. Organisations the entry
/// would take out are refused unless `removal` allows it, since an entry
/// sent again as `init` wrote it lists none.
pub fn add_member(directory: Option<DirectoryDocument>, entry: MemberEntry, removal: Removal) -> Result<(DirectoryDocument, Added), MembershipError> {
    let mut document = directory.unwrap_or(DirectoryDocument { serial: 0, gateways: Vec::new(), organisations: Vec::new() });
    let country = entry.gateway.country;
    if let Some(foreign) = entry.organisations.iter().flatten().find(|organisation| organisation.country != country) {
        return Err(MembershipError::ForeignOrganisation { organisation: foreign.id.clone(), its: foreign.country, member: country });
    }
    let mut kept_status = None;
    let replaced = match document.gateways.iter_mut().find(|gateway| gateway.country == country) {
        Some(existing) => {
            let status = existing.status;
            if entry.gateway.status != status {
                kept_status = Some(status);
            }
            *existing = GatewayEntry { status, ..entry.gateway };
            true
        }
        None => {
            document.gateways.push(entry.gateway);
            false
        }
    };
    let mut removed = Vec::new();
    if let Some(organisations) = entry.organisations {
        removed = document
            .organisations
            .iter()
            .filter(|held| held.country == country && !organisations.iter().any(|listed| listed.id == held.id))
            .map(|held| held.id.clone())
            .collect();
        if !removed.is_empty() && removal == Removal::Refused {
            return Err(MembershipError::WouldRemove { country, removed: removed.iter().map(ToString::to_string).collect() });
        }
        document.organisations.retain(|organisation| organisation.country != country);
        document.organisations.extend(organisations);
    }
    document.serial = document.serial.checked_add(1).ok_or(MembershipError::SerialExhausted)?;
    Directory::from_document(document.clone())?;
    let organisations = document.organisations.iter().filter(|organisation| organisation.country == country).count();
    let serial = document.serial;
    Ok((document, Added { country, replaced, organisations, removed, kept_status, serial }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(country: &str, endpoint: &str, organisations: serde_json::Value) -> MemberEntry {
        serde_json::from_value(json!({ "gateway": { "country": country, "endpoint": endpoint }, "organisations": organisations })).unwrap()
    }

    fn organisation(id: &str, country: &str) -> serde_json::Value {
        json!({ "id": id, "name": id, "country": country, "kind": "ngo" })
    }

    #[test]
    fn members_are_added_then_replaced_by_country_and_every_edition_raises_the_serial() {
        let (first, added) = add_member(None, entry("GMB", "https://gmb.example:9443", json!([organisation("gmb-ngo", "GMB")])), Removal::Allowed).unwrap();
        assert_eq!((added.serial, added.replaced, added.organisations), (1, false, 1));
        let (second, added) = add_member(Some(first), entry("GIN", "https://gin.example:9443", json!([organisation("gin-ngo", "GIN")])), Removal::Allowed).unwrap();
        assert_eq!((added.serial, added.replaced), (2, false));
        assert_eq!(second.gateways.len(), 2);

        // GMB again: its gateway and organisations replaced, GIN's untouched.
        let again = entry("GMB", "https://new.gmb.example:9443", json!([organisation("gmb-other", "GMB"), organisation("gmb-third", "GMB")]));
        let (third, added) = add_member(Some(second), again, Removal::Allowed).unwrap();
        assert_eq!((added.serial, added.replaced, added.organisations), (3, true, 2));
        let endpoints: Vec<&str> = third.gateways.iter().map(|g| g.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["https://new.gmb.example:9443", "https://gin.example:9443"]);
        let ids: Vec<&str> = third.organisations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["gin-ngo", "gmb-other", "gmb-third"]);

        // An entry without organisations leaves the country's as they are.
        let bare: MemberEntry = serde_json::from_value(json!({ "gateway": { "country": "GIN", "endpoint": "https://gin2.example" } })).unwrap();
        let (fourth, added) = add_member(Some(third), bare, Removal::Allowed).unwrap();
        assert_eq!((added.serial, added.organisations), (4, 1));
        assert_eq!(fourth.organisations.len(), 3);
    }

    #[test]
    fn an_entry_listing_another_countrys_organisation_or_making_the_directory_invalid_is_refused() {
        let error = add_member(None, entry("GMB", "https://gmb.example", json!([organisation("gin-ngo", "GIN")])), Removal::Allowed).unwrap_err();
        assert!(matches!(error, MembershipError::ForeignOrganisation { .. }), "{error}");
        let error = add_member(None, entry("GMB", "http://gmb.example", json!([])), Removal::Allowed).unwrap_err();
        assert!(matches!(error, MembershipError::Invalid(DirectoryError::NotHttps(_))), "{error}");
    }

    /// The coordinator suspended a member; the member sends its entry again
    /// (a key rotation, as `init` writes entries: `active`): still suspended.
    #[test]
    fn a_member_sending_its_entry_again_does_not_lift_its_suspension() {
        let (mut document, _) = add_member(None, entry("GMB", "https://gmb.example", json!([organisation("gmb-ngo", "GMB")])), Removal::Refused).unwrap();
        document.gateways[0].status = MemberStatus::Suspended;
        let (document, added) = add_member(Some(document), entry("GMB", "https://gmb.example", json!([organisation("gmb-ngo", "GMB")])), Removal::Refused).unwrap();
        assert_eq!(document.gateways[0].status, MemberStatus::Suspended);
        assert_eq!(added.kept_status, Some(MemberStatus::Suspended));
    }

    /// An entry sent again as `init` wrote it lists no organisation: it must
    /// not take the member's organisations out unless that is meant.
    #[test]
    fn an_entry_taking_organisations_out_is_refused_unless_allowed() {
        let listed = json!([organisation("gmb-ngo", "GMB"), organisation("gmb-other", "GMB")]);
        let (document, _) = add_member(None, entry("GMB", "https://gmb.example", listed), Removal::Refused).unwrap();
        let error = add_member(Some(document.clone()), entry("GMB", "https://gmb.example", json!([organisation("gmb-ngo", "GMB")])), Removal::Refused).unwrap_err();
        assert!(matches!(&error, MembershipError::WouldRemove { removed, .. } if removed == &["gmb-other".to_owned()]), "{error}");
        let (after, added) = add_member(Some(document), entry("GMB", "https://gmb.example", json!([])), Removal::Allowed).unwrap();
        assert!(after.organisations.is_empty());
        assert_eq!(added.removed.len(), 2);
    }
}
