//! The list parameters of addresses and domains that several mailets take
//! (`<organizers>`, `<recipients>`), read and validated one way; matched with
//! [`crate::mail::in_address_list`].

use crate::config::ConfigError;
use crate::mail::MailAddress;
use crate::pipeline::api::Parameter;

/// The items of a list parameter: separated by commas or white space.
pub fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads `p` as addresses and domains, lowercased (`mailto:` and a leading `@` dropped);
/// an item that is neither, or an empty list (`when_empty` says what to do instead), is an
/// error at the parameter's line.
pub fn addresses_or_domains(p: &Parameter, when_empty: &str) -> Result<Vec<String>, ConfigError> {
    let mut list = Vec::new();
    for item in items(&p.value) {
        let item = item
            .trim_start_matches("mailto:")
            .trim_start_matches('@')
            .to_ascii_lowercase();
        let valid = match item.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && domain.contains('.') && MailAddress::parse(&item).is_ok()
            }
            None => item.contains('.') && !item.contains(['/', ':', '<', '>']),
        };
        if !valid {
            return Err(p.position.error(format!(
                "{}: {item:?} is neither an address nor a domain",
                p.name
            )));
        }
        list.push(item);
    }
    if list.is_empty() {
        return Err(p
            .position
            .error(format!("{} is empty: {when_empty}", p.name)));
    }
    Ok(list)
}
