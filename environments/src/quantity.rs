//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1e9`), kept as the string the person
//! wrote and converted to integers only to compare them with the platform's caps.
//!
//! The text is what reaches the cluster, so `1Gi` in a policy stays `1Gi` in the rendered
//! ResourceQuota instead of becoming `1073741824`. The grammar is Kubernetes' own: a non-negative
//! decimal number followed by a binary suffix (`Ki` … `Ei`), a decimal suffix (`n`, `u`, `m`, `k`,
//! `M` … `E`) or a decimal exponent (`e3`, `E-2`). Fractions of the target unit round up, as
//! Kubernetes does, so a value is never compared as smaller than the cluster will treat it.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Why a quantity cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a quantity: expected a number with an optional unit, like 500m, 2, 128Mi or 1Gi")]
    Syntax(String),
    #[error("{0:?} is negative: resources cannot be")]
    Negative(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// A resource quantity as written, checked to parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(String);

impl Quantity {
    /// Checks the text's syntax; the value is converted when compared.
    pub fn new(text: impl Into<String>) -> Result<Self, QuantityError> {
        let text = text.into();
        parse(&text, 0)?;
        Ok(Self(text))
    }

    /// A quantity from a literal in this crate's source, whose syntax the tests check.
    pub(crate) fn literal(text: &'static str) -> Self {
        Self(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value in thousandths of a unit: CPU in millicores (`500m` → 500, `2` → 2000).
    pub fn cpu_millis(&self) -> Result<i64, QuantityError> {
        parse(&self.0, 3)
    }

    /// The value in whole units: memory and storage in bytes (`1Ki` → 1024, `1k` → 1000).
    pub fn bytes(&self) -> Result<i64, QuantityError> {
        parse(&self.0, 0)
    }

    /// The value in whole units, for counts such as pods.
    pub fn units(&self) -> Result<i64, QuantityError> {
        parse(&self.0, 0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// YAML writes `cpu: 2` and `cpu: 0.5` as numbers; both are as valid as the quoted forms, so the
/// deserializer takes strings, integers and floats and keeps their text.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 500m, 2, 128Mi or 1Gi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::new(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Quantity::new(v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::new(v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom(QuantityError::Syntax(v.to_string())));
                }
                Quantity::new(v.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses `text` and returns its value times 10^`scale`, rounded up.
fn parse(text: &str, scale: i32) -> Result<i64, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_owned());
    let too_large = || QuantityError::TooLarge(text.to_owned());

    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(syntax());
    }

    let (binary_power, mut decimal_power): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent if exponent.starts_with(['e', 'E']) => {
            let digits = &exponent[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            (0, digits.parse::<i32>().map_err(|_| too_large())?)
        }
        _ => return Err(syntax()),
    };

    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative(text.to_owned()));
    }
    // 38 significant digits still fit a u128; anything longer cannot fit an i64 at any scale a
    // resource uses, and a fraction that long only matters for rounding, which a trailing digit
    // keeps honest.
    if digits.len() > 38 {
        return Err(too_large());
    }
    let mantissa: u128 = digits.parse().map_err(|_| syntax())?;
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    decimal_power = decimal_power.checked_add(scale).and_then(|p| p.checked_sub(fraction_len)).ok_or_else(too_large)?;

    let value = mantissa.checked_mul(1u128 << binary_power).ok_or_else(too_large)?;
    let value = if decimal_power >= 0 {
        10u128.checked_pow(decimal_power.unsigned_abs()).and_then(|p| value.checked_mul(p)).ok_or_else(too_large)?
    } else {
        match 10u128.checked_pow(decimal_power.unsigned_abs()) {
            Some(divisor) => value.div_ceil(divisor),
            // The divisor exceeds any u128, so a positive value is a fraction of one unit.
            None => 1,
        }
    };
    i64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::new(s).unwrap()
    }

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(q("500m").cpu_millis(), Ok(500));
        assert_eq!(q("2").cpu_millis(), Ok(2000));
        assert_eq!(q("0.5").cpu_millis(), Ok(500));
        assert_eq!(q(".25").cpu_millis(), Ok(250));
        assert_eq!(q("1.5k").cpu_millis(), Ok(1_500_000));
        assert_eq!(q("100u").cpu_millis(), Ok(1), "fractions of a millicore round up");
        assert_eq!(q("0").cpu_millis(), Ok(0));
        assert_eq!(q("2e-3").cpu_millis(), Ok(2));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(q("128Mi").bytes(), Ok(128 * 1024 * 1024));
        assert_eq!(q("1Gi").bytes(), Ok(1 << 30));
        assert_eq!(q("1G").bytes(), Ok(1_000_000_000));
        assert_eq!(q("1e9").bytes(), Ok(1_000_000_000));
        assert_eq!(q("1E9").bytes(), Ok(1_000_000_000));
        assert_eq!(q("1e+3").bytes(), Ok(1000));
        assert_eq!(q("12345").bytes(), Ok(12345));
        assert_eq!(q("1.5Gi").bytes(), Ok(3 << 29));
        assert_eq!(q("0.5Ki").bytes(), Ok(512));
        assert_eq!(q("1k").bytes(), Ok(1000));
        assert_eq!(q("500m").bytes(), Ok(1), "half a byte rounds up to one");
        assert_eq!(q("4Ei").bytes(), Ok(4 << 60));
    }

    #[test]
    fn comparisons_across_units() {
        assert!(q("1Gi").bytes().unwrap() > q("1G").bytes().unwrap());
        assert!(q("2048Mi").bytes().unwrap() == q("2Gi").bytes().unwrap());
        assert!(q("1500m").cpu_millis().unwrap() < q("2").cpu_millis().unwrap());
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in ["", "m", "1.2.3", "12X", "1 Gi", "1gi", "1mi", "Gi1", "1e", "1e+", "0x10", "1ee3", "."] {
            assert!(matches!(Quantity::new(bad), Err(QuantityError::Syntax(_))), "{bad:?} should not parse");
        }
        assert!(matches!(Quantity::new("-1"), Err(QuantityError::Negative(_))));
        assert_eq!(q("-0").bytes(), Ok(0));
    }

    #[test]
    fn too_large_values_are_errors_not_overflows() {
        assert!(matches!(Quantity::new("16Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(Quantity::new("1e300"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(q("9223372036854775807").cpu_millis(), Err(QuantityError::TooLarge(_))));
        assert_eq!(q("1e-300").bytes(), Ok(1));
    }

    #[test]
    fn errors_quote_the_text_and_say_what_is_expected() {
        let message = Quantity::new("12X").unwrap_err().to_string();
        assert!(message.contains("\"12X\"") && message.contains("128Mi"), "{message}");
    }

    #[test]
    fn yaml_numbers_and_strings_keep_their_text() {
        let parse = |text| crate::yaml::parse::<Vec<Quantity>>(text, crate::yaml::Origin::Repository);
        let parsed = parse("[2, 0.5, \"500m\", 128Mi, 1e9]").unwrap().unwrap();
        let texts: Vec<&str> = parsed.iter().map(Quantity::as_str).collect();
        assert_eq!(texts, ["2", "0.5", "500m", "128Mi", "1000000000"]);
        assert_eq!(serde_json::to_string(&parsed[3]).unwrap(), "\"128Mi\"");
        let bad = parse("[lots]").unwrap_err();
        assert!(bad.message.contains("\"lots\" is not a quantity"), "{bad:?}");
    }
}
