//! `map[int]X` as JSON objects with decimal-string keys.
//!
//! Keys are parsed like Go's `strconv.ParseInt(key, 10, 64)` (an optional sign and leading
//! zeros are accepted; anything else is an error). Duplicate keys: the last one wins, as in
//! Go. Output is sorted numerically (`BTreeMap` order); Go sorts the key *strings*, which
//! differs only in order (`"10"` before `"2"`), never in content.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn write_map<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
where
    K: Display,
    V: Serialize,
    S: Serializer,
{
    let mut out = serializer.serialize_map(Some(map.len()))?;
    for (k, v) in map {
        out.serialize_entry(&k.to_string(), v)?;
    }
    out.end()
}

struct IntMapVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for IntMapVisitor<K, V>
where
    K: FromStr + Ord,
    V: Deserialize<'de>,
{
    type Value = Option<BTreeMap<K, V>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or an object with decimal integer keys")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = K::from_str(&key)
                .map_err(|_| de::Error::custom("map key is not a decimal integer"))?;
            let value = access.next_value::<V>()?;
            map.insert(key, value);
        }
        Ok(Some(map))
    }
}

fn read_map<'de, K, V, D>(deserializer: D) -> Result<Option<BTreeMap<K, V>>, D::Error>
where
    K: FromStr + Ord,
    V: Deserialize<'de>,
    D: Deserializer<'de>,
{
    deserializer.deserialize_option(IntMapVisitor(PhantomData))
}

/// `BTreeMap<K, V>` ⇄ `{"1": v, ...}`; `null` reads as an empty map. Pair with
/// `skip_serializing_if = "BTreeMap::is_empty"` for Go's `omitempty`.
pub mod int_map {
    use super::*;

    /// Writes an object with decimal-string keys in numeric order.
    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Display,
        V: Serialize,
        S: Serializer,
    {
        write_map(map, serializer)
    }

    /// Reads an object with integer keys (`null` = empty).
    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: FromStr + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(read_map(deserializer)?.unwrap_or_default())
    }
}

/// `Option<BTreeMap<K, V>>` ⇄ `null` or `{"1": v, ...}` (a Go map that may be nil).
pub mod opt_int_map {
    use super::*;

    /// Writes `null` or an object with decimal-string keys in numeric order.
    pub fn serialize<K, V, S>(
        map: &Option<BTreeMap<K, V>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error>
    where
        K: Display,
        V: Serialize,
        S: Serializer,
    {
        match map {
            Some(map) => write_map(map, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads `null` or an object with integer keys.
    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<Option<BTreeMap<K, V>>, D::Error>
    where
        K: FromStr + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        read_map(deserializer)
    }
}
