//! James mailets that deliver, send, bounce or rewrite mail: a full James server runs them, a
//! collector has no use for them. Found in `mailetcontainer.xml` files copied from a mail
//! server, they get an error that says what to do instead of a did-you-mean on a typo.

/// What a family of mailets does and what to write instead.
struct Family {
    classes: &'static [&'static str],
    does: &'static str,
    instead: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        classes: &[
            "LocalDelivery",
            "ToRecipientFolder",
            "ToSenderFolder",
            "Sieve",
            "SieveMailet",
            "JMAPFiltering",
            "WithStorageDirective",
            "MailboxAppender",
        ],
        does: "stores mail in mailboxes",
        instead: "<mailet match=\"All\" class=\"Null\"/> (done), or ToRepository to keep a copy as files",
    },
    Family {
        classes: &["RemoteDelivery", "Forward", "Redirect", "Resend", "Relay"],
        does: "sends mail on to other servers",
        instead: "<mailet match=\"All\" class=\"Null\"/> (done): mailetd never relays",
    },
    Family {
        classes: &[
            "Bounce",
            "DSNBounce",
            "NotifySender",
            "NotifyPostmaster",
            "VacationMailet",
            "Vacation",
            "ICALToMail",
        ],
        does: "writes mail back to senders",
        instead: "<mailet match=\"All\" class=\"LogMessage\"/> to log the mail, or Null: mailetd sends no mail",
    },
    Family {
        classes: &[
            "RecipientRewriteTable",
            "RecipientRewriteTableProcessor",
            "AliasMapping",
            "Mapping",
            "UsersRepositoryAliasingForwarding",
        ],
        does: "rewrites recipients from the user and alias tables",
        instead: "PostmasterAlias for postmaster@ (mailetd has no alias tables; the OpenPaaS lookup or the [dav] templates resolve recipients as written)",
    },
];

/// The error text for a mailet class no collector needs, or `None` for any other name.
pub fn explain(short_name: &str, class: &str) -> Option<String> {
    let family = FAMILIES.iter().find(|f| f.classes.contains(&short_name))?;
    Some(format!(
        "mailet {class:?} {} and is not part of a collector: remove it, or map it with {}",
        family.does, family.instead
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_classes_are_explained_and_others_are_not() {
        let text = explain(
            "LocalDelivery",
            "org.apache.james.transport.mailets.LocalDelivery",
        )
        .unwrap();
        assert!(
            text.contains("is not part of a collector: remove it, or map it with"),
            "{text}"
        );
        assert!(explain("VacationMailet", "VacationMailet").is_some());
        assert!(explain("ToProccessor", "ToProccessor").is_none());
    }
}
