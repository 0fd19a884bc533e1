//! Cryptography, all from `ring` (and, for JOSE, `josekit`; for matching,
//! `voprf`): nothing hand-rolled.

pub mod at_rest;
pub mod callback_event;
pub mod case_keys;
pub mod case_push;
pub mod end_to_end;
pub mod jose_keys;
pub mod match_function;
pub mod packet;
pub mod receipt;
pub mod signed_json;
#[cfg(test)]
mod test_keys;
pub mod federation_keys;
