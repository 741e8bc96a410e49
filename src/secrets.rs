//! Masking secrets in text the daemon did not write itself: a camera's or ffmpeg's stderr
//! quotes the URL it was given, and `rtsp://camuser:hunter2@cam/stream` or
//! `...?key=abc` would otherwise reach the log, `/api/status` and anything that shows them.
//! Masking is by shape and by name, so it errs on the side of hiding: `key: 3` is masked
//! too.

/// Names whose values are secrets, as a whole name or as its last part (`access_token`,
/// `stream-key`, `clientSecret`).
const SECRET_NAMES: [&str; 24] = [
    "password",
    "passwords",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "keys",
    "apikey",
    "privatekey",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "sig",
    "signature",
    "bearer",
    "cookie",
    "jwt",
    // SRT's stream id often carries a publishing key (`streamid=#!::r=live,...`).
    "streamid",
];

/// `text` with URL credentials (`scheme://user:password@`) and named secrets (`password=x`,
/// `"token": "x"`, `--key x`, `Authorization: Bearer x`, ...) replaced by `***`.
pub fn mask(text: &str) -> String {
    mask_named(&mask_userinfo(text))
}

/// `text` with each of `literals` (a configured URL, a stream key) replaced by what may be
/// shown in its place, then masked as [`mask`] does.
pub fn mask_with(text: &str, literals: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (secret, shown) in literals {
        if !secret.is_empty() {
            text = text.replace(secret.as_str(), shown);
        }
    }
    mask(&text)
}

