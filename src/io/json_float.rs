//! Floats in JSON files that round-trip when they are not finite. JSON has no NaN or infinity
//! and serde_json writes them as `null`, which then fails to read back as a number: a run whose
//! loss went NaN could not be resumed, evaluated or reported. Non-finite values are written as
//! the strings "NaN", "Infinity" and "-Infinity" (which Python's `float()` also reads), and
//! readers accept those, plain numbers, and the `null` of files written before.
//!
//! Use as `#[serde(with = "crate::io::json_float")]` on `f64` fields, and
//! `#[serde(with = "crate::io::json_float::option")]` on `Option<f64>` fields.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Name(String),
}

pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match *value {
        v if v.is_finite() => serializer.serialize_f64(v),
        v if v.is_nan() => serializer.serialize_str("NaN"),
        v if v > 0.0 => serializer.serialize_str("Infinity"),
        _ => serializer.serialize_str("-Infinity"),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    match Option::<Repr>::deserialize(deserializer)? {
        None => Ok(f64::NAN),
        Some(Repr::Number(v)) => Ok(v),
        Some(Repr::Name(name)) => match name.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\", got {other:?}"
            ))),
        },
    }
}

/// The same for `Option<f64>`: `None` is a missing or null field, as serde writes it.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] f64);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(v)| v))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "super")]
        loss: f64,
        #[serde(
            with = "super::option",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        acc: Option<f64>,
    }

    fn round_trip(loss: f64, acc: Option<f64>) -> (String, Record) {
        let json = serde_json::to_string(&Record { loss, acc }).unwrap();
        let back = serde_json::from_str(&json).unwrap();
        (json, back)
    }

    #[test]
    fn non_finite_values_round_trip() {
        let (json, back) = round_trip(f64::NAN, Some(f64::NEG_INFINITY));
        assert_eq!(json, r#"{"loss":"NaN","acc":"-Infinity"}"#);
        assert!(back.loss.is_nan());
        assert_eq!(back.acc, Some(f64::NEG_INFINITY));
        let (json, back) = round_trip(f64::INFINITY, None);
        assert_eq!(json, r#"{"loss":"Infinity"}"#);
        assert_eq!(back.loss, f64::INFINITY);
        assert_eq!(back.acc, None);
    }

    #[test]
    fn finite_values_stay_numbers_and_old_nulls_read_as_nan() {
        let (json, back) = round_trip(2.5, Some(0.25));
        assert_eq!(json, r#"{"loss":2.5,"acc":0.25}"#);
        assert_eq!((back.loss, back.acc), (2.5, Some(0.25)));
        let old: Record = serde_json::from_str(r#"{"loss":null,"acc":null}"#).unwrap();
        assert!(old.loss.is_nan());
        assert_eq!(old.acc, None);
        assert!(serde_json::from_str::<Record>(r#"{"loss":"lots"}"#).is_err());
    }
}
