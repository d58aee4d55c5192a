//! Multi-writer stream tokens at the API (spec §11.3–§11.5, §12.5): building them from the
//! generator, their string form through the `instance_map` table, and waiting for them.
//!
//! Instance ids never change once assigned, so both directions are cached for the life of
//! the generator.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use streamid_core::{MultiWriterStreamToken, RawToken};

use crate::{Error, MultiWriterIdGenerator, WaitOutcome};

/// Cached `instance_map` lookups.
#[derive(Default)]
pub(crate) struct InstanceIds {
    by_name: Mutex<HashMap<String, i32>>,
    by_id: Mutex<HashMap<i32, String>>,
}

impl InstanceIds {
    fn remember(&self, name: &str, id: i32) {
        self.by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), id);
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name.to_owned());
    }
}

impl MultiWriterIdGenerator {
    /// The current multi-writer token (spec §11.3): the current token plus every writer
    /// known to be ahead of it (this instance at its *minimal* position), from one snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] on a backwards stream (tokens are for forwards streams).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(generator: streamid::MultiWriterIdGenerator) -> Result<(), streamid::Error> {
    /// let token = generator.token()?;
    /// let text = generator.token_to_string(&token).await?; // e.g. "m56~2.58"
    /// assert_eq!(generator.parse_token(&text).await?, token);
    /// # Ok(())
    /// # }
    /// ```
    pub fn token(&self) -> Result<MultiWriterStreamToken, Error> {
        if self.state.sign() < 0 {
            return Err(Error::InvalidArgument(
                "multi-writer tokens are not available on backwards streams".to_owned(),
            ));
        }
        Ok(MultiWriterStreamToken::from_tracker(&self.state.lock()))
    }

    /// The string form of `token` (`56`, or `m56~2.58~3.59` with ids from `instance_map`,
    /// inserted on first use).
    ///
    /// # Errors
    ///
    /// Database errors of the `instance_map` lookup.
    pub async fn token_to_string(&self, token: &MultiWriterStreamToken) -> Result<String, Error> {
        let mut ids = HashMap::new();
        for name in token.instance_map().keys() {
            ids.insert(name.clone(), self.id_of_instance(name).await?);
        }
        let raw = token.to_raw(|name| ids.get(name).copied())?;
        Ok(raw.to_string())
    }

    /// Parses a token string (spec §11.5: the strict grammar).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] for a malformed string, an unknown instance id or an entry
    /// not ahead of the stream position; database errors of the lookup.
    pub async fn parse_token(&self, text: &str) -> Result<MultiWriterStreamToken, Error> {
        let raw: RawToken = text.parse()?;
        let mut names = HashMap::new();
        for &(id, _) in raw.entries() {
            if let Some(name) = self.name_of_instance_id(id).await? {
                names.insert(id, name);
            }
        }
        Ok(raw.resolve(|id| names.get(&id).cloned())?)
    }

    /// Waits until this process has seen everything `token` covers (`token` is before or
    /// equal to [`token`](Self::token)), or `timeout` expires. A token from the future is
    /// bounded to the largest allocated ID, with an error logged (spec §12.5).
    ///
    /// # Errors
    ///
    /// As [`token`](Self::token); database errors of reading the largest allocated ID.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_for_token(
        &self,
        token: &MultiWriterStreamToken,
        timeout: Duration,
    ) -> Result<WaitOutcome, Error> {
        self.token()?;
        let mut wanted = token.clone();
        if !token.is_before_or_eq(&self.token()?) {
            let max = self.backend.last_allocated().await?;
            if token.max_stream_pos() > max {
                tracing::error!(
                    stream = %self.state.config.stream,
                    max_allocated = max,
                    "token from the future: waiting for the largest allocated ID instead"
                );
                wanted = token.bound_stream_token(max);
            }
        }
        Ok(self
            .wait_until(timeout, |t| {
                wanted.is_before_or_eq(&MultiWriterStreamToken::from_tracker(t))
            })
            .await)
    }

    async fn id_of_instance(&self, name: &str) -> Result<i32, Error> {
        let cached = self
            .state
            .instance_ids
            .by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied();
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self.backend.instance_id(name).await?;
        self.state.instance_ids.remember(name, id);
        Ok(id)
    }

    async fn name_of_instance_id(&self, id: i32) -> Result<Option<String>, Error> {
        let cached = self
            .state
            .instance_ids
            .by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let name = self.backend.instance_name(id).await?;
        if let Some(name) = &name {
            self.state.instance_ids.remember(name, id);
        }
        Ok(name)
    }
}
