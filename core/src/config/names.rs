//! The validators of names and addresses that the file check, the REST API and the Swarm
//! supervisor all use: replica hostnames, backend addresses (`HOST:PORT`) and Swarm instance
//! names.

/// Longest `HOST:PORT` accepted.
pub(crate) const MAX_ADDRESS_LEN: usize = 255;

/// Why a backend address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    /// Empty or longer than [`MAX_ADDRESS_LEN`].
    #[error("address must be HOST:PORT of 1 to {MAX_ADDRESS_LEN} characters")]
    Length,
    /// Not `HOST:PORT` with a port from 1 to 65535.
    #[error("address {0:?} must be HOST:PORT with a port from 1 to 65535 (e.g. \"10.0.0.5:8080\", \"localhost:8001\", \"[::1]:8001\")")]
    Shape(String),
    /// The host is neither an IP literal nor a DNS name.
    #[error("address {0:?}: the host must be an IP address or a DNS name of letters, digits, '-' and '.'")]
    Host(String),
}

/// A Swarm instance name: it starts every service's name (`<instance>-<id>`), so 1 to 40
/// letters, digits and '-', starting with a letter or digit.
pub(crate) fn check_instance(instance: &str) -> Result<(), String> {
    let good = !instance.is_empty()
        && instance.len() <= 40
        && instance.starts_with(|c: char| c.is_ascii_alphanumeric())
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if good {
        Ok(())
    } else {
        Err(format!(
            "supervisor.instance {instance:?} must be 1 to 40 letters, digits and '-' starting \
             with a letter or digit (it names the Swarm services)"
        ))
    }
}

/// A backend address is `HOST:PORT`: HOST an IPv4 literal, a bracketed IPv6 literal or a DNS
/// name (letters, digits, `-`, `.`; labels not starting with `-`), PORT 1–65535. No scheme, no
/// path, nothing a URI or a command line could read otherwise.
pub(crate) fn check_address(address: &str) -> Result<(), AddressError> {
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::Length);
    }
    let shape = || AddressError::Shape(address.to_owned());
    let (host, port) = address.rsplit_once(':').ok_or_else(shape)?;
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !port_ok {
        return Err(shape());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| AddressError::Host(address.to_owned()));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let dns = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && host.bytes().any(|b| b.is_ascii_alphabetic());
    if dns {
        Ok(())
    } else {
        Err(AddressError::Host(address.to_owned()))
    }
}

/// Longest hostname accepted (a DNS label's limit).
pub(crate) const MAX_HOSTNAME_LEN: usize = 63;

/// Why a hostname is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostnameError {
    /// Empty or longer than [`MAX_HOSTNAME_LEN`].
    #[error("hostname {0:?} must be 1 to {MAX_HOSTNAME_LEN} characters long")]
    Length(String),
    /// Leading or trailing space, a leading `-` (a command line could read it as an option), or
    /// nothing but dots and spaces.
    #[error("hostname {0:?} must not start with '-' or a space, end with a space, or be only dots and spaces")]
    Shape(String),
    /// A character outside the allowed set.
    #[error("hostname {name:?} contains {found:?}; allowed are letters, digits, space, '-', '_' and '.'")]
    Character {
        /// The name.
        name: String,
        /// The first character not allowed.
        found: char,
    },
}

/// A hostname is 1–63 characters of ASCII letters, digits, space, `-`, `_` and `.`, with at
/// least one letter, digit or `_`, not starting with `-` or a space, not ending with a space.
pub(crate) fn check_hostname(name: &str) -> Result<(), HostnameError> {
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        // Not echoed whole: the name may be huge.
        let mut shown: String = name.chars().take(20).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        return Err(HostnameError::Length(shown));
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
    {
        return Err(HostnameError::Character {
            name: name.to_owned(),
            found,
        });
    }
    if name.starts_with(['-', ' '])
        || name.ends_with(' ')
        || name.chars().all(|c| matches!(c, '.' | ' '))
    {
        return Err(HostnameError::Shape(name.to_owned()));
    }
    Ok(())
}
