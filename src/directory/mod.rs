//! The federation directory: member gateways and recipient organisations.
//!
//! This is the document's content model and lookups. Its signature (JWS by the
//! federation coordinator) is verified by the federation layer before parsing.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::recipient::{Recipient, Service};
use crate::domain::{CountryCode, OrgId, RecipientKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryDocument {
    pub gateways: Vec<GatewayEntry>,
    pub organisations: Vec<OrganisationEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEntry {
    pub country: CountryCode,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationEntry {
    pub id: OrgId,
    /// Display name of the organisation (not personal data).
    pub name: String,
    /// Where the organisation sits: the gateway of this country serves it.
    pub country: CountryCode,
    /// The state it acts for, when not `country`: required for consulates and
    /// embassies, which sit abroad but are state actors of their own state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub represents: Option<CountryCode>,
    pub kind: RecipientKind,
    /// Marks a non-government organisation as a state actor; a government kind
    /// is a state actor whatever this says.
    #[serde(default)]
    pub state_actor: bool,
    #[serde(default)]
    pub services: BTreeSet<Service>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory is not valid JSON of the directory schema: {0}")]
    Malformed(String),
    #[error("organisation id {0} appears more than once")]
    DuplicateOrganisation(OrgId),
    #[error("gateway country {0} appears more than once")]
    DuplicateGateway(CountryCode),
    #[error("organisation {0} is in {1}, which has no gateway in the directory")]
    NoGateway(OrgId, CountryCode),
    #[error("organisation {0} is consular: it must name the state it represents")]
    ConsularWithoutState(OrgId),
}

/// A checked directory with lookups by organisation id.
#[derive(Debug, Clone)]
pub struct Directory {
    gateways: BTreeMap<CountryCode, GatewayEntry>,
    organisations: BTreeMap<OrgId, OrganisationEntry>,
}

impl Directory {
    pub fn parse(json: &str) -> Result<Self, DirectoryError> {
        let document: DirectoryDocument =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)).map_err(|e| {
                DirectoryError::Malformed(format!("{}: {}", e.path(), e.inner()))
            })?;
        Self::from_document(document)
    }

    pub fn from_document(document: DirectoryDocument) -> Result<Self, DirectoryError> {
        let mut gateways = BTreeMap::new();
        for gateway in document.gateways {
            let country = gateway.country;
            if gateways.insert(country, gateway).is_some() {
                return Err(DirectoryError::DuplicateGateway(country));
            }
        }
        let mut organisations = BTreeMap::new();
        for organisation in document.organisations {
            if !gateways.contains_key(&organisation.country) {
                return Err(DirectoryError::NoGateway(organisation.id, organisation.country));
            }
            if organisation.kind == RecipientKind::Consular && organisation.represents.is_none() {
                return Err(DirectoryError::ConsularWithoutState(organisation.id));
            }
            let id = organisation.id.clone();
            if organisations.insert(id.clone(), organisation).is_some() {
                return Err(DirectoryError::DuplicateOrganisation(id));
            }
        }
        Ok(Self { gateways, organisations })
    }

    pub fn recipient(&self, id: &OrgId) -> Option<Recipient> {
        self.organisations.get(id).map(|o| {
            let recipient = Recipient::new(o.id.clone(), o.country, o.kind, o.state_actor, o.services.clone());
            recipient.representing(o.represents.unwrap_or(o.country))
        })
    }

    pub fn organisation(&self, id: &OrgId) -> Option<&OrganisationEntry> {
        self.organisations.get(id)
    }

    pub fn organisations(&self) -> impl Iterator<Item = &OrganisationEntry> {
        self.organisations.values()
    }

    pub fn gateway(&self, country: CountryCode) -> Option<&GatewayEntry> {
        self.gateways.get(&country)
    }
}