/// `scheme://user:password@host` → `scheme://***@host`, also without a scheme (`//u:p@h`),
/// with JSON-escaped slashes (`rtsp:\/\/u:p@h`), and with `#`, `?` or `/` inside the
/// password. Where a path holds an `@` too, this may hide more than the credentials, never
/// less.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, mark)) = next_authority(rest) {
        let (before, after) = rest.split_at(at + mark);
        out.push_str(before);
        // The URL ends at whitespace or a quote.
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
            .unwrap_or(after.len());
        let url = &after[..end];
        let userinfo_end = url.rfind('@').filter(|&at| {
            // `host/path@x` is a path; `user:pass@host` (even `user:p/ss@host`) is not.
            let before_at = &url[..at];
            before_at.contains(':') || !before_at.contains(['/', '\\'])
        });
        match userinfo_end {
            Some(at) => {
                out.push_str("***");
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next URL authority starts in `text`: the offset of its `//` (or `\/\/`) and
/// that mark's length.
fn next_authority(text: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while from < text.len() {
        let plain = text[from..].find("//").map(|i| (from + i, 2));
        let escaped = text[from..].find("\\/\\/").map(|i| (from + i, 4));
        let (at, mark) = match (plain, escaped) {
            (Some(p), Some(e)) => {
                if e.0 < p.0 {
                    e
                } else {
                    p
                }
            }
            (Some(found), None) | (None, Some(found)) => found,
            (None, None) => return None,
        };
        // After a scheme's colon, or where a word starts: not `a//b` inside a path.
        let before = text[..at].chars().next_back();
        if before.is_none_or(|c| c == ':' || c.is_whitespace() || "\"'=(<[,".contains(c)) {
            return Some((at, mark));
        }
        from = at + mark;
    }
    None
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `name` (as written) names a secret.
fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| {
        if lower == *secret {
            return true;
        }
        let Some(head) = lower.strip_suffix(secret) else {
            return false;
        };
        // `access_token`, `stream-key`; or `accessToken`, `streamKey` (a capital starts
        // the last part), but not `monkey` or `keyboard`.
        let capital = name[head.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            && name[..head.len()].ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        head.ends_with(['_', '-']) || capital
    })
}

/// Masks the value after each secret name: `name=value`, `name: value`, `"name": "value"`,
/// `--name value`, and for `Authorization`/`Bearer` the credentials after the scheme.
fn mask_named(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let Some(first) = rest.chars().next() else { break };
        let starts_word = is_word(first) && !text[..at].ends_with(is_word);
        if !starts_word {
            out.push(first);
            at += first.len_utf8();
            continue;
        }
        let word_len = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let word = &rest[..word_len];
        out.push_str(word);
        at += word_len;
        let dashed = word.starts_with('-');
        let name = word.trim_start_matches('-');
        if name.is_empty() || !is_secret_name(name) {
            continue;
        }
        if let Some((kept, value)) = secret_value(&text[at..], dashed, name) {
            out.push_str(&text[at..at + kept]);
            if !value.is_empty() {
                out.push_str("***");
            }
            at += kept + value.len();
        }
    }
    out
}

/// After a secret name: how many bytes to keep (separator, quotes, an auth scheme), and the
/// value to hide; `None` when no value follows.
fn secret_value<'a>(after: &'a str, dashed: bool, name: &str) -> Option<(usize, &'a str)> {
    let blank = |s: &str| s.len() - s.trim_start_matches([' ', '\t']).len();
    let mut kept = 0;
    // The closing quote of a JSON or quoted key, escaped or not.
    for quote in ["\\\"", "\"", "'"] {
        if after.starts_with(quote) {
            kept += quote.len();
            break;
        }
    }
    let quoted_key = kept > 0;
    let spaces = blank(&after[kept..]);
    let rest = &after[kept + spaces..];
    let bearer = name.eq_ignore_ascii_case("bearer");
    let colon = rest.starts_with(':');
    if let Some(separator) = ["=>", "=", ":"].iter().find(|s| rest.starts_with(**s)) {
        kept += spaces + separator.len();
        kept += blank(&after[kept..]);
    } else if (dashed || bearer) && spaces > 0 {
        // `--password hunter2`, `Bearer abc`
        kept += spaces;
    } else {
        return None;
    }
    // `Authorization: Basic abc` keeps the scheme.
    if name.to_ascii_lowercase().ends_with("authorization") {
        let value = &after[kept..];
        let scheme = value.find([' ', '\t']).unwrap_or(0);
        if scheme > 0 && value[..scheme].chars().all(|c| c.is_ascii_alphabetic()) {
            kept += scheme;
            kept += blank(&after[kept..]);
        }
    }
    let value = &after[kept..];
    // A quoted value, escaped quotes and all: `"a\"b"`, `\"x\"`, `'a\'b'`.
    for (open, close) in [("\\\"", "\\\""), ("\"", "\""), ("'", "'")] {
        if let Some(inner) = value.strip_prefix(open) {
            return Some((kept + open.len(), &inner[..quoted_len(inner, close)]));
        }
    }
    // An array or object: up to its closing bracket.
    if let Some(close) = match value.chars().next() {
        Some('[') => Some(']'),
        Some('{') => Some('}'),
        _ => None,
    } {
        let len = value.find(close).map_or(value.len(), |i| i + 1);
        return Some((kept, &value[..len]));
    }
    // `name: value` may be several words: the rest of the line (a JSON value ends at its
    // comma or brace).
    let len = if colon && !quoted_key {
        value.find(['\n', '\r']).unwrap_or(value.len())
    } else if name.to_ascii_lowercase().ends_with("streamid") {
        // SRT's access control syntax has commas and colons of its own: up to the next
        // URL parameter.
        value
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\''))
            .unwrap_or(value.len())
    } else {
        value
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | '}' | ')' | ']'))
            .unwrap_or(value.len())
    };
    Some((kept, &value[..len]))
}

