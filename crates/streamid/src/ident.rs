//! SQL identifiers from configuration: validated once, emitted double-quoted (FIX-7).
//!
//! Every table, column and sequence name that reaches SQL passes through [`Ident`] or
//! [`QualifiedName`]. The accepted alphabet (`[A-Za-z_][A-Za-z0-9_$]*`, 1–63 bytes) contains
//! no quote of either kind, so quoting cannot be escaped and a name can also sit inside a
//! single-quoted `regclass` literal.

use std::fmt;

use crate::Error;

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`).
const MAX_IDENT_BYTES: usize = 63;

/// One validated identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Ident(String);

impl Ident {
    /// Validates `value` as the configuration field `field`.
    pub(crate) fn parse(field: &'static str, value: &str) -> Result<Ident, Error> {
        let rule = |rule: &str| Error::InvalidConfig {
            field,
            value: value.to_owned(),
            rule: rule.to_owned(),
        };
        if value.is_empty() {
            return Err(rule("an identifier must not be empty"));
        }
        if value.len() > MAX_IDENT_BYTES {
            return Err(rule("an identifier has at most 63 bytes"));
        }
        let mut chars = value.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            return Err(rule(
                "an identifier starts with a letter or '_' and continues with letters, digits, '_' or '$'",
            ));
        }
        Ok(Ident(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    fn has_upper(&self) -> bool {
        self.0.chars().any(|c| c.is_ascii_uppercase())
    }
}

impl fmt::Display for Ident {
    /// The quoted form, ready for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// `name` or `schema.name`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QualifiedName {
    schema: Option<Ident>,
    name: Ident,
}

impl QualifiedName {
    pub(crate) fn parse(field: &'static str, value: &str) -> Result<QualifiedName, Error> {
        match value.split_once('.') {
            None => Ok(QualifiedName {
                schema: None,
                name: Ident::parse(field, value)?,
            }),
            Some((schema, name)) => {
                let whole = |e: Error| match e {
                    Error::InvalidConfig { field, rule, .. } => Error::InvalidConfig {
                        field,
                        value: value.to_owned(),
                        rule: format!("{rule} (in `schema.name`)"),
                    },
                    other => other,
                };
                Ok(QualifiedName {
                    schema: Some(Ident::parse(field, schema).map_err(whole)?),
                    name: Ident::parse(field, name).map_err(whole)?,
                })
            }
        }
    }

    /// The name as the user wrote it (unquoted), for messages.
    pub(crate) fn plain(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.as_str(), self.name.as_str()),
            None => self.name.as_str().to_owned(),
        }
    }

    /// The name without its schema, unquoted.
    pub(crate) fn unqualified(&self) -> &str {
        self.name.as_str()
    }

    /// A single-quoted literal of the quoted name, for `nextval('…')`, `setval('…')` and
    /// `'…'::regclass`.
    pub(crate) fn regclass_literal(&self) -> String {
        format!("'{self}'")
    }

    /// A hint for "does not exist" errors: PostgreSQL folds unquoted names to lower case,
    /// but streamid quotes them, so `Events` and `events` are different objects.
    pub(crate) fn case_hint(&self) -> &'static str {
        let upper = self.name.has_upper() || self.schema.as_ref().is_some_and(Ident::has_upper);
        if upper {
            " (names are case-sensitive as written: an object created with an unquoted \
             name was folded to lower case)"
        } else {
            ""
        }
    }
}

impl fmt::Display for QualifiedName {
    /// The quoted form, ready for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_qualified_names() {
        assert_eq!(
            Ident::parse("f", "stream_ordering").unwrap().to_string(),
            "\"stream_ordering\""
        );
        let q = QualifiedName::parse("f", "public.Events$1").unwrap();
        assert_eq!(q.to_string(), "\"public\".\"Events$1\"");
        assert_eq!(q.regclass_literal(), "'\"public\".\"Events$1\"'");
        assert!(!q.case_hint().is_empty());
        assert_eq!(q.plain(), "public.Events$1");
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a\"b",
            "a'b",
            "a;drop table x",
            "a.b.c",
            ".a",
            "a.",
            "é",
            "a\0b",
            &"x".repeat(64),
        ] {
            let err = QualifiedName::parse("table", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { field: "table", .. }),
                "{bad:?} gave {err}"
            );
        }
        assert!(Ident::parse("column", &"x".repeat(63)).is_ok());
    }
}
