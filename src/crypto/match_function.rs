//! The match function (issue 22 §2): a verifiable oblivious pseudo-random
//! function (RFC 9497, VOPRF mode, ristretto255-SHA512, the `voprf` crate)
//! keyed by the responding gateway. The asking gateway blinds its match
//! keys, the responding one evaluates them without seeing them and proves
//! it used the key it publishes, and the asker unblinds the outputs and
//! checks the proof. The responding gateway evaluates its own cases' keys
//! directly for its index. Outputs are equal exactly when the keys are,
//! and say nothing of a key to anyone without the function's key.

use rand_core::OsRng;
use voprf::{BlindedElement, EvaluationElement, Group, Proof, Ristretto255, VoprfClient, VoprfServer};

use crate::domain::matching::MatchKey;

type Suite = Ristretto255;

/// Domain separation of a key derived from a seed.
const KEY_INFO: &[u8] = b"rgw-match-function-v1";

/// Why a step of the function failed: malformed or forged messages, or a
/// proof that does not verify against the published key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatchFunctionError {
    #[error("a message of the match function is malformed")]
    Malformed,
    #[error("the evaluation's proof does not verify against the responding gateway's key")]
    ProofRejected,
    #[error("the match function failed: {0}")]
    Failed(String),
}

/// An output of the function: what an index holds and a query compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchOutput(pub Vec<u8>);

/// Bytes of an output as an answer entry shows it.
pub const SALTED_LEN: usize = 16;

/// An output as one answer entry shows it: SHA-256 of the entry's handle
/// and the output, cut to [`SALTED_LEN`] bytes. The asker, holding the
/// output for a key it asked, finds it in that entry only: equal outputs
/// in two entries (two searches sharing a family name) look unrelated.
pub fn salted(handle: &[u8], output: &MatchOutput) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"rgw-match-entry-v1\0");
    context.update(handle);
    context.update(&[0]);
    context.update(&output.0);
    context.finish().as_ref().iter().copied().take(SALTED_LEN).collect()
}

/// The responding gateway's key of the function.
pub struct MatchFunctionKey(VoprfServer<Suite>);

impl std::fmt::Debug for MatchFunctionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MatchFunctionKey(..)")
    }
}

impl MatchFunctionKey {
    /// The key derived from `seed` (32 secret bytes the gateway keeps with its other keys).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, MatchFunctionError> {
        VoprfServer::new_from_seed(seed, KEY_INFO).map(Self).map_err(|e| MatchFunctionError::Failed(e.to_string()))
    }

    /// A fresh key.
    pub fn generate() -> Result<Self, MatchFunctionError> {
        VoprfServer::new(&mut OsRng).map(Self).map_err(|e| MatchFunctionError::Failed(e.to_string()))
    }

    /// The public half an asker verifies evaluations against.
    pub fn public_key(&self) -> Vec<u8> {
        <Suite as Group>::serialize_elem(self.0.get_public_key()).to_vec()
    }

    /// The output for one of this gateway's own keys, for its index.
    pub fn evaluate(&self, key: &MatchKey) -> Result<MatchOutput, MatchFunctionError> {
        self.0.evaluate(key.as_bytes()).map(|output| MatchOutput(output.to_vec())).map_err(|e| MatchFunctionError::Failed(e.to_string()))
    }

    /// Evaluates an asker's blinded elements, with one proof for all.
    pub fn evaluate_blinded(&self, blinded: &[Vec<u8>]) -> Result<Evaluated, MatchFunctionError> {
        let elements = blinded.iter().map(|b| BlindedElement::<Suite>::deserialize(b)).collect::<Result<Vec<_>, _>>().map_err(|_| MatchFunctionError::Malformed)?;
        let result = self.0.batch_blind_evaluate(&mut OsRng, &elements).map_err(|e| MatchFunctionError::Failed(e.to_string()))?;
        Ok(Evaluated { elements: result.messages.iter().map(|m| m.serialize().to_vec()).collect(), proof: result.proof.serialize().to_vec() })
    }
}

/// What the responding gateway sends back: the evaluated elements, in the
/// order asked, and the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    pub elements: Vec<Vec<u8>>,
    pub proof: Vec<u8>,
}

/// The asker's side of one round: its keys and their blinds, kept until
/// the evaluation comes back.
pub struct Asking {
    keys: Vec<MatchKey>,
    states: Vec<VoprfClient<Suite>>,
}

