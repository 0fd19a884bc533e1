//! ISO 3166-1 alpha-3 country codes.
//!
//! Origin states decide the asylum firewall, so a country code must be a real
//! assigned code, not merely three letters: a typo such as `ERT` for Eritrea
//! would otherwise silently defeat the firewall.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ParseError;

/// An assigned ISO 3166-1 alpha-3 code, upper case (e.g. `ITA`, `NGA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 3]);

/// Assigned codes, sorted, taken from Debian's `iso-codes` package (ISO 3166-1).
/// `XKX` (Kosovo) is a user-assigned code in common use by IOM, UNHCR and the EU.
pub const ASSIGNED_CODES: &[&str] = &[
    "ABW", "AFG", "AGO", "AIA", "ALA", "ALB", "AND", "ARE", "ARG", "ARM", "ASM", "ATA", "ATF", "ATG", "AUS", "AUT",
    "AZE", "BDI", "BEL", "BEN", "BES", "BFA", "BGD", "BGR", "BHR", "BHS", "BIH", "BLM", "BLR", "BLZ", "BMU", "BOL",
    "BRA", "BRB", "BRN", "BTN", "BVT", "BWA", "CAF", "CAN", "CCK", "CHE", "CHL", "CHN", "CIV", "CMR", "COD", "COG",
    "COK", "COL", "COM", "CPV", "CRI", "CUB", "CUW", "CXR", "CYM", "CYP", "CZE", "DEU", "DJI", "DMA", "DNK", "DOM",
    "DZA", "ECU", "EGY", "ERI", "ESH", "ESP", "EST", "ETH", "FIN", "FJI", "FLK", "FRA", "FRO", "FSM", "GAB", "GBR",
    "GEO", "GGY", "GHA", "GIB", "GIN", "GLP", "GMB", "GNB", "GNQ", "GRC", "GRD", "GRL", "GTM", "GUF", "GUM", "GUY",
    "HKG", "HMD", "HND", "HRV", "HTI", "HUN", "IDN", "IMN", "IND", "IOT", "IRL", "IRN", "IRQ", "ISL", "ISR", "ITA",
    "JAM", "JEY", "JOR", "JPN", "KAZ", "KEN", "KGZ", "KHM", "KIR", "KNA", "KOR", "KWT", "LAO", "LBN", "LBR", "LBY",
    "LCA", "LIE", "LKA", "LSO", "LTU", "LUX", "LVA", "MAC", "MAF", "MAR", "MCO", "MDA", "MDG", "MDV", "MEX", "MHL",
    "MKD", "MLI", "MLT", "MMR", "MNE", "MNG", "MNP", "MOZ", "MRT", "MSR", "MTQ", "MUS", "MWI", "MYS", "MYT", "NAM",
    "NCL", "NER", "NFK", "NGA", "NIC", "NIU", "NLD", "NOR", "NPL", "NRU", "NZL", "OMN", "PAK", "PAN", "PCN", "PER",
    "PHL", "PLW", "PNG", "POL", "PRI", "PRK", "PRT", "PRY", "PSE", "PYF", "QAT", "REU", "ROU", "RUS", "RWA", "SAU",
    "SDN", "SEN", "SGP", "SGS", "SHN", "SJM", "SLB", "SLE", "SLV", "SMR", "SOM", "SPM", "SRB", "SSD", "STP", "SUR",
    "SVK", "SVN", "SWE", "SWZ", "SXM", "SYC", "SYR", "TCA", "TCD", "TGO", "THA", "TJK", "TKL", "TKM", "TLS", "TON",
    "TTO", "TUN", "TUR", "TUV", "TWN", "TZA", "UGA", "UKR", "UMI", "URY", "USA", "UZB", "VAT", "VCT", "VEN", "VGB",
    "VIR", "VNM", "VUT", "WLF", "WSM", "YEM", "ZAF", "ZMB", "ZWE",
];
const KOSOVO: &str = "XKX";

impl CountryCode {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let known = text == KOSOVO || ASSIGNED_CODES.binary_search(&text).is_ok();
        match text.as_bytes() {
            [a, b, c] if known => Ok(Self([*a, *b, *c])),
            _ => Err(ParseError::new(
                "country_code",
                "must be an assigned ISO 3166-1 alpha-3 code in upper case, e.g. ITA",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // The bytes came from a checked ASCII code, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Every code this type accepts, for schemas and test generators.
    pub fn all() -> impl Iterator<Item = CountryCode> {
        ASSIGNED_CODES
            .iter()
            .copied()
            .chain(std::iter::once(KOSOVO))
            .filter_map(|code| CountryCode::parse(code).ok())
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for CountryCode {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CountryCode> for String {
    fn from(value: CountryCode) -> Self {
        value.as_str().to_owned()
    }
}

impl JsonSchema for CountryCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CountryCode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ASSIGNED_CODES.iter().copied().chain(std::iter::once(KOSOVO)).collect();
        schemars::json_schema!({
            "description": "ISO 3166-1 alpha-3 country code (assigned codes, plus XKX for Kosovo)",
            "type": "string",
            "enum": codes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_assigned_codes_and_kosovo() {
        for code in ["ITA", "NGA", "ERI", "ETH", "AFG", "XKX"] {
            assert_eq!(CountryCode::parse(code).map(|c| c.to_string()).ok(), Some(code.to_owned()));
        }
    }

    #[test]
    fn rejects_unassigned_lower_case_and_wrong_length() {
        for code in ["XYZ", "ita", "IT", "ITAL", "", "ERT", "I1A"] {
            assert!(CountryCode::parse(code).is_err(), "{code} should be rejected");
        }
    }

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(ASSIGNED_CODES.windows(2).all(|w| matches!(w, [a, b] if a < b)));
        assert_eq!(ASSIGNED_CODES.len(), 249);
        assert_eq!(CountryCode::all().count(), 250);
    }
}
