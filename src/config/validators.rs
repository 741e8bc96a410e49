//! Range and shape checks run while deserializing, so each error carries the span of the
//! value it is about.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Host names as a browser sends them in `Host` (no scheme, port or path), lowercased.
pub(super) fn host_names<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    names
        .into_iter()
        .map(|name| {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = name == "*"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            if valid {
                Ok(name)
            } else {
                Err(serde::de::Error::custom(format!(
                    "`{name}` is not a host name (write just the name, e.g. \"cam.example.com\", or \"*\" for any)"
                )))
            }
        })
        .collect()
}

pub(super) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    let addr: SocketAddr = text.parse().map_err(|_| {
        de::Error::invalid_value(
            de::Unexpected::Str(&text),
            &"an address and port like \"0.0.0.0:8080\"",
        )
    })?;
    if addr.port() == 0 {
        return Err(de::Error::invalid_value(
            de::Unexpected::Str(&text),
            &"a port from 1 to 65535",
        ));
    }
    Ok(addr)
}

pub(super) fn in_range<'de, D: Deserializer<'de>>(
    d: D,
    lo: u64,
    hi: u64,
    what: &str,
) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &format!("{what} from {lo} to {hi}").as_str(),
        ))
    }
}

/// For sink configs: a whole number of seconds within `LO..=HI`, checked while parsing so
/// the error points at the value.
pub fn seconds<'de, D: Deserializer<'de>, const LO: u64, const HI: u64>(d: D) -> Result<u64, D::Error> {
    in_range(d, LO, HI, "seconds")
}

/// For sink configs: a count within `LO..=HI`, checked while parsing.
pub fn count<'de, D: Deserializer<'de>, const LO: u64, const HI: u64>(d: D) -> Result<usize, D::Error> {
    in_range(d, LO, HI, "a number").map(|v| v as usize)
}

pub(super) fn dimension<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 16, 8192, "a size in pixels").map(|v| v as u32)
}

pub(super) fn framerate<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = in_range(d, 1, 240, "frames per second")?;
    Ok(NonZeroU32::new(v as u32).map_or(1, NonZeroU32::get))
}

pub(super) fn frame_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, 1024, 256 << 20, "a size in bytes").map(|v| v as usize)
}

pub(super) fn positive_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1, 86_400, "seconds")
}