impl std::fmt::Debug for Asking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asking").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl Asking {
    /// Blinds `keys`: the state to keep, and the blinded elements to send.
    pub fn blind(keys: Vec<MatchKey>) -> Result<(Self, Vec<Vec<u8>>), MatchFunctionError> {
        let mut states = Vec::with_capacity(keys.len());
        let mut blinded = Vec::with_capacity(keys.len());
        for key in &keys {
            let result = VoprfClient::<Suite>::blind(key.as_bytes(), &mut OsRng).map_err(|e| MatchFunctionError::Failed(e.to_string()))?;
            states.push(result.state);
            blinded.push(result.message.serialize().to_vec());
        }
        Ok((Self { keys, states }, blinded))
    }

    /// The outputs for the keys blinded, in their order, once the proof
    /// verifies against `public_key` (the one the responding gateway sent
    /// with its answer: the directory does not publish it yet).
    pub fn finish(self, evaluated: &Evaluated, public_key: &[u8]) -> Result<Vec<(MatchKey, MatchOutput)>, MatchFunctionError> {
        if evaluated.elements.len() != self.states.len() {
            return Err(MatchFunctionError::Malformed);
        }
        let messages = evaluated.elements.iter().map(|e| EvaluationElement::<Suite>::deserialize(e)).collect::<Result<Vec<_>, _>>().map_err(|_| MatchFunctionError::Malformed)?;
        let proof = Proof::<Suite>::deserialize(&evaluated.proof).map_err(|_| MatchFunctionError::Malformed)?;
        let public_key = <Suite as Group>::deserialize_elem(public_key).map_err(|_| MatchFunctionError::Malformed)?;
        let inputs: Vec<&[u8]> = self.keys.iter().map(MatchKey::as_bytes).collect();
        let outputs = VoprfClient::batch_finalize(&inputs, &self.states, &messages, &proof, public_key).map_err(|_| MatchFunctionError::ProofRejected)?;
        let outputs = outputs.map(|o| o.map(|o| MatchOutput(o.to_vec()))).collect::<Result<Vec<_>, _>>().map_err(|_| MatchFunctionError::ProofRejected)?;
        Ok(self.keys.into_iter().zip(outputs).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::case::Sex;
    use crate::domain::matching::{index_keys, query_keys, PersonToMatch};

    fn keys_of(names: &[&str]) -> Vec<MatchKey> {
        let person = PersonToMatch { names: names.iter().map(|n| (*n).to_owned()).collect(), other_names: vec![], birth_year: Some(1985), sex: Some(Sex::Female) };
        index_keys(&person).into_iter().collect()
    }

    #[test]
    fn a_blind_evaluation_gives_the_responders_own_outputs_and_nothing_else_verifies() {
        let responder = MatchFunctionKey::from_seed(&[7; 32]).unwrap();
        let keys = keys_of(&["Grace", "Okafor"]);
        let (asking, blinded) = Asking::blind(keys.clone()).unwrap();
        // The blinded elements are not the keys, nor the same twice.
        let (_, again) = Asking::blind(keys.clone()).unwrap();
        assert_ne!(blinded, again);
        let evaluated = responder.evaluate_blinded(&blinded).unwrap();
        let outputs = asking.finish(&evaluated, &responder.public_key()).unwrap();
        for (key, output) in &outputs {
            assert_eq!(*output, responder.evaluate(key).unwrap());
        }
        // Another gateway's key gives other outputs, and its evaluation does not verify against this one's key.
        let other = MatchFunctionKey::from_seed(&[8; 32]).unwrap();
        assert_ne!(other.evaluate(&keys[0]).unwrap(), responder.evaluate(&keys[0]).unwrap());
        let (asking, blinded) = Asking::blind(keys.clone()).unwrap();
        let forged = other.evaluate_blinded(&blinded).unwrap();
        assert_eq!(asking.finish(&forged, &responder.public_key()).unwrap_err(), MatchFunctionError::ProofRejected);
        // Malformed messages are refused, not evaluated.
        assert_eq!(responder.evaluate_blinded(&[vec![1, 2, 3]]).unwrap_err(), MatchFunctionError::Malformed);
    }

    #[test]
    fn a_seed_gives_the_same_key_and_a_query_agrees_through_the_function() {
        let (a, b) = (MatchFunctionKey::from_seed(&[3; 32]).unwrap(), MatchFunctionKey::from_seed(&[3; 32]).unwrap());
        assert_eq!(a.public_key(), b.public_key());
        let held = PersonToMatch { names: vec!["Grace Okafor".into()], other_names: vec![], birth_year: Some(1985), sex: Some(Sex::Female) };
        let sought = PersonToMatch { names: vec!["Okafor".into(), "Grace".into()], other_names: vec![], birth_year: Some(1986), sex: None };
        let index: std::collections::BTreeSet<MatchOutput> = index_keys(&held).iter().map(|k| a.evaluate(k).unwrap()).collect();
        let query = query_keys(&sought);
        let flat: Vec<MatchKey> = query.values().flatten().cloned().collect();
        let (asking, blinded) = Asking::blind(flat).unwrap();
        let outputs: std::collections::BTreeMap<MatchKey, MatchOutput> = asking.finish(&a.evaluate_blinded(&blinded).unwrap(), &a.public_key()).unwrap().into_iter().collect();
        let by_family = query.into_iter().map(|(family, keys)| (family, keys.iter().map(|k| outputs[k].clone()).collect::<Vec<_>>())).collect();
        assert_eq!(crate::domain::matching::agreement(&by_family, &index), 5);
        assert!(!format!("{a:?}").contains(|c: char| c.is_ascii_digit()), "the key never printed");
    }
}
