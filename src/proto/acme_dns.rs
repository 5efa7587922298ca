//! The acme-dns HTTP API's documents, read as its clients send them: `POST /register`'s
//! optional `allowfrom`, `POST /update`'s `subdomain` and `txt`, and the answers they
//! expect.
//!
//! Its clients are many and loose: older ones send `SubDomain` and `Txt`, acme.sh sends
//! no JSON content type. So keys are matched in any case, the body is read as JSON
//! whatever its declared type, and the values are checked as acme-dns checks them: a
//! subdomain is a UUID (lowercase), a TXT value is the 43 characters of a DNS-01
//! challenge's digest (base64url, no padding). Pure: bytes in, values or the reason to
//! refuse out; routing, the credentials and storing are the HTTP edge's and the writer's.

use ipnet::IpNet;
use serde_json::Value;

/// A DNS-01 challenge's TXT value: base64url of a SHA-256 digest, no padding.
pub const TXT_LEN: usize = 43;

/// Why a request is refused (`400` with `{"error": REASON}`, acme-dns's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcmeDnsError {
    #[error("malformed_json_payload")]
    MalformedJson,
    #[error("bad_subdomain")]
    BadSubdomain,
    #[error("bad_txt")]
    BadTxt,
    #[error("invalid_allowfrom_cidr")]
    BadAllowFrom,
}

/// `POST /update`'s body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtUpdate {
    /// The account's subdomain: a UUID, lowercase.
    pub subdomain: String,
    pub txt: String,
}

/// The value of `key` in `object`, the key matched in any case.
fn field<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|(_, value)| value)
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, AcmeDnsError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(AcmeDnsError::MalformedJson),
    }
}

/// `POST /update`'s body: `{"subdomain": UUID, "txt": VALUE}`, keys in any case.
///
/// # Errors
/// Not a JSON object, a subdomain that is not a UUID, a value that is not a challenge's.
pub fn update(body: &[u8]) -> Result<TxtUpdate, AcmeDnsError> {
    let object = object(body)?;
    let text = |key: &str| field(&object, key).and_then(Value::as_str);
    let subdomain = text("subdomain").ok_or(AcmeDnsError::BadSubdomain)?;
    if !is_uuid(subdomain) {
        return Err(AcmeDnsError::BadSubdomain);
    }
    let txt = text("txt").ok_or(AcmeDnsError::BadTxt)?;
    if txt.len() != TXT_LEN
        || !txt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AcmeDnsError::BadTxt);
    }
    Ok(TxtUpdate {
        subdomain: subdomain.to_ascii_lowercase(),
        txt: txt.to_string(),
    })
}

/// `POST /register`'s body, which may be empty: the networks the account's updates may
/// come from (`allowfrom`; none: from anywhere).
///
/// # Errors
/// A body that is not a JSON object, or an `allowfrom` that is not a list of networks.
pub fn register(body: &[u8]) -> Result<Vec<IpNet>, AcmeDnsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let object = object(body)?;
    let Some(allow) = field(&object, "allowfrom") else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = allow else {
        return Err(AcmeDnsError::BadAllowFrom);
    };
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or(AcmeDnsError::BadAllowFrom)?;
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| AcmeDnsError::BadAllowFrom)
        })
        .collect()
}

/// A UUID in its 8-4-4-4-12 hex form, any case.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8e5700ea-a4bf-41c7-8a77-e990661dcc6a";
    const TOKEN: &str = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";

    #[test]
    fn updates_are_read_as_loose_clients_send_them() {
        let expect = Ok(TxtUpdate {
            subdomain: UUID.to_string(),
            txt: TOKEN.to_string(),
        });
        for body in [
            format!(r#"{{"subdomain": "{UUID}", "txt": "{TOKEN}"}}"#),
            format!(
                r#"{{"SubDomain": "{}", "Txt": "{TOKEN}"}}"#,
                UUID.to_uppercase()
            ),
            format!(r#"{{"SUBDOMAIN":"{UUID}","TXT":"{TOKEN}","extra":1}}"#),
        ] {
            assert_eq!(update(body.as_bytes()), expect, "{body}");
        }
        for (body, error) in [
            ("", AcmeDnsError::MalformedJson),
            ("subdomain=x&txt=y", AcmeDnsError::MalformedJson),
            ("[1, 2]", AcmeDnsError::MalformedJson),
            (r#"{"txt": "x"}"#, AcmeDnsError::BadSubdomain),
            (
                r#"{"subdomain": "not-a-uuid", "txt": "x"}"#,
                AcmeDnsError::BadSubdomain,
            ),
        ] {
            assert_eq!(update(body.as_bytes()), Err(error), "{body}");
        }
        for txt in ["", "short", &format!("{TOKEN}="), &TOKEN.replace('-', "+")] {
            let body = format!(r#"{{"subdomain": "{UUID}", "txt": "{txt}"}}"#);
            assert_eq!(update(body.as_bytes()), Err(AcmeDnsError::BadTxt), "{txt}");
        }
    }

    #[test]
    fn registrations_may_say_where_updates_come_from() {
        assert_eq!(register(b""), Ok(vec![]));
        assert_eq!(register(b" \n"), Ok(vec![]));
        assert_eq!(register(b"{}"), Ok(vec![]));
        assert_eq!(
            register(br#"{"AllowFrom": ["192.0.2.0/24", "2001:db8::1"]}"#),
            Ok(vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ])
        );
        assert_eq!(
            register(br#"{"allowfrom": ["nowhere"]}"#),
            Err(AcmeDnsError::BadAllowFrom)
        );
        assert_eq!(
            register(br#"{"allowfrom": "192.0.2.0/24"}"#),
            Err(AcmeDnsError::BadAllowFrom)
        );
        assert_eq!(register(b"nonsense"), Err(AcmeDnsError::MalformedJson));
    }

    #[test]
    fn uuids() {
        assert!(is_uuid(UUID));
        assert!(is_uuid(&UUID.to_uppercase()));
        assert!(!is_uuid("8e5700ea-a4bf-41c7-8a77"));
        assert!(!is_uuid("8e5700ea-a4bf-41c7-8a77-e990661dcc6g"));
        assert!(!is_uuid("8e5700eaa-4bf-41c7-8a77-e990661dcc6a"));
    }
}
