//! Canonical JSON: the bytes that get hashed, so they must not depend on map implementation or on
//! the order in which anything was built.
//!
//! [`to_string`] is RFC 8785, the JSON Canonicalization Scheme (JCS): object members sorted by
//! their names' UTF-16 code units, no insignificant whitespace, strings with the minimal escapes,
//! numbers as ECMAScript prints a double. Anyone can reproduce it from the RFC (or with one of its
//! implementations in most languages), which is what an outside verifier needs.
//!
//! [`v1`] is the form record-format-1 chains were hashed in (sorted keys, numbers as serde_json
//! prints them); it is kept only to verify those runs.

use serde_json::Value;

/// The largest integer a hashed document can hold exactly: RFC 8785 prints every number as an
/// IEEE 754 double, so integers beyond 2^53 − 1 would lose their last digits.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// `value` in RFC 8785 canonical form.
pub fn to_string(value: &Value) -> String {
    serde_json_canonicalizer::to_string(value).unwrap_or_else(|err| {
        // A `serde_json::Value` has string keys and finite numbers only, so it always has one.
        unreachable!("a JSON value without an RFC 8785 form: {err}")
    })
}

/// The canonical form of record format 1: sorted keys, no whitespace, numbers as serde_json
/// prints them.
pub fn v1(value: &Value) -> String {
    let mut out = String::new();
    write_v1(value, &mut out);
    out
}

fn write_v1(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_v1(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_v1(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "s"}});
        assert_eq!(
            v1(&v),
            r#"{"a":{"c":"s","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
        assert_eq!(v1(&json!({"k\"": "a\nb"})), r#"{"k\"":"a\nb"}"#);
    }

    /// The examples of RFC 8785 itself: section 3.2.2's sample (its numbers and string escapes)
    /// and section 3.2.3's sorting of member names by UTF-16 code units.
    #[test]
    fn rfc_8785_examples() {
        let sample: Value = serde_json::from_str(
            r#"{
              "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }"#,
        )
        .expect("the RFC's sample parses");
        assert_eq!(
            to_string(&sample),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
             \"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );

        let sorting: Value = serde_json::from_str(
            r#"{
              "\u20ac": "Euro Sign",
              "\r": "Carriage Return",
              "\ufb33": "Hebrew Letter Dalet With Dagesh",
              "1": "One",
              "\ud83d\ude00": "Emoji: Grinning Face",
              "\u0080": "Control",
              "\u00f6": "Latin Small Letter O With Diaeresis"
            }"#,
        )
        .expect("the RFC's sorting sample parses");
        let order = [
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ];
        let canonical = to_string(&sorting);
        let positions: Vec<usize> = order
            .iter()
            .map(|key| {
                let quoted = serde_json::to_string(key).expect("a key");
                canonical.find(&quoted).expect("every key")
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "members sorted by UTF-16 code units (the emoji before U+FB33): {canonical}"
        );
    }

    #[test]
    fn integers_up_to_2_pow_53_are_exact() {
        assert_eq!(to_string(&json!(MAX_SAFE_INTEGER)), "9007199254740991");
        assert_eq!(to_string(&json!({"b": 1.0, "a": -0.0})), r#"{"a":0,"b":1}"#);
    }
}