/// How long a quoted value is, up to (not including) its unescaped `close`.
fn quoted_len(inner: &str, close: &str) -> usize {
    let mut at = 0;
    while at < inner.len() {
        let rest = &inner[at..];
        if rest.starts_with(close) {
            return at;
        }
        let step = if rest.starts_with('\\') { 2 } else { 1 };
        at += rest.chars().take(step).map(char::len_utf8).sum::<usize>();
    }
    inner.len()
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn credentials_and_keys_are_masked() {
        assert_eq!(
            mask("[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://camuser:hunter2@10.0.0.5:554/stream1"),
            "[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://***@10.0.0.5:554/stream1"
        );
        assert_eq!(mask("http://user@host/x"), "http://***@host/x");
        assert_eq!(
            mask("rtmp://a.example/live/x?key=abc123&foo=bar"),
            "rtmp://a.example/live/x?key=***&foo=bar"
        );
        assert_eq!(mask("--password=hunter2 --verbose"), "--password=*** --verbose");
        assert_eq!(mask("Token=xyz; other"), "Token=***; other");
        assert_eq!(
            mask("monkey=1 keyboard=2"),
            "monkey=1 keyboard=2",
            "whole names only"
        );
        assert_eq!(mask("nothing here: café"), "nothing here: café");
        for (said, shown) in [
            ("access_token=abc&x=1", "access_token=***&x=1"),
            ("refresh_token=abc", "refresh_token=***"),
            ("client_secret=abc", "client_secret=***"),
            ("secret_key=abc private_key=def", "secret_key=*** private_key=***"),
            ("?sig=abc&signature=def", "?sig=***&signature=***"),
            ("passphrase=abc", "passphrase=***"),
            ("streamKey=abc accessToken=def", "streamKey=*** accessToken=***"),
            ("password=\"two words\" next", "password=\"***\" next"),
            (
                "{\"password\": \"hunter2\", \"user\": \"bob\"}",
                "{\"password\": \"***\", \"user\": \"bob\"}",
            ),
            ("--password hunter2 --verbose", "--password *** --verbose"),
            ("-key abc", "-key ***"),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            (
                "authorization: Basic YWRhOnMzY3JldA==",
                "authorization: Basic ***",
            ),
            ("got Bearer abc123 back", "got Bearer *** back"),
            ("key frame", "key frame"),
            ("keyframes=2 turkey=1", "keyframes=2 turkey=1"),
            ("Authorization: Bearer  TOK", "Authorization: Bearer  ***"),
            ("Authorization: Bearer\tTOK", "Authorization: Bearer\t***"),
            ("authorization:Bearer  TOK", "authorization:Bearer  ***"),
            ("Authorization:  Bearer   TOK", "Authorization:  Bearer   ***"),
            ("{\\\"password\\\":\\\"X\\\"}", "{\\\"password\\\":\\\"***\\\"}"),
            ("password=\\\"X\\\"", "password=\\\"***\\\""),
            ("{\"password\":\"ab\\\"X\"}", "{\"password\":\"***\"}"),
            ("password='a\\'X'", "password='***'"),
            (
                "{\"token\":null,\"password\":[\"X\"]}",
                "{\"token\":***,\"password\":***}",
            ),
            ("password => X", "password => ***"),
            (
                "srt://h:9000?streamid=#!::r=live,m=publish",
                "srt://h:9000?streamid=***",
            ),
            ("private_key=X jwt=Y", "private_key=*** jwt=***"),
            ("privateKey: X", "privateKey: ***"),
            ("passwords=X", "passwords=***"),
            ("password: two X", "password: ***"),
            ("rtsp://admin:X#y@host/s", "rtsp://***@host/s"),
            ("rtsp://admin:p/ss@host/s", "rtsp://***@host/s"),
            ("rtsp://admin:X?y@host/s", "rtsp://***@host/s"),
            ("see //admin:X@host/", "see //***@host/"),
            ("\"rtsp:\\/\\/admin:X@host\\/s\"", "\"rtsp:\\/\\/***@host\\/s\""),
            ("http://host/a@b and a//b@c", "http://host/a@b and a//b@c"),
        ] {
            assert_eq!(mask(said), shown, "{said}");
        }
        assert_eq!(
            mask("http://host/a@b"),
            "http://host/a@b",
            "an @ in the path is not userinfo"
        );
    }
}
